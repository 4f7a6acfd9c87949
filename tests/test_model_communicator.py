"""Multi-modal communicator and dense head."""

from __future__ import annotations

import pytest
import torch

from epng.model import EPNGConfig
from epng.model.communicator import Communicator, PhraseCrossAttention
from epng.model.head import DenseHead


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
    assert torch.isfinite(y).all() and all(
        torch.isfinite(p.grad).all() for p in comm.parameters() if p.grad is not None
    )


def test_head_is_phrase_kernels_over_bilinear_x4():
    head = DenseHead(EPNGConfig())
    assert head.upsampler is None
    with torch.no_grad():
        head.bias.fill_(0.5)
    visual, phrases = torch.randn(1, 6, 2, 3), torch.randn(1, 2, 6)
    out = head(visual, phrases)
    assert out.mask_logits.shape == (1, 2, 8, 12) and out.pixel_embed.shape == (1, 6, 8, 12)
    low = torch.einsum("bpc,bchw->bphw", phrases, visual)
    expected = torch.nn.functional.interpolate(low, scale_factor=4, mode="bilinear", align_corners=False) + 0.5
    assert torch.allclose(out.mask_logits, expected, atol=1e-5)  # = Up4(F_N * F)
    # the inference method: phrase kernels at stride 16, only the logit maps upsampled -- the same numbers
    assert torch.allclose(head.mask_logits(visual, phrases), out.mask_logits, atol=1e-5)


def test_fpn_head_refines_through_p3_and_p2():
    torch.manual_seed(0)
    head = DenseHead(EPNGConfig(fpn_channels=4, num_heads=4, mask_head="fpn"))  # C = 12
    up = head.upsampler
    visual, phrases = torch.randn(2, 12, 2, 3), torch.randn(2, 5, 12)
    fine = (torch.randn(2, 4, 4, 6), torch.randn(2, 4, 8, 12))  # P3, P2
    out = head(visual, phrases, fine)
    x = visual
    for skip, lat, (conv, norm, _) in zip(fine, up.lateral, up.refine):
        x = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = x + torch.nn.functional.conv2d(skip, lat.weight, lat.bias)
        x = torch.nn.functional.conv2d(x, conv.weight, padding=1)
        x = torch.nn.functional.group_norm(x, norm.num_groups, norm.weight, norm.bias).relu()
    x = torch.nn.functional.conv2d(x, up.out.weight, up.out.bias)
    assert norm.num_groups == 4  # gcd(32, 12)
    assert torch.allclose(out.pixel_embed, x, atol=1e-5) and out.pixel_embed.shape == (2, 12, 8, 12)
    assert torch.allclose(out.mask_logits, torch.einsum("bpc,bchw->bphw", phrases, x), atol=1e-5)
    with pytest.raises(ValueError, match="2 finer FPN maps"):
        head(visual, phrases, fine[:1])
