"""The "flex" route of LPA: ``torch.compile``-d FlexAttention with the distance in a ``score_mod``.

The ``score_mod`` multiplies each score by ``D[q_idx, kv_idx]``, computed from the grid's
cached coordinate tables; forward and backward are fused kernels, so no (N, N) tensor
exists outside them.  ``head_scale`` is folded into the queries (``q_j * head_scale[j]``):
its gradient flows through the ordinary autograd graph and the ``score_mod`` captures only
constants.  FlexAttention cannot drop attention weights inside the kernel (see the
dropout rule in the package docstring).

FlexAttention is compiled once per process (``torch.compile(flex_attention,
dynamic=False)``, created on first use); every new (batch, grid) shape, dtype and grad mode
then compiles once more.  Past dynamo's recompile limit
(``torch._dynamo.config.cache_size_limit``) dynamo would run FlexAttention un-fused, so
raise that limit when many shapes are used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

from epng.model.lpa.geometry import GridGeometry


@lru_cache(maxsize=1)
def _compiled_flex_attention() -> Callable[..., Tensor]:
    """``torch.compile``-d FlexAttention, created on first use (compiling is lazy)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_available(device: torch.device) -> bool:
    """A CUDA device with Triton: where the compiled kernels can run forward and backward."""
    if device.type != "cuda":
        return False
    try:
        from torch.utils._triton import has_triton

        return bool(has_triton())
    except Exception:  # pragma: no cover - very old/odd builds
        return False


def flex_lpa_attention(q: Tensor, k: Tensor, v: Tensor, head_scale: Tensor, geom: GridGeometry) -> Tensor:
    """q, k, v (B, H, N, d) (q not pre-scaled), head_scale (H,) -> (B, H, N, d).

    Raises whatever compiling or running the kernel raises (no compiler, no Triton, ...).
    """
    q = (q * head_scale.view(1, -1, 1, 1)).to(k.dtype)  # (B, H, N, d): head_scale folded in
    return _compiled_flex_attention()(q, k, v, score_mod=geom.score_mod, scale=1.0 / math.sqrt(q.shape[-1]))
