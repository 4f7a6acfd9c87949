"""The inference options every command that runs a model shares: one set of flags, one vocabulary."""

from __future__ import annotations

import argparse

from epng.device import PRECISIONS


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--precision`` and ``--fast`` (what `InferenceOptions` holds)."""
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


def load_predictor(args: argparse.Namespace, **kwargs):
    """A `Predictor` on ``args.checkpoint`` with the shared inference flags."""
    import torch

    from epng.device import default_device
    from epng.errors import ConfigError
    from epng.inference import Predictor

    try:
        device = torch.device(args.device or default_device())
    except RuntimeError as err:
        raise ConfigError(f"--device {args.device}: {err}") from None
    return Predictor.from_pretrained(
        args.checkpoint, device=str(device), precision=args.precision, fast=args.fast, **kwargs
    )
