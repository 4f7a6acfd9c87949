"""`epng res-eval`: zero-shot referring expression segmentation (RefCOCO / RefCOCO+ / RefCOCOg)."""

from __future__ import annotations

import argparse

from epng.cli.inference_args import add_inference_arguments, load_predictor
from epng.cli.limit_args import add_limit_arguments, apply_limits
from epng.data.options import RESIZE_MODES

HELP = "score a checkpoint zero-shot on RefCOCO / RefCOCO+ / RefCOCOg (referring expressions)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="EPNG checkpoint (a save_pretrained folder)")
    parser.add_argument(
        "--refer-root",
        required=True,
        metavar="DIR",
        help="folder holding <dataset>/refs(<split_by>).p and <dataset>/instances.json",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        choices=("refcoco", "refcoco+", "refcocog"),
        help="dataset to evaluate (default refcoco)",
    )
    parser.add_argument(
        "--split-by",
        default=None,
        metavar="NAME",
        help="refs file variant (default: unc for refcoco/refcoco+, umd for refcocog)",
    )
    parser.add_argument(
        "--split",
        default=None,
        metavar="S",
        help="split, e.g. val, testA, testB (refcoco, refcoco+) or val, test (refcocog); "
        "default testA (test for refcocog)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="evaluate the paper's five pairs (refcoco testA/testB, refcoco+ testA/testB, refcocog "
        "test) that exist under --refer-root; missing ones are reported",
    )
    parser.add_argument(
        "--image-dir",
        default=None,
        metavar="DIR",
        help="COCO train2014 images (default: <refer-root>/images/train2014)",
    )
    parser.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="write metrics.json, predictions.jsonl and overlays per pair, and res_summary.json",
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="expressions per batch (default 8)")
    parser.add_argument(
        "--overlays", type=int, default=0, metavar="N", help="save N overlay PNGs per pair (needs --output; default 0)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=None,
        metavar="PX",
        help="input size S or H W (default: the checkpoint config's image_size, else 640)",
    )
    parser.add_argument(
        "--resize",
        default=None,
        choices=RESIZE_MODES,
        help="resize mode (default: the checkpoint config's, else square)",
    )
    add_inference_arguments(parser)
    add_limit_arguments(parser)
    parser.add_argument("--num-workers", type=int, default=2, metavar="N", help="data loader workers (default 2)")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave bad refs/images out and count them instead of stopping at the first one",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from epng.data.refer_layout import DEFAULT_SPLIT_BY, STANDARD_PAIRS, resolve_names
    from epng.engine.res_eval import RESOptions, evaluate_pairs, format_res_table
    from epng.errors import ConfigError

    apply_limits(args)
    root = Path(args.refer_root)
    if not root.is_dir():
        raise ConfigError(f"--refer-root {root}: not a directory")
    if args.all:
        if args.dataset or args.split or args.split_by:
            raise ConfigError("--all evaluates the five standard pairs; drop --dataset/--split/--split-by")
        pairs = list(STANDARD_PAIRS)
    else:
        dataset = args.dataset or "refcoco"
        split = args.split or ("test" if dataset == "refcocog" else "testA")
        resolve_names(dataset, args.split_by or DEFAULT_SPLIT_BY[dataset], split)
        pairs = [(dataset, split)]
    if args.image_size is not None and len(args.image_size) not in (1, 2):
        raise ConfigError(f"--image-size takes S or H W, got {args.image_size}")
    for flag, ok, rule in (
        ("--batch-size", args.batch_size >= 1, ">= 1"),
        ("--threshold", 0.0 <= args.threshold < 1.0, "in [0, 1)"),
        ("--num-workers", args.num_workers >= 0, ">= 0"),
    ):
        if not ok:
            raise ConfigError(f"{flag} must be {rule}, got {getattr(args, flag[2:].replace('-', '_'))}")
    if args.overlays and not args.output:
        raise ConfigError("--overlays needs --output")
    size = None if args.image_size is None else (args.image_size[0] if len(args.image_size) == 1 else args.image_size)
    options = RESOptions(
        split_by=args.split_by,
        image_dir=args.image_dir,
        image_size=size,
        resize=args.resize,
        batch_size=args.batch_size,
        threshold=args.threshold,
        num_workers=args.num_workers,
        mode="skip" if args.skip_bad else "strict",
        n_overlays=args.overlays,
        skip_missing=args.all,
        progress=not args.quiet,
    )
    predictor = load_predictor(args)
    results, missing = evaluate_pairs(predictor, root, pairs, options, args.output, checkpoint=str(args.checkpoint))
    if results:
        m = results[0].metrics
        print(
            f"zero-shot RES of {args.checkpoint}: input {m['image_size'][0]}x{m['image_size'][1]} "
            f"({m['image_size_from']}), resize {m['resize']} ({m['resize_from']}), threshold {args.threshold}; "
            "values in percent, P@t = share of expressions with IoU >= t"
        )
    print(format_res_table(results, missing))
    if args.output:
        print(f"metrics written to {Path(args.output) / 'res_summary.json'}")
    if not results:
        print("no dataset found under --refer-root")
        return 1
    return 0
