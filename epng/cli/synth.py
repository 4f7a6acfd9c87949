"""`epng synth`: write a synthetic PNG benchmark in the real on-disk layout."""

from __future__ import annotations

import argparse
import sys

HELP = "generate a synthetic benchmark (shapes on textured stuff, with narratives) in the real layout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="benchmark root to write (images/, annotations/)")
    parser.add_argument("--train", type=int, default=400, metavar="N", help="images in train2017 (default 400)")
    parser.add_argument("--val", type=int, default=100, metavar="N", help="images in val2017 (default 100)")
    parser.add_argument("--size", type=int, default=256, metavar="PX", help="image side in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace benchmark files already under --out")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")


def run(args: argparse.Namespace) -> int:
    from epng.data.synth import generate_benchmark

    def progress(split: str, done: int, total: int) -> None:
        if done == total or done % 100 == 0:
            print(f"\r{split}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    summary = generate_benchmark(
        args.out,
        args.train,
        args.val,
        args.size,
        args.seed,
        overwrite=args.overwrite,
        progress=None if args.quiet else progress,
    )
    for line in summary.lines():
        print(line)
    return 0
