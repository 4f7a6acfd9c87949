"""Locality-Perceptive Attention: exactness vs the materialised formula, geometry, routes.

Tolerances: the module run in float64 must match the float64 reference to 1e-10 (same
math, different order of operations); the module run in float32 must match the float64
reference to 1e-5 * max(1, max|reference|) for values and every gradient.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

from epng.errors import ConfigError
from epng.model.config import LPA_DISTANCES as config_distances
from epng.model.lpa import (
    LPA_DISTANCES,
    LPA_ROUTES,
    LocalityPerceptiveAttention,
    band_flash,
    build_grid_geometry,
    eager,
    flex,
    geometry,
    get_lpa_route,
    lpa_layer_reference,
    lpa_reference,
    lpa_route,
    policy,
    resolve_route,
    set_lpa_route,
)

HEAD_SCALES = [0.5, 1.0, 1.7, -0.4]


def numpy_distance(h: int, w: int, distance: str, clip: float) -> np.ndarray:
    """Brute force over all token pairs, straight from the definition."""
    n = h * w
    out = np.empty((n, n))
    for m in range(n):
        ym, xm = divmod(m, w)
        for k in range(n):
            yk, xk = divmod(k, w)
            d2 = (xm - xk) ** 2 + (ym - yk) ** 2
            out[m, k] = min(math.sqrt(d2) if distance == "euclidean" else d2, clip)
    return out


def make_module(dist: str, c: int = 32, heads: int = 4, **kw) -> LocalityPerceptiveAttention:
    torch.manual_seed(0)
    m = LocalityPerceptiveAttention(c, heads, distance=dist, **kw)
    with torch.no_grad():
        m.head_scale.copy_(torch.tensor(HEAD_SCALES[:heads]))
        for lin in (m.q_proj, m.k_proj, m.v_proj, m.out_proj):
            lin.bias.normal_(0.0, 0.1)
    return m


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def run_with_grads(m: LocalityPerceptiveAttention, x: torch.Tensor, grid, g: torch.Tensor, ref: bool = False):
    x = x.detach().clone().requires_grad_(True)
    out = lpa_layer_reference(m, x, grid) if ref else m(x, grid)
    params = [x] + [p for _, p in sorted(m.named_parameters())]
    grads = torch.autograd.grad(out, params, g.to(out.dtype))
    names = ["x"] + [n for n, _ in sorted(m.named_parameters())]
    return out.detach(), dict(zip(names, grads))


# ---------------------------------------------------------------------- geometry


@pytest.mark.parametrize("grid", [(5, 7), (1, 1), (2, 3), (6, 4), (1, 5)])
@pytest.mark.parametrize("distance", ["euclidean", "squared"])
@pytest.mark.parametrize("clip", [2.0, 1.5, 3.0])
def test_distance_tables_match_numpy(grid, distance, clip):
    h, w = grid
    n = h * w
    expect = numpy_distance(h, w, distance, clip)
    geom = build_grid_geometry(grid, distance, clip)
    # Eager route's tables: clip everywhere, D = clip * factor at the listed neighbours.
    dense = np.full((n, n), clip)
    idx, fac = geom.nb_index.numpy(), geom.nb_factor.numpy()
    for m in range(n):
        for j in range(idx.shape[1]):  # out-of-grid slots point at m itself with factor 0
            dense[m, idx[m, j]] = clip * fac[m, j]
    np.testing.assert_allclose(dense, expect, rtol=0, atol=1e-12)
    # Flex route's score_mod, evaluated eagerly on all (q_idx, kv_idx) pairs.
    ar = torch.arange(n, dtype=torch.int32)
    zero = torch.zeros((), dtype=torch.int32)
    d = geom.score_mod(torch.ones(n, n), zero, zero, ar[:, None], ar[None, :])
    np.testing.assert_allclose(d.numpy(), expect, rtol=1e-6, atol=1e-6)
    if clip == 2.0:
        assert idx.shape[1] == (9 if distance == "euclidean" else 5)


def test_geometry_cache_reused(monkeypatch):
    m = make_module("euclidean")
    calls = []
    real = geometry.build_grid_geometry
    monkeypatch.setattr(geometry, "build_grid_geometry", lambda *a, **k: calls.append(a) or real(*a, **k))
    x = torch.randn(1, 35, 32)
    with torch.no_grad():
        m(x, (5, 7))
        g1 = m.geometry((5, 7), "cpu")
        m(x, (5, 7))
        m(x.view(1, 35, 32), (7, 5))
        m(x, (5, 7))
    assert m.geometry((5, 7), "cpu") is g1
    g2 = m.geometry((7, 5), "cpu")
    assert g2 is not g1 and g2.grid_size == (7, 5)
    assert len(calls) == 2  # one build per grid size, none per forward
    other = make_module("euclidean")
    assert other.geometry((5, 7), "cpu") is not g1  # per instance, no global cache


# ---------------------------------------------------------------------- exactness


@pytest.mark.parametrize("backend", ["flash", "eager"])
@pytest.mark.parametrize("distance", ["euclidean", "squared"])
@pytest.mark.parametrize("grid,batch,rows", [((5, 7), 2, 4), ((20, 20), 2, 37), ((40, 40), 1, 150)])
def test_values_and_grads_match_reference(backend, distance, grid, batch, rows, monkeypatch):
    h, w = grid
    n = h * w
    # A block budget that makes ~10 query blocks whose size does not divide N.
    block = 4 * batch * n * rows
    seen = []  # logits blocks (elements) the route materialised, forward and backward

    def spy(fn, numel):
        def wrapped(*a):
            seen.append(numel(*a))
            return fn(*a)

        return wrapped

    if backend == "eager":
        monkeypatch.setattr(
            eager, "_attend_block", spy(eager._attend_block, lambda q, kt, *r: q[..., 0].numel() * kt.shape[-1])
        )
    else:
        monkeypatch.setattr(
            band_flash, "rescale_neighbours", spy(band_flash.rescale_neighbours, lambda t, *r: t.numel())
        )
    m64 = make_module(distance, max_block_elements=block, backend=backend).double()
    assert m64.route(torch.device("cpu"), True, torch.float64) == backend
    torch.manual_seed(1)
    x = torch.randn(batch, n, 32, dtype=torch.float64)
    g = torch.randn(batch, n, 32, dtype=torch.float64)
    ref_out, ref_grads = run_with_grads(m64, x, grid, g, ref=True)
    out64, grads64 = run_with_grads(m64, x, grid, g)
    assert len(seen) >= 2 * 3 and max(seen) <= block  # several memory-lean blocks, forward + backward
    if backend == "flash":
        assert min(seen) < 4 * batch * n * n / 4  # band blocks are narrow: far keys went through the kernel
    assert max_err(out64, ref_out) < 1e-10
    for name, gr in ref_grads.items():
        assert max_err(grads64[name], gr) < 1e-10 * max(1.0, gr.abs().max().item()), name

    m32 = make_module(distance, max_block_elements=block, backend=backend)
    out32, grads32 = run_with_grads(m32, x.float(), grid, g)
    assert out32.dtype == torch.float32
    assert max_err(out32, ref_out) < 1e-5 * max(1.0, ref_out.abs().max().item())
    for name, gr in ref_grads.items():
        assert max_err(grads32[name], gr) < 1e-5 * max(1.0, gr.abs().max().item()), name
    assert ref_grads["head_scale"].abs().min() > 1e-6  # the head_scale gradient is really tested


def naive_subtraction_lpa(q, k, v, head_scale, grid, clip=2.0):
    """The unsafe shortcut the module must NOT take: a uniform-R softmax from which the
    neighbourhood's exponentials are subtracted and re-added with their true logits."""
    d = q.shape[-1]
    s = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d)  # (B, H, N, N)
    far = s * (clip * head_scale.view(-1, 1, 1))
    mx = far.amax(-1, keepdim=True)
    e_far = torch.exp(far - mx)
    geom = build_grid_geometry(grid, "euclidean", clip)
    near = torch.zeros_like(s, dtype=torch.bool)
    near[..., torch.arange(s.shape[-2])[:, None], geom.nb_index] = True
    # shortcut: full sum minus neighbourhood (at far logits) plus neighbourhood (true logits)
    tot = e_far.sum(-1, keepdim=True) - (e_far * near).sum(-1, keepdim=True)
    num = torch.matmul(e_far, v) - torch.matmul(e_far * near, v)
    # only the self entry is handled here (enough to show the cancellation): D = 0 there
    e_self = torch.exp(-mx)
    return (num + e_self * v) / (tot + e_self)


