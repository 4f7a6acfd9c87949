"""`epng bench`: latency, throughput, stage breakdown, FLOPs, memory and training-step time of
an EPNG preset with random weights; ``--fast`` compares the plain fp32 path with the fast
path side by side; ``--loader DATA_ROOT`` measures the data pipeline instead.

    epng bench --preset epng_r101_bert --image-size 640 --fast --json bench_cpu.json
    epng bench --fast --runtime onnxruntime --runtime openvino --int8 --precision fp32
    epng bench --device cuda --fast --compile --throughput-batch 32 --train --json bench_gpu.json
    epng bench --loader /tmp/synth --image-size 640
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from epng.cli.inference_args import add_int8_argument, int8_selection
from epng.device import PRECISIONS

if TYPE_CHECKING:
    from epng.bench.results import BenchResults

HELP = "measure speed and memory of a preset (random weights); --fast puts the fast path side by side"


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected HxW, got {text!r}")
    return int(parts[0]), int(parts[1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="epng_r101_bert", help="model preset (default: the paper's epng_r101_bert)")
    parser.add_argument("--image-size", type=int, default=640, help="input side S (S x S, default 640)")
    parser.add_argument(
        "--orig-size",
        type=_size,
        default=(480, 640),
        metavar="HxW",
        help="original image size the masks are produced at (default 480x640)",
    )
    parser.add_argument("--batch", type=int, default=1, help="latency batch (default 1)")
    parser.add_argument("--throughput-batch", type=int, default=8, help="throughput batch (default 8; 0 skips)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per case first (default 1)")
    parser.add_argument(
        "--max-case-seconds",
        type=float,
        default=60.0,
        help="stop a group's timed repeats after this many seconds (at least one is kept)",
    )
    parser.add_argument("--phrases", type=int, default=8, help="grounded phrases per narrative (default 8)")
    parser.add_argument("--tokens", type=int, default=96, help="word pieces per narrative (default 96)")
    parser.add_argument("--fast", action="store_true", help="also run the fast path, side by side, with ratios")
    parser.add_argument("--fast-only", action="store_true", help="run only the fast path")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="fast path precision: fp32, bf16, or auto: bf16 where the device computes it natively (default auto)",
    )
    parser.add_argument("--no-channels-last", action="store_true", help="fast path: keep NCHW convolutions")
    parser.add_argument(
        "--no-fold-bn", action="store_true", help="fast path: keep BatchNorms apart from the convolutions"
    )
    parser.add_argument(
        "--text-bf16", action="store_true", help="fast path in bf16: run the text encoder in bf16 too (default: fp32)"
    )
    parser.add_argument("--compile", action="store_true", help="fast path: torch.compile (implies --fast)")
    parser.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode (e.g. max-autotune-no-cudagraphs); default: default mode + freezing",
    )
    parser.add_argument(
        "--compile-scope",
        default="visual,communicator",
        help="comma list of stages to compile: visual, communicator (default both)",
    )
    parser.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="NAME",
        help="also run the exported graphs on this runtime, side by side (repeatable: onnxruntime, openvino)",
    )
    add_int8_argument(parser, "each --runtime also with post-training int8 (of every graph, or of the GRAPHs named)")
    parser.add_argument(
        "--export-dir", default=None, metavar="DIR", help="--runtime: keep (and reuse) the exported graphs here"
    )
    parser.add_argument(
        "--train", action="store_true", help="also time a training step (forward + loss + backward + Adam)"
    )
    parser.add_argument("--train-batch", type=int, default=None, help="training batch (default: --batch)")
    parser.add_argument("--train-repeats", type=int, default=3)
    parser.add_argument("--train-only", action="store_true", help="only the training step (no inference cases)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start no new measurement phase after this many seconds (the rest is listed as skipped)",
    )
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage breakdown")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument("--no-memory", action="store_true", help="skip peak memory (CPU: one subprocess per path)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, metavar="OUT", help="write the results (with machine info) here")
    loader = parser.add_argument_group("data loader (instead of the model)")
    loader.add_argument("--loader", default=None, metavar="DATA_ROOT", help="measure PNGDataset + collate_png images/s")
    loader.add_argument("--loader-split", default=None, help="split (default train2017 if present)")
    loader.add_argument("--loader-workers", default="0,1,2", help="comma list of worker counts (default 0,1,2)")
    loader.add_argument("--loader-batch", type=int, default=8)
    loader.add_argument("--loader-batches", type=int, default=16, help="timed batches per worker count at most")
    loader.add_argument(
        "--cache-dir", default=None, metavar="DIR", help="cache the parsed split here (default: $EPNG_CACHE, if set)"
    )


def run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    import torch

    from epng.errors import ConfigError
    from epng.io.json_file import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.loader:
        from epng.bench.loader_bench import format_loader, run_loader_bench

        try:
            workers = [int(w) for w in args.loader_workers.split(",") if w.strip()]
        except ValueError as err:
            raise ConfigError(f"--loader-workers {args.loader_workers!r}: expected a comma list of integers") from err
        results = run_loader_bench(
            args.loader,
            split=args.loader_split,
            preset=args.preset,
            image_size=args.image_size,
            batch_size=args.loader_batch,
            workers=workers,
            max_batches=args.loader_batches,
            max_seconds=args.max_case_seconds,
            cache_dir=args.cache_dir,
        )
        print(format_loader(results))
    else:
        from epng.bench.config import ModelBenchConfig
        from epng.bench.model_bench import run_model_bench
        from epng.bench.report import format_results
        from epng.inference import COMPILE_SCOPES
        from epng.inference.runtimes import check_runtime
        from epng.model import list_presets

        if args.preset not in list_presets():
            raise ConfigError(f"--preset {args.preset!r}: available presets are {', '.join(list_presets())}")
        scopes = tuple(s.strip() for s in args.compile_scope.split(",") if s.strip())
        if any(s not in COMPILE_SCOPES for s in scopes):
            raise ConfigError(f"--compile-scope {args.compile_scope!r}: choose among {', '.join(COMPILE_SCOPES)}")
        for name in ("batch", "repeats"):
            if getattr(args, name) < 1:
                raise ConfigError(f"--{name} must be >= 1")
        if args.image_size < 32 or args.image_size % 32:
            raise ConfigError("--image-size must be a positive multiple of 32")
        if args.int8 is not None and not args.runtime:
            raise ConfigError("--int8 needs --runtime onnxruntime and/or --runtime openvino")
        for runtime in args.runtime:
            check_runtime(runtime)
            if runtime == "torch":
                raise ConfigError("--runtime torch is the plain/fast paths: name onnxruntime or openvino")
        same_name = {f.name: getattr(args, f.name) for f in fields(ModelBenchConfig) if hasattr(args, f.name)}
        cfg = ModelBenchConfig(
            **{
                **same_name,
                "orig_size": tuple(args.orig_size),
                "fast": args.fast or args.compile,
                "channels_last": not args.no_channels_last,
                "fold_bn": not args.no_fold_bn,
                "compile_scopes": scopes,
                "runtimes": tuple(dict.fromkeys(args.runtime)),
                **int8_selection(args.int8),
                "stages": not args.no_stages,
                "flops": not args.no_flops,
                "memory": not args.no_memory,
                "deadline_seconds": args.deadline,
            }
        )

        def save(partial: BenchResults) -> None:  # after every phase: a run cut short keeps what it measured
            if args.json:
                write_json(args.json, {**partial.to_dict(), "partial": True}, default=str)

        bench = run_model_bench(cfg, on_progress=save)
        print(format_results(bench))
        results = bench.to_dict()
    if args.json:
        write_json(args.json, results, default=str)  # machine info may hold paths and the like
        print(f"\nresults: {args.json}")
    return 0
