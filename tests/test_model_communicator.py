"""Multi-modal communicator and dense head."""

from __future__ import annotations

import torch

from epng.model import EPNGConfig
from epng.model.communicator import Communicator, PhraseCrossAttention
from epng.model.head import DenseHead, upsample_logits


def communicator() -> Communicator:
    torch.manual_seed(0)
    return Communicator(EPNGConfig(fpn_channels=8, num_heads=4, ffn_dim=32, num_layers=2)).eval()


def test_shapes_and_non_square_grid():
    comm = communicator()
    out = comm(torch.randn(2, 24, 3, 5), torch.randn(2, 4, 24), torch.ones(2, 4, dtype=torch.bool))
    assert out.shape == (2, 24, 3, 5) and torch.isfinite(out).all()


def test_padding_phrases_change_nothing():
    comm = communicator()
    visual, phrases = torch.randn(2, 24, 4, 4), torch.randn(2, 3, 24)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    with torch.no_grad():
        ref = comm(visual, phrases, mask)
        garbage = phrases.clone()
        garbage[1, 1:] = 100 * torch.randn(2, 24)
        more = torch.cat([garbage, 50 * torch.randn(2, 2, 24)], dim=1)
        out = comm(visual, more, torch.cat([mask, torch.zeros(2, 2, dtype=torch.bool)], dim=1))
    assert torch.allclose(out, ref, atol=1e-5)


def test_sample_without_phrases_is_finite_and_gets_no_cross_attention():
    cross = PhraseCrossAttention(24, 4)
    x, phrases = torch.randn(2, 6, 24), torch.randn(2, 3, 24)
    mask = torch.tensor([[True, False, False], [False, False, False]])
    out = cross(x, phrases, mask)
    assert torch.isfinite(out).all() and torch.equal(out[1], torch.zeros(6, 24))
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in cross.parameters())
    comm = communicator().train()
    y = comm(torch.randn(2, 24, 4, 4), torch.randn(2, 3, 24), mask)
    y.sum().backward()
    assert torch.isfinite(y).all() and all(torch.isfinite(p.grad).all() for p in comm.parameters() if p.grad is not None)


def test_head_is_phrase_kernels_over_bilinear_x4():
    head = DenseHead()
    with torch.no_grad():
        head.bias.fill_(0.5)
    visual, phrases = torch.randn(1, 6, 2, 3), torch.randn(1, 2, 6)
    out = head(visual, phrases)
    assert out.mask_logits.shape == (1, 2, 8, 12) and out.pixel_embed.shape == (1, 6, 8, 12)
    low = torch.einsum("bpc,bchw->bphw", phrases, visual)
    expected = torch.nn.functional.interpolate(low, scale_factor=4, mode="bilinear", align_corners=False) + 0.5
    assert torch.allclose(out.mask_logits, expected, atol=1e-5)  # = Up4(F_N * F)
    assert upsample_logits(out.mask_logits, (32, 48)).shape == (1, 2, 32, 48)