def test_large_self_similarity():
    """q = k with a large norm: the self logit under the 'far' scale dwarfs everything,
    so full-sum-minus-neighbourhood cancels; the module must stay exact."""
    h, w = 6, 6
    m = make_module("euclidean", c=32, heads=4)
    with torch.no_grad():
        m.k_proj.weight.copy_(m.q_proj.weight)
        m.k_proj.bias.copy_(m.q_proj.bias)
        m.q_proj.weight.mul_(6.0)
        m.k_proj.weight.mul_(6.0)
        m.head_scale.copy_(torch.tensor([1.0, 1.5, 0.7, 1.2]))
    torch.manual_seed(3)
    x = torch.randn(1, h * w, 32)
    m64 = make_module("euclidean", c=32, heads=4).double()
    m64.load_state_dict(m.state_dict())
    with torch.no_grad():
        ref = lpa_layer_reference(m64, x.double(), (h, w))
        out = m(x, (h, w))
        # self-similarity really is large: self logit under the far scale ~ 10^2
        q = m.q_proj(x).view(1, -1, 4, 8).transpose(1, 2)
        self_logit = 2.0 * (q * q).sum(-1) / math.sqrt(8)
        assert self_logit.max() > 100
        # the naive shortcut (only self is in its "neighbourhood", clip at 1 so D is
        # 0 on self and 1 elsewhere) fails badly on the very same q, k, v ...
        k = m.k_proj(x).view(1, -1, 4, 8).transpose(1, 2)
        v = m.v_proj(x).view(1, -1, 4, 8).transpose(1, 2)
        exact = lpa_reference(q.double(), k.double(), v.double(), m.head_scale.double(), (h, w), clip=1.0)
        naive = naive_subtraction_lpa(q, k, v, m.head_scale, (h, w), clip=1.0)
        assert not torch.isfinite(naive).all() or max_err(naive, exact) > 1e-2
        # ... while the module is exact for that setting and for the real one.
        m_clip1 = make_module("euclidean", c=32, heads=4, clip=1.0, max_block_elements=4 * 6 * 36)
        m_clip1.load_state_dict(m.state_dict())
        geom = m_clip1.geometry((h, w), "cpu")
        for route in ("eager", "flash"):
            assert max_err(m_clip1.attend(q, k, v, geom, route), exact) < 1e-5 * max(1.0, exact.abs().max().item())
    assert max_err(out, ref) < 1e-5 * max(1.0, ref.abs().max().item())
    m.backend = "eager"
    with torch.no_grad():
        assert max_err(m(x, (h, w)), ref) < 1e-5 * max(1.0, ref.abs().max().item())


