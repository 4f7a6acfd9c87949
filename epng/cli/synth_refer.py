"""`epng synth-refer`: write a synthetic RefCOCO-style dataset in the "refer" layout (for `epng res-eval`)."""

from __future__ import annotations

import argparse

HELP = "generate a synthetic referring-expression dataset in the refer layout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="refer root to write (<dataset>/refs(...).p, <dataset>/instances.json, images/train2014/)",
    )
    parser.add_argument(
        "--datasets",
        default="refcoco",
        metavar="LIST",
        help="comma-separated, of refcoco (unc: val/testA/testB), refcoco+ (unc: val/testA/testB), "
        "refcocog (umd: val/test) (default refcoco)",
    )
    parser.add_argument(
        "--images",
        type=int,
        default=12,
        metavar="N",
        help="images, shared by the datasets and dealt to their splits in turn (default 12)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=256,
        metavar="PX",
        help="short image side in pixels; the long side is 4/3 of it (default 256)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace dataset files already under --out")


def run(args: argparse.Namespace) -> int:
    from epng.data.synth.refer import generate_refer

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    summary = generate_refer(args.out, datasets, args.images, args.size, args.seed, overwrite=args.overwrite)
    for line in summary.lines():
        print(line)
    return 0
