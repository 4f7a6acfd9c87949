"""`epng prepare`: parse and tokenize splits into the data cache ahead of a (cluster) job.

The cache is the one ``PNGDataset`` looks for (:mod:`epng.data.cache`): the same split
files, tokenizer and ``max_length`` find it, so every process of the job maps it instead
of parsing the json files.

    epng prepare --data-root data/png --split train2017 --split val2017 --cache-dir /scratch/epng-cache
"""

from __future__ import annotations

import argparse
import time

from epng.cli.data_args import add_data_arguments

HELP = "build the memory-mapped cache of splits (narratives, word pieces, panoptic index) ahead of a job"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser, "prepare", repeatable=True)
    parser.add_argument("--cache-dir", default=None, metavar="DIR", help="where the cache goes (default: $EPNG_CACHE)")
    parser.add_argument(
        "--preset", default="epng_r101_bert", help="model preset whose tokenizer the job uses (default epng_r101_bert)"
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="word pieces per narrative as the job sets it (default and cap: the preset's text encoder limit)",
    )


def run(args: argparse.Namespace) -> int:
    from epng.data.cache import CACHE_ENV, cache_dir_from, cached_split_tables
    from epng.data.layout import available_splits, split_layout
    from epng.errors import ConfigError
    from epng.model import list_presets, preset_config
    from epng.model.text_encoder import load_tokenizer

    cache_dir = cache_dir_from(args.cache_dir)
    if cache_dir is None:
        raise ConfigError(f"give --cache-dir or set {CACHE_ENV}: the cache needs a folder")
    if args.preset not in list_presets():
        raise ConfigError(f"--preset {args.preset!r}: available presets are {', '.join(list_presets())}")
    splits = args.split or available_splits(args.data_root)
    if not splits:
        raise ConfigError(f"--data-root {args.data_root}: no png_coco_<split>.json under annotations/")
    config = preset_config(args.preset, backbone_weights="none", text_weights="random")
    tokenizer = load_tokenizer(config)
    # the length a job's datasets use: the requested one, capped by the text encoder's
    limit = config.max_text_length if args.max_length is None else min(args.max_length, config.max_text_length)
    print(f"tokenizer of {args.preset} ({config.text_encoder}), max_length {limit}, cache dir {cache_dir}")
    for split in splits:
        start = time.perf_counter()
        tables, status, folder = cached_split_tables(split_layout(args.data_root, split), tokenizer, limit, cache_dir)
        report = tables.load_report
        print(
            f"{split}: {status} {folder} in {time.perf_counter() - start:.1f} s: {report.n_records} records, "
            f"{len(tables.narratives)} narratives with {int(tables.narratives.phrase_offsets[-1])} grounded phrases"
            + (f", {report.n_skipped} bad records (see `epng check-data`)" if report.n_skipped else "")
        )
    return 0