# ---------------------------------------------------------------------- routes, dtypes


@pytest.mark.parametrize("backend", ["flash", "eager"])
def test_bf16_autocast_forward_backward(backend):
    grid = (12, 10)
    m = make_module("euclidean", c=64, heads=4, backend=backend, max_block_elements=2 * 4 * 120 * 30)
    torch.manual_seed(4)
    x = torch.randn(2, 120, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, grid)
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert m.head_scale.grad is not None and torch.isfinite(m.head_scale.grad).all()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    x_grad, hs_grad = x.grad.clone(), m.head_scale.grad.clone()
    x.grad = None
    m.zero_grad()
    ref = lpa_layer_reference(m, x, grid)
    ref.square().mean().backward()
    assert max_err(out, ref) < 3e-2 * max(1.0, ref.abs().max().item())
    assert max_err(x_grad, x.grad) < 5e-2 * x.grad.abs().max().item()
    assert max_err(hs_grad, m.head_scale.grad) < 5e-2 * m.head_scale.grad.abs().max().item()


def test_flex_route_semantics(monkeypatch):
    """The flex route (run un-compiled here: same math, scores materialised) matches the reference."""
    monkeypatch.setattr(flex, "_compiled_flex_attention", lambda: flex_attention)
    for distance in ("euclidean", "squared"):
        m = make_module(distance, backend="flex")
        x = torch.randn(2, 35, 32)
        assert m.route(x.device, needs_grad=False) == "flex"
        assert m.route(x.device, needs_grad=True) == "flash"  # no FlexAttention backward on CPU
        with torch.no_grad():
            out = m(x, (5, 7))
            ref = lpa_layer_reference(m, x, (5, 7))
        assert max_err(out, ref) < 1e-5


