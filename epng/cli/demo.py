"""`epng demo`: the whole pipeline on one CPU — synthetic benchmark, training, evaluation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "run the whole pipeline on a CPU: synthetic benchmark, training, evaluation"
DEFAULT_CONFIG = "demo_cpu"  # bundled with the package (epng.configs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="demo_out", help="folder for everything the demo writes")
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"training config: a YAML file or a bundled name (default: {DEFAULT_CONFIG})",
    )
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="training config overrides")


def run(args: argparse.Namespace) -> int:
    from epng.data.layout import available_splits
    from epng.data.synth import generate_benchmark
    from epng.engine.config import config_file, load_config
    from epng.engine.evaluator import evaluate_checkpoint
    from epng.engine.trainer import train
    from epng.inference import Predictor
    from epng.model import load_model

    out = Path(args.output)
    synth_dir, run_dir, eval_dir = out / "synth", out / "run", out / "eval"

    print(f"[1/3] synthetic benchmark -> {synth_dir}")
    stamp = synth_dir / "demo_synth.json"
    wanted = {"train": args.train_images, "val": args.val_images, "seed": args.seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted and available_splits(synth_dir):
        print("      reusing the benchmark written before")
    else:
        summary = generate_benchmark(synth_dir, args.train_images, args.val_images, seed=args.seed, overwrite=True)
        stamp.write_text(json.dumps(wanted))
        print(f"      {summary.images} images in {summary.seconds:.1f} s")

    print(f"[2/3] training {config_file(args.config)} -> {run_dir}")
    cfg = load_config(args.config, [f"data.root={synth_dir}", f"run.seed={args.seed}", *args.overrides])
    result = train(cfg, run_dir)
    print(f"      {result['step']} steps, best val AR {result['best_ar']:.2f}")

    print(f"[3/3] evaluating {run_dir / 'best'} on val2017 -> {eval_dir}")
    model = load_model(run_dir / "best", "cpu")
    evaluation = evaluate_checkpoint(
        Predictor(model, precision=cfg.optim.amp),
        synth_dir,
        cfg.data.val_split,
        eval_dir,
        batch_size=cfg.optim.batch_size,
        num_workers=cfg.data.num_workers,
        n_overlays=8,
    )
    print(evaluation["table"])
    print(f"\nresults: {eval_dir.resolve()}  (metrics.json, recall_curve.png, overlays/, predictions.jsonl)")
    return 0
