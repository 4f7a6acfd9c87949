"""The exported graphs' formulations against the modules they stand for: LPA's banded form
against the materialised formula (exact, memory-lean blocks), the reassociated phrase
cross-attention against `PhraseCrossAttention`."""

from __future__ import annotations

import pytest
import torch

from epng.inference.fold_cross import FoldedCrossAttention, fold_cross_attention
from epng.model import EPNGConfig
from epng.model.communicator import Communicator, PhraseCrossAttention
from epng.model.lpa import LocalityPerceptiveAttention, build_grid_geometry, lpa_layer_reference
from epng.model.lpa import banded as banded_module
from epng.model.lpa.banded import band_factors, banded_active, banded_lpa, block_rows


@pytest.mark.parametrize("distance", ["euclidean", "squared"])
@pytest.mark.parametrize("grid,rows", [((5, 7), 4), ((20, 20), 37), ((12, 30), 1000)])
def test_banded_lpa_is_the_formula_in_small_blocks(distance, grid, rows, monkeypatch):
    h, w = grid
    n, heads = h * w, 4
    budget = heads * n * rows  # one sample's block holds at most `rows` query rows
    seen = []  # (rows, keys) of every block's logits
    real = banded_module.band_factors

    def spy(geom, s, e, a, b, dtype):
        seen.append((e - s, b - a))
        return real(geom, s, e, a, b, dtype)

    monkeypatch.setattr(banded_module, "band_factors", spy)
    torch.manual_seed(0)
    m = LocalityPerceptiveAttention(32, heads, distance=distance, max_block_elements=budget).double().eval()
    with torch.no_grad():
        m.head_scale.copy_(torch.rand(heads) * 2 + 0.5)
        x = torch.randn(2, n, 32, dtype=torch.float64) * 3
        ref = lpa_layer_reference(m, x, grid)
        with banded_lpa():
            assert banded_active()
            out = m(x, grid)
        assert not banded_active()
    assert (out - ref).abs().max().item() < 1e-12
    expected_rows = min(rows, n)
    assert block_rows(n, heads, budget) == expected_rows
    assert len(seen) == -(-n // expected_rows) and max(r for r, _ in seen) <= expected_rows
    band = m.geometry(grid, "cpu").band
    assert all(keys <= r + 2 * band for r, keys in seen)  # factor tables: (rows, band keys), never (N, N)


def test_band_factors_hold_d_over_clip_at_the_neighbours():
    geom = build_grid_geometry((4, 5), "euclidean", 2.0)
    table = band_factors(geom, 6, 9, 0, 20, torch.float64)  # rows 6..8 against every key
    ys, xs = torch.arange(20) // 5, torch.arange(20) % 5
    for r, m in enumerate(range(6, 9)):
        d = ((ys - ys[m]) ** 2 + (xs - xs[m]) ** 2).double().sqrt().clamp(max=2.0)
        assert torch.allclose(table[r], d / 2.0)


def test_folded_cross_attention_is_the_module():
    torch.manual_seed(0)
    cross = PhraseCrossAttention(64, 8).double().eval()
    folded = FoldedCrossAttention(cross)
    x, phrases = torch.randn(3, 50, 64, dtype=torch.float64), torch.randn(3, 5, 64, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        want, got = cross(x, phrases, mask), folded(x, phrases, mask)
    assert (got - want).abs().max().item() < 1e-12
    assert got[1].abs().max().item() == 0.0  # no phrase: zero update


def test_fold_cross_attention_swaps_every_layer():
    communicator = Communicator(EPNGConfig(backbone_weights="none", fpn_channels=16, num_heads=4, num_layers=2))
    assert fold_cross_attention(communicator) == 2
    assert all(isinstance(layer.cross, FoldedCrossAttention) for layer in communicator.layers)
    assert fold_cross_attention(communicator) == 0