def test_flex_failure_falls_back_to_eager(monkeypatch):
    def broken():
        def fail(*a, **k):
            raise RuntimeError("no compiler here")

        return fail

    monkeypatch.setattr(flex, "_compiled_flex_attention", broken)
    m = make_module("euclidean", backend="flex")
    x = torch.randn(1, 35, 32)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = m(x, (5, 7))
        out2 = m(x, (5, 7))
    assert sum("FlexAttention route unavailable" in str(w.message) for w in caught) == 1
    assert m.route(x.device) == "flash"
    with torch.no_grad():
        ref = lpa_layer_reference(m, x, (5, 7))
    assert max_err(out, ref) < 1e-5 and torch.equal(out, out2)


def test_bf16_inference_on_cpu_takes_the_eager_route():
    grid = (12, 10)
    m = make_module("euclidean", c=64, heads=4)
    forced = {b: make_module("euclidean", c=64, heads=4, backend=b) for b in ("eager", "flash")}
    for other in forced.values():
        other.load_state_dict(m.state_dict())
    torch.manual_seed(6)
    x = torch.randn(2, 120, 64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, grid)
        outs = {b: f(x, grid) for b, f in forced.items()}
    ref = lpa_layer_reference(m, x, grid)
    assert torch.equal(out, outs["eager"])
    scale = max(1.0, ref.abs().max().item())
    for b, o in outs.items():  # both bf16 routes approximate the formula alike
        assert max_err(o, ref) < 3e-2 * scale, b


def test_routes_on_cpu():
    cpu = torch.device("cpu")
    m = make_module("euclidean")
    assert m.route(cpu) == "flash" and m.route(cpu, True, torch.bfloat16) == "flash"
    # bf16 inference: eager (faster there); fp32 or autograd: flash; a named backend wins
    assert m.route(cpu, False, torch.bfloat16) == "eager"
    assert m.route(cpu, False, torch.float32) == "flash"
    assert make_module("euclidean", backend="flash").route(cpu, False, torch.bfloat16) == "flash"
    assert make_module("euclidean", backend="eager").route(cpu) == "eager"
    assert make_module("euclidean", backend="flex").route(cpu, False) == "flex"
    with pytest.raises(ConfigError):
        LocalityPerceptiveAttention(32, 4, backend="sdpa")


