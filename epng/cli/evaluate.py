"""`epng evaluate`: run a checkpoint over a split and score it with the official metric."""

from __future__ import annotations

import argparse

from epng.cli.data_args import add_data_arguments
from epng.cli.inference_args import add_inference_arguments, load_predictor
from epng.cli.limit_args import add_limit_arguments, apply_limits

HELP = "run a checkpoint over a benchmark split and score it (predictions, metrics, curve, overlays)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a saved model folder (e.g. a run's best/)")
    add_data_arguments(parser, "evaluate")
    parser.add_argument("--output", required=True, help="folder for the results")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--overlays", type=int, default=8, help="overlay pictures to draw (0 = none)")
    parser.add_argument("--skip-bad", action="store_true", help="skip (and count) bad records instead of stopping")
    add_inference_arguments(parser)
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from epng.engine.evaluator import evaluate_checkpoint

    apply_limits(args)
    result = evaluate_checkpoint(
        load_predictor(args),
        args.data_root,
        args.split,
        args.output,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        n_overlays=args.overlays,
        mode="skip" if args.skip_bad else "strict",
    )
    print(result["table"])
    for name, path in result["files"].items():
        if name != "overlays":
            print(f"{name}: {path}")
    if result["files"]["overlays"]:
        print(f"overlays: {len(result['files']['overlays'])} pictures in {args.output}/overlays")
    return 0
