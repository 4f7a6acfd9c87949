"""What the machine can do, in one place: CPU feature flags, native bf16, the precision vocabulary.

Precision is one option with one vocabulary everywhere (inference, evaluation, the
benchmark): ``"fp32"`` computes in float32; ``"bf16"`` runs the heavy stages in bfloat16;
``"auto"`` means bf16 exactly where the device computes it natively -- CUDA with
``torch.cuda.is_bf16_supported()``, or a CPU with AVX512-BF16 or AMX-BF16 (elsewhere
oneDNN emulates bf16, which is slower than fp32) -- and fp32 otherwise.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import torch

from epng.errors import ConfigError

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

# the flags a benchmark prints beside its figures: they decide which fast path pays
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "avx_vnni")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """Feature flags of the first processor in /proc/cpuinfo (empty where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def isa_summary() -> list[str]:
    """The vector-ISA flags of this CPU that matter for the fast paths, in a fixed order."""
    flags = cpu_flags()
    return [f for f in ISA_FLAGS if f in flags]


def bf16_supported(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively (so that bf16 is worth using there)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype:
    """``"auto"`` | ``"fp32"`` | ``"bf16"`` -> ``torch.bfloat16`` or ``torch.float32`` on ``device``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if bf16_supported(device) else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast(precision: str, device: torch.device | str) -> AbstractContextManager[None]:
    """bf16 autocast where ``precision`` resolves to bf16 on ``device``, else a no-op context."""
    device = torch.device(device)
    if resolve_precision(precision, device) == torch.bfloat16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
