"""Which route an LPA forward takes: a process-wide setting and the rules of ``"auto"``.

The setting is one of :data:`LPA_ROUTES`: ``"auto"`` (default), ``"flex"``, ``"flash"`` or
``"eager"``.  Change it with :func:`set_lpa_route`, or for a block of code with the
context manager :func:`lpa_route` (it restores the previous setting on exit)::

    with lpa_route("eager"):  # e.g. count FLOPs op by op: no fused kernels
        model(...)

A module built with an explicit ``backend`` uses that instead of the setting.  The
setting is a plain module global (like timm's ``set_fused_attn``), shared by all threads.

:func:`resolve_route` turns a setting into the route a forward runs, given the device,
whether the attention needs gradients and its dtype:

* ``"eager"`` -> ``"eager"``;  ``"flash"`` -> ``"flash"`` where the fused CPU flash kernels
  exist, else ``"eager"``;
* ``"flex"`` -> ``"flex"``, except a CPU forward that needs gradients, which takes the
  device's exact route (FlexAttention has no CPU backward);
* ``"auto"``: ``"flex"`` on CUDA in bf16/fp16 (``"eager"`` there without Triton); on CPU
  ``"flash"``, except a bf16 forward without autograd, which takes ``"eager"``; else
  ``"eager"`` (CUDA float32: the fp32 FlexAttention kernel does not use the tensor cores).
  On CPU in bf16 the eager route's matmuls run on the CPU's bf16 units while the flash
  kernel's bf16 path is no faster than its fp32 one.  ``"auto"`` never picks ``"flex"``
  on CPU: compiled there it is slower than ``"eager"`` and compiles C++ first.
* Once a module's flex route has failed, ``"flex"`` resolves as ``"auto"`` without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, get_args

import torch

from epng.errors import ConfigError
from epng.model.lpa.band_flash import flash_available
from epng.model.lpa.flex import flex_available

Route = Literal["flex", "flash", "eager"]  # what a forward runs
LPARoute = Literal["auto", Route]  # the setting
LPA_ROUTES: tuple[str, ...] = get_args(LPARoute)

_route: LPARoute = "auto"


def check_route(name: str) -> None:
    """ConfigError unless ``name`` is one of :data:`LPA_ROUTES`."""
    if name not in LPA_ROUTES:
        raise ConfigError(f"LPA: route must be one of {LPA_ROUTES}, got {name!r}")


def get_lpa_route() -> LPARoute:
    """The process-wide route setting."""
    return _route


def set_lpa_route(name: LPARoute) -> None:
    """Set the process-wide route setting (one of :data:`LPA_ROUTES`)."""
    global _route
    check_route(name)
    _route = name


@contextmanager
def lpa_route(name: LPARoute) -> Iterator[None]:
    """Use route setting ``name`` inside the ``with`` block; the previous one after it."""
    previous = get_lpa_route()
    set_lpa_route(name)
    try:
        yield
    finally:
        set_lpa_route(previous)


def resolve_route(
    setting: LPARoute,
    device: torch.device,
    needs_grad: bool = False,
    dtype: torch.dtype = torch.float32,
    *,
    flex_failed: bool = False,
) -> Route:
    """The :data:`Route` that ``setting`` gives for this forward (rules in the module docstring)."""
    flash = "flash" if flash_available(device) else "eager"
    if setting == "eager":
        return "eager"
    if setting == "flash":
        return flash
    if setting == "flex" and not flex_failed:
        return flash if device.type == "cpu" and needs_grad else "flex"
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and not flex_failed:
        return "flex" if flex_available(device) else "eager"
    if device.type == "cpu" and dtype == torch.bfloat16 and not needs_grad:
        return "eager"
    return flash