CPU = torch.device("cpu")
# (setting, needs_grad, dtype) -> route on CPU, as the policy's rules state them.
CPU_RULES = [
    ("auto", False, torch.float32, "flash"),
    ("auto", True, torch.float32, "flash"),
    ("auto", False, torch.bfloat16, "eager"),  # bf16 inference: the eager route's bf16 GEMMs
    ("auto", True, torch.bfloat16, "flash"),
    ("auto", False, torch.float16, "flash"),
    ("auto", False, torch.float64, "flash"),
    ("flex", False, torch.float32, "flex"),
    ("flex", True, torch.float32, "flash"),  # no FlexAttention backward on CPU
    ("flex", False, torch.bfloat16, "flex"),
    ("flash", False, torch.bfloat16, "flash"),
    ("flash", True, torch.float32, "flash"),
    ("eager", False, torch.float32, "eager"),
    ("eager", True, torch.bfloat16, "eager"),
]


@pytest.mark.parametrize("setting,needs_grad,dtype,expect", CPU_RULES)
def test_route_resolution_on_cpu(setting, needs_grad, dtype, expect):
    assert resolve_route(setting, CPU, needs_grad, dtype) == expect
    # the module follows the process-wide setting unless it names its own backend
    with lpa_route(setting):
        assert make_module("euclidean").route(CPU, needs_grad, dtype) == expect
    assert make_module("euclidean", backend=setting).route(CPU, needs_grad, dtype) == expect
    # after a flex failure "flex" resolves as "auto" does
    failed = resolve_route("auto", CPU, needs_grad, dtype) if setting == "flex" else expect
    assert resolve_route(setting, CPU, needs_grad, dtype, flex_failed=True) == failed


@pytest.mark.parametrize("triton", [True, False])
def test_route_resolution_on_cuda(triton, monkeypatch):
    """The CUDA rules, without a GPU: only the availability checks are faked."""
    monkeypatch.setattr(policy, "flex_available", lambda device: triton)
    gpu = torch.device("cuda", 0)
    for grad in (False, True):
        for half in (torch.bfloat16, torch.float16):
            assert resolve_route("auto", gpu, grad, half) == ("flex" if triton else "eager")
            assert resolve_route("auto", gpu, grad, half, flex_failed=True) == "eager"
            assert resolve_route("flex", gpu, grad, half) == "flex"
        assert resolve_route("auto", gpu, grad, torch.float32) == "eager"  # the fp32 flex kernel is slow
        assert resolve_route("flex", gpu, grad, torch.float32) == "flex"
        assert resolve_route("flash", gpu, grad, torch.bfloat16) == "eager"  # no CPU kernel on CUDA
        assert resolve_route("eager", gpu, grad, torch.bfloat16) == "eager"


def test_route_setting_forces_and_restores(monkeypatch):
    assert LPA_ROUTES == ("auto", "flex", "flash", "eager")
    assert get_lpa_route() == "auto"
    calls = []  # blocks the eager route ran
    real = eager._attend_block
    monkeypatch.setattr(eager, "_attend_block", lambda *a: calls.append(1) or real(*a))
    m = make_module("euclidean")  # follows the setting
    pinned = make_module("euclidean", backend="flash")  # its own backend wins
    forced = make_module("euclidean", backend="eager")
    x = torch.randn(2, 35, 32)
    with torch.no_grad():
        with lpa_route("eager"):
            assert get_lpa_route() == "eager" and m.route(CPU) == "eager"
            assert pinned.route(CPU) == "flash"
            out = m(x, (5, 7))
            with lpa_route("flex"):  # nested: the inner one wins, then the outer one is back
                assert get_lpa_route() == "flex"
            assert get_lpa_route() == "eager"
        assert calls and get_lpa_route() == "auto" and m.route(CPU) == "flash"
        assert torch.equal(out, forced(x, (5, 7)))
        with pytest.raises(RuntimeError), lpa_route("eager"):  # restored on an exception too
            raise RuntimeError("inside")
        assert get_lpa_route() == "auto"
        set_lpa_route("eager")
        try:
            assert m.route(CPU) == "eager"
            with pytest.raises(ConfigError):
                set_lpa_route("sdpa")
            with pytest.raises(ConfigError), lpa_route("sdpa"):
                pass
            assert get_lpa_route() == "eager"  # a bad name changes nothing
        finally:
            set_lpa_route("auto")
    assert m.route(CPU) == "flash"


