"""The inference options every command that runs a model shares: one set of flags, one vocabulary."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from epng.device import PRECISIONS

if TYPE_CHECKING:
    from epng.inference import InferenceOptions, Predictor


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--precision``, ``--fast``, ``--runtime``, ``--int8``, ``--calibration`` and
    ``--export-dir`` (what `InferenceOptions` holds)."""
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="fp32, bf16, or auto: bf16 where the device computes it natively (default auto)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="fast inference path: folded BatchNorm, channels-last, bf16 weights in bf16, stride-16 head",
    )
    parser.add_argument(
        "--runtime",
        default="torch",
        metavar="NAME",
        help="torch (default), or run the exported ONNX graphs on onnxruntime / openvino (CPU; exported at start)",
    )
    add_int8_argument(
        parser,
        "with --runtime onnxruntime/openvino: post-training int8 of every graph, or of the GRAPHs named "
        "(costs some mask agreement; see BENCHMARKS.md)",
    )
    parser.add_argument(
        "--calibration",
        nargs="+",
        default=(),
        metavar="IMAGE",
        help="--int8: image files to calibrate on (default: synthetic scenes)",
    )
    parser.add_argument(
        "--export-dir",
        default=None,
        metavar="DIR",
        help="with --runtime: keep the exported graphs here and reuse them on the next run",
    )


def add_int8_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--int8 [GRAPH ...]``: absent = no int8; alone = every graph; with names = those graphs."""
    from epng.inference.options import INT8_GRAPHS

    parser.add_argument("--int8", nargs="*", choices=INT8_GRAPHS, default=None, metavar="GRAPH", help=help)


def int8_selection(value: list[str] | None) -> dict[str, Any]:
    """The `InferenceOptions` fields ``int8`` and ``int8_graphs`` of a parsed ``--int8``."""
    from epng.inference.options import INT8_GRAPHS

    return {"int8": value is not None, "int8_graphs": tuple(value or INT8_GRAPHS)}


def inference_options(args: argparse.Namespace) -> InferenceOptions:
    """The `InferenceOptions` of the shared flags."""
    from epng.inference import InferenceOptions

    return InferenceOptions(
        precision=args.precision,
        fast=args.fast,
        runtime=args.runtime,
        **int8_selection(args.int8),
        calibration=tuple(args.calibration),
        export_dir=args.export_dir,
    )


def load_predictor(args: argparse.Namespace, **kwargs: Any) -> Predictor:
    """A `Predictor` on ``args.checkpoint`` with the shared inference flags."""
    import torch

    from epng.device import default_device
    from epng.errors import ConfigError
    from epng.inference import Predictor

    try:
        device = torch.device(args.device or ("cpu" if args.runtime != "torch" else default_device()))
    except RuntimeError as err:
        raise ConfigError(f"--device {args.device}: {err}") from None
    return Predictor.from_pretrained(args.checkpoint, device=str(device), options=inference_options(args), **kwargs)
