"""Locality-Perceptive Attention (LPA), the self-attention of EPNG's communicator.

Multi-head self-attention over the ``h x w`` visual tokens (token index ``y * w + x``)
whose logits are multiplied element-wise, before the softmax, by a learnable per-head
scale of the clipped grid distance::

    D[m, n]  = min(dist((x_m, y_m), (x_n, y_n)), clip)       # "euclidean" (paper) or "squared" (official code)
    R_j      = head_scale[j] * D
    A_j      = softmax((Q_j K_j^T / sqrt(d_k)) * R_j)
    LPA(x)   = concat_j(A_j V_j) W_O

``D`` equals ``clip`` everywhere except in a small neighbourhood of each token (with the
default ``clip = 2``: 0 on the token itself, 1 at its 4-neighbours, sqrt(2) at its
diagonals, or 2 there with ``"squared"``).  The routes use that fact.

Routes, all exact (same function up to floating-point rounding):

* ``"flex"`` (:mod:`.flex`) -- compiled FlexAttention, the distance computed in a
  ``score_mod``; fused forward and backward kernels.
* ``"flash"`` (:mod:`.band_flash`, CPU) -- far keys (all at ``D = clip``) through PyTorch's
  fused CPU flash-attention kernel, the neighbour band explicit, merged by log-sum-exp.
* ``"eager"`` (:mod:`.eager`, any device; the fallback) -- query-chunked attention with
  the neighbour logits rescaled in place; checkpointed per block under autograd.

* ``"banded"`` (:mod:`.banded`, any device) -- plain tensor ops in fixed query blocks, the
  band's logits rescaled by a small factor table; what an exported ONNX graph holds.  It is
  not a route setting: every LPA forward inside a ``with banded_lpa(): ...`` block takes it.

Which one runs (:mod:`.policy`): a process-wide setting (``"auto"`` by default; change it
with :func:`set_lpa_route` or for a block with ``with lpa_route("eager"): ...``), or a
module's own ``backend``.  ``"auto"`` takes ``"flex"`` on CUDA in bf16/fp16, ``"flash"``
on CPU except for a bf16 forward without autograd (``"eager"``), and ``"eager"``
otherwise.  If compiling or running FlexAttention fails, the module warns once and goes
on with the exact route of the device.

Memory: no route holds an (N, N) tensor outside a fused kernel.  Per-grid tables are
O(N * K) (:mod:`.geometry`), built once per (grid, device) and cached per module instance;
the "flash" and "eager" routes hold at most ``max_block_elements`` logits per block of
query rows, the banded formulation at most that many per sample.

Dropout: FlexAttention cannot drop attention weights inside the kernel.  So that every
route computes the same function, ``dropout`` is applied to the concatenated head outputs
(``A V``, before ``W_O``) during training, on all routes -- not to the attention weights.
Both have the same expectation; this is a deliberate deviation from dropping attention
weights.

:mod:`.reference` holds the materialised formula that tests and the benchmark compare to.
"""

from epng.model.lpa.banded import banded_lpa
from epng.model.lpa.geometry import LPA_DISTANCES, GridGeometry, LPADistance, build_grid_geometry
from epng.model.lpa.module import LocalityPerceptiveAttention
from epng.model.lpa.policy import LPA_ROUTES, LPARoute, Route, get_lpa_route, lpa_route, resolve_route, set_lpa_route
from epng.model.lpa.reference import lpa_layer_reference, lpa_reference

__all__ = [
    "LPA_DISTANCES",
    "LPA_ROUTES",
    "GridGeometry",
    "LPADistance",
    "LPARoute",
    "LocalityPerceptiveAttention",
    "Route",
    "banded_lpa",
    "build_grid_geometry",
    "get_lpa_route",
    "lpa_layer_reference",
    "lpa_reference",
    "lpa_route",
    "resolve_route",
    "set_lpa_route",
]