def test_distance_options_are_one_definition():
    assert LPA_DISTANCES == ("euclidean", "squared")
    assert config_distances is LPA_DISTANCES


def test_dropout_on_head_outputs():
    m = make_module("euclidean", dropout=0.5)
    x = torch.randn(1, 35, 32)
    with torch.no_grad():
        m.eval()
        assert max_err(m(x, (5, 7)), lpa_layer_reference(m, x, (5, 7))) < 1e-5
        m.train()
        torch.manual_seed(5)
        a = m(x, (5, 7))
        # Same as dropping the concatenated head outputs before out_proj.
        heads = (
            m.attend(
                m.q_proj(x).view(1, 35, 4, 8).transpose(1, 2),
                m.k_proj(x).view(1, 35, 4, 8).transpose(1, 2),
                m.v_proj(x).view(1, 35, 4, 8).transpose(1, 2),
                m.geometry((5, 7), "cpu"),
                "eager",
            )
            .transpose(1, 2)
            .reshape(1, 35, 32)
        )
        torch.manual_seed(5)
        b = m.out_proj(torch.nn.functional.dropout(heads, 0.5, training=True))
    assert max_err(a, b) < 1e-6


def test_api_and_errors():
    m = LocalityPerceptiveAttention(48, 8)
    assert m.head_scale.shape == (8,) and torch.all(m.head_scale == 1.0)
    assert all(isinstance(getattr(m, n), torch.nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
    assert m.q_proj.bias is not None
    with pytest.raises(ConfigError):
        LocalityPerceptiveAttention(30, 8)
    with pytest.raises(ConfigError):
        LocalityPerceptiveAttention(32, 4, distance="manhattan")
    with pytest.raises(ConfigError):
        LocalityPerceptiveAttention(32, 4, clip=0.0)
    with pytest.raises(ValueError):
        m(torch.randn(1, 10, 48), (3, 3))


# ---------------------------------------------------------------------- CUDA (compiled FlexAttention)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize("distance", ["euclidean", "squared"])
@pytest.mark.parametrize("grid", [(5, 7), (20, 20), (40, 40)])
def test_cuda_routes_match_reference(distance, grid):
    """Compiled FlexAttention (forced, fp32) and the auto routes vs the float64 reference."""
    h, w = grid
    n = h * w
    torch.manual_seed(6)
    x = torch.randn(2, n, 64, device="cuda")
    g = torch.randn(2, n, 64, device="cuda")
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        m = make_module(distance, c=64, heads=4).cuda().double()
        ref_out, ref_grads = run_with_grads(m, x.double(), grid, g.double(), ref=True)
        results = {}
        for backend in ("flex", "auto"):
            mb = make_module(distance, c=64, heads=4, backend=backend).cuda()
            results[backend] = run_with_grads(mb, x, grid, g)
            assert not mb._flex_failed
            assert mb.route(torch.device("cuda"), True, torch.float32) == ("flex" if backend == "flex" else "eager")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    for out, grads in results.values():
        assert max_err(out, ref_out) < 1e-5 * max(1.0, ref_out.abs().max().item())
        for name, gr in ref_grads.items():
            assert max_err(grads[name], gr) < 1e-5 * max(1.0, gr.abs().max().item()), name
    if distance == "euclidean" and grid != (5, 7):
        m = make_module(distance, c=64, heads=4).cuda()
        assert m.route(torch.device("cuda"), True, torch.bfloat16) == "flex"
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out16 = m(x, grid)
        out16.float().sum().backward()
        assert not m._flex_failed and torch.isfinite(m.head_scale.grad).all()
        assert max_err(out16, ref_out) < 3e-2 * max(1.0, ref_out.abs().max().item())
