"""``--data-root DIR`` and ``--split``: where the commands that read a benchmark root find it."""

from __future__ import annotations

import argparse


def add_data_arguments(parser: argparse.ArgumentParser, what: str, repeatable: bool = False) -> None:
    """``--data-root DIR`` (required) and ``--split S``, the split to ``what`` (e.g. "score"):
    one (default val2017) or, with ``repeatable``, any number (default: every split the root has)."""
    parser.add_argument("--data-root", required=True, metavar="DIR", help="benchmark root (images/, annotations/)")
    if repeatable:
        parser.add_argument(
            "--split",
            action="append",
            metavar="S",
            help=f"split to {what}, e.g. val2017 (repeatable; default: every split with a png_coco_<split>.json)",
        )
    else:
        parser.add_argument("--split", default="val2017", metavar="S", help=f"split to {what} (default: %(default)s)")
