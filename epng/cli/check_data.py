"""`epng check-data`: check a PNG benchmark root and list exactly what is missing or malformed."""

from __future__ import annotations

import argparse
import time

from epng.cli.data_args import add_data_arguments

HELP = "check the layout and files of a benchmark root (exit 0 when all is well, 1 otherwise)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser, "check", repeatable=True)
    parser.add_argument(
        "--deep",
        action="store_true",
        help="also decode every referenced image and panoptic PNG and check each segment id has pixels",
    )
    parser.add_argument("--max-list", type=int, default=20, metavar="N", help="paths listed per problem (0: all)")


def run(args: argparse.Namespace) -> int:
    from epng.data.check import check_data

    start = time.perf_counter()
    result = check_data(args.data_root, args.split, deep=args.deep)
    print(result.format(max_list=args.max_list))
    print(f"(checked in {time.perf_counter() - start:.1f} s)")
    return 0 if result.ok else 1
