"""Mixed precision: which autocast to use for an ``amp`` setting on a device."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def autocast_for(amp: str, device: torch.device):
    """bf16 autocast where asked for ("bf16") or where the device supports it well ("auto" on CUDA)."""
    use_bf16 = amp == "bf16" or (amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
