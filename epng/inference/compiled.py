"""``torch.compile`` of an inference stage, with a fall-back to the eager module when compiling fails.

Compiling is lazy: the first call of a compiled stage compiles it and is timed
(``first_call_seconds``: compile + one run). If compiling or running fails (no compiler,
an inductor/Triton failure, an unsupported op), the stage warns once and runs its eager
module for good. Without a named ``mode``, inductor freezes the weights
(``options={"freezing": True}``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn


class CompiledStage:
    """An eager callable with an optional compiled twin that falls back to eager on failure."""

    def __init__(self, name: str, eager: Callable, compiled: Callable | None) -> None:
        self.name, self.eager, self.compiled = name, eager, compiled
        self.first_call_seconds: float | None = None
        self.error: str | None = None

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        start = time.perf_counter() if self.first_call_seconds is None else None
        try:
            out = self.compiled(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # no compiler, inductor/Triton failure, unsupported op, ...
            self.error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            warnings.warn(f"torch.compile of the {self.name} failed ({self.error}); running it eagerly", stacklevel=2)
            self.compiled = None
            return self.eager(*args, **kwargs)
        if start is not None:
            if isinstance(out, Tensor) and out.is_cuda:
                torch.cuda.synchronize(out.device)
            self.first_call_seconds = time.perf_counter() - start
        return out


def compiler(mode: str | None) -> Callable[[nn.Module], Callable]:
    """``torch.compile`` with ``mode``, or the default mode with inductor weight freezing."""
    if mode is not None:
        return lambda module: torch.compile(module, mode=mode)
    return lambda module: torch.compile(module, options={"freezing": True})
