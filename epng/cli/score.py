"""`epng score`: the official PNG metrics of a predictions file (JSON Lines of COCO RLEs)."""

from __future__ import annotations

import argparse

from epng.cli.data_args import add_data_arguments
from epng.cli.limit_args import add_limit_arguments, apply_limits

HELP = "score a predictions file (JSON Lines, one COCO RLE per grounded phrase) with the PNG metric"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser, "score against")
    parser.add_argument(
        "--predictions",
        required=True,
        help='JSON Lines, one line per phrase: {"narrative", "image_id", "phrase_index", "segmentation": COCO RLE}',
    )
    parser.add_argument(
        "--out", default=None, help="write the metrics as JSON here (AR in percent, null for an empty subset)"
    )
    parser.add_argument("--curve", default=None, help="save the recall-vs-IoU curves here (.png, .pdf, .svg)")
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from epng.errors import ConfigError
    from epng.metrics.png_metric import format_metrics_table
    from epng.metrics.scorer import evaluate_predictions

    apply_limits(args)
    root = Path(args.data_root)
    if not root.is_dir():
        raise ConfigError(f"--data-root {root}: not a directory")
    evaluator = evaluate_predictions(root, args.split, args.predictions)
    metrics = evaluator.compute()
    print(format_metrics_table(metrics, title=f"PNG metrics: {args.predictions} on {args.split}"))
    if args.out:
        from epng.io.json_file import write_json

        write_json(args.out, metrics)
        print(f"metrics written to {args.out}")
    if args.curve:
        from epng.metrics.plots import plot_recall_curves

        arrays = evaluator.phrase_arrays()
        path = plot_recall_curves(
            arrays["iou"],
            arrays["is_thing"],
            arrays["is_plural"],
            args.curve,
            title=f"PNG recall vs IoU ({args.split})",
        )
        print(f"recall curve written to {path}")
    return 0
