"""Prepare a trained `EPNG` for inference, in place, as `InferenceOptions` ask (the fast path).

Each pass is exact up to float rounding or measured against the plain fp32 path by the
tests: BatchNorm folded into the backbone's convolutions; channels-last backbone and FPN
(the fused stride-16 map then comes out token-major, so the communicator's flatten is
free); in bf16, the backbone + FPN and the communicator's linear layers get bf16 weights
once (no per-call weight casts) and, with ``text_bf16``, the frozen text transformer too;
every LPA layer's grid tables are built for the configured input size ahead of the first
call; on CUDA, cuDNN autotuning is switched on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from epng.inference.fold_bn import fold_conv_bn
from epng.inference.options import InferenceOptions
from epng.model import EPNG


@dataclass
class PreparationReport:
    """What was applied to the model (JSON-friendly via :meth:`to_dict`)."""

    device: str
    dtype: str
    text_dtype: str
    fast: bool
    channels_last: bool = False
    folded_bn: int = 0
    stride16_head: bool = False
    compile_scopes: list[str] = field(default_factory=list)
    compile_mode: str | None = None
    compile_seconds: dict[str, float] = field(default_factory=dict)  # first call (compile + 1 run) per stage
    compile_errors: dict[str, str] = field(default_factory=dict)
    lpa_routes: list[str] = field(default_factory=list)
    runtime: str = "torch"
    int8: bool = False
    int8_graphs: list[str] = field(default_factory=list)  # the exported graphs int8 applies to
    export_seconds: float | None = None  # exported runtimes: export (+ int8) and session loading
    graph_runtimes: dict[str, str] = field(default_factory=dict)  # exported graph -> the runtime running it

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """A one-line description, e.g. ``fast (bf16, channels-last, 104 BN folded, stride-16 head)``
        or ``openvino (int8 + fp32, exported graphs)`` (``int8 (visual) + fp32`` when int8 applies
        to some graphs only)."""
        if self.runtime != "torch":
            others = sorted(g for g, rt in self.graph_runtimes.items() if rt != self.runtime)
            moved = f"; {', '.join(others)} on onnxruntime" if others else ""
            int8 = ""
            if self.int8:
                every = set(self.int8_graphs) >= set(self.graph_runtimes)
                int8 = "int8 + " if every else f"int8 ({', '.join(self.int8_graphs)}) + "
            return f"{self.runtime} ({int8}{self.dtype}, exported graphs{moved})"
        if not self.fast:
            return f"plain {self.dtype} eager"
        parts = [
            self.dtype,
            "bf16 text" if self.text_dtype == "bf16" else None,
            "channels-last" if self.channels_last else None,
            f"{self.folded_bn} BN folded" if self.folded_bn else None,
            "stride-16 head" if self.stride16_head else None,
            f"compile({'+'.join(self.compile_scopes)})" if self.compile_scopes else None,
        ]
        return "fast (" + ", ".join(p for p in parts if p) + ")"


def prepare_model(
    model: EPNG, options: InferenceOptions, dtype: torch.dtype, device: torch.device
) -> PreparationReport:
    """Apply the fast-path passes of ``options`` to ``model`` (in eval mode, on ``device``) in place."""
    bf16 = dtype == torch.bfloat16
    text_bf16 = bf16 and options.text_bf16
    report = PreparationReport(
        device=str(device),
        dtype="bf16" if bf16 else "fp32",
        text_dtype="bf16" if text_bf16 else "fp32",
        fast=options.fast,
    )
    if not options.fast:
        return report
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    visual = model.visual_encoder
    if options.fold_bn:
        visual.body, report.folded_bn = fold_conv_bn(visual.body)
    if options.channels_last:
        visual.to(memory_format=torch.channels_last)
        report.channels_last = True
    if bf16:
        visual.to(torch.bfloat16)
        for module in model.communicator.modules():
            if isinstance(module, nn.Linear):
                module.to(torch.bfloat16)
        if text_bf16:  # the frozen transformer (its cache keeps fp32 copies of bf16 results)
            model.text_encoder.model.to(torch.bfloat16)
    report.stride16_head = model.head.upsampler is None
    side = model.config.image_size // 16
    for lpa in model.communicator.lpa_layers():
        lpa.geometry((side, side), device)
    return report
