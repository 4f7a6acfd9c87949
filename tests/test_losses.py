"""Losses against brute-force (python loop) computations on tiny hand-made examples."""

from __future__ import annotations

import math

import pytest
import torch

from epng.losses import EPNGCriterion, dice_loss, mask_bce_loss, real_phrase_logits, reduce_targets, sal_loss
from epng.model import EPNGConfig
from epng.model.head import EPNGOutput

TAU = 2.0


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.fixture
def example():
    """B=2, P=3 (sample 0: 3 real phrases, the 3rd with an empty mask; sample 1: 1 real), grid 3x3, GT 6x6."""
    gen = torch.Generator().manual_seed(0)
    pixel = torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64)
    phrase = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    gt = torch.zeros(2, 3, 6, 6, dtype=torch.float64)
    gt[0, 0, :2, :4] = 1  # cells (0,0), (0,1)
    gt[0, 1, 1, 1] = 1  # one pixel -> cell (0,0) (shared with phrase 0)
    gt[0, 1, 5, 5] = 1  # cell (2,2)
    gt[1, 0, 2:6, 0:3] = 1  # cells (1,0), (1,1), (2,0), (2,1)
    gt[1, 1:, :, :] = 1  # padding phrases with a (bogus) mask: must never count
    mask = torch.tensor([[True, True, True], [True, False, False]])
    logits = torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64)
    return pixel, phrase, gt, mask, logits


def brute_sal(pixel, phrase, gt, mask, tau):
    b_n, _, h, w = pixel.shape
    fy, fx = gt.shape[2] // h, gt.shape[3] // w
    l_v, l_t = [], []
    for b in range(b_n):
        real = [i for i in range(phrase.shape[1]) if mask[b, i]]
        cells = [(y, x) for y in range(h) for x in range(w)]

        def s(i, cell, b=b):
            return float(phrase[b, i] @ pixel[b, :, cell[0], cell[1]]) / tau

        def positive(i, cell, b=b):
            y, x = cell
            return bool((gt[b, i, y * fy : (y + 1) * fy, x * fx : (x + 1) * fx] > 0.5).any())

        for i in real:
            pos = [c for c in cells if positive(i, c)]
            if pos:
                log_den = math.log(sum(math.exp(s(i, k)) for k in cells))
                l_v.append(sum(-(s(i, j) - log_den) for j in pos) / len(pos))
        for c in cells:
            pos = [j for j in real if positive(j, c)]
            if pos:
                log_den = math.log(sum(math.exp(s(k, c)) for k in real))
                l_t.append(sum(-(s(j, c) - log_den) for j in pos) / len(pos))
    return sum(l_v) / len(l_v), sum(l_t) / len(l_t)


def test_bce_matches_brute_force(example):
    *_, gt, mask, logits = example
    flat, targets = real_phrase_logits(logits, gt, mask)
    terms = []
    for b, i in mask.nonzero().tolist():
        for y in range(6):
            for x in range(6):
                p, g = sigmoid(float(logits[b, i, y, x])), float(gt[b, i, y, x])
                terms.append(-(g * math.log(p) + (1 - g) * math.log(1 - p)))
    assert mask_bce_loss(flat, targets).item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_dice_matches_brute_force(example):
    *_, gt, mask, logits = example
    flat, targets = real_phrase_logits(logits, gt, mask)
    per_phrase = []
    for b, i in mask.nonzero().tolist():
        m = [sigmoid(float(v)) for v in logits[b, i].flatten()]
        g = [float(v) for v in gt[b, i].flatten()]
        inter = sum(a * c for a, c in zip(m, g))
        per_phrase.append(1 - (2 * inter + 1.0) / (sum(m) + sum(g) + 1.0))
    assert dice_loss(flat, targets, eps=1.0).item() == pytest.approx(sum(per_phrase) / len(per_phrase), rel=1e-6)


def test_mask_losses_upsample_logits_to_the_ground_truth(example):
    *_, gt, mask, _ = example
    logits = torch.arange(6, dtype=torch.float64).view(2, 3, 1, 1).expand(2, 3, 2, 2) - 2.5  # constant per phrase
    flat, targets = real_phrase_logits(logits, gt, mask)
    assert flat.shape == (4, 6, 6) and targets.shape == (4, 6, 6)
    terms = []
    for b, i in mask.nonzero().tolist():
        p = sigmoid(float(logits[b, i, 0, 0]))
        terms += [-(g * math.log(p) + (1 - g) * math.log(1 - p)) for g in gt[b, i].flatten().tolist()]
    assert mask_bce_loss(flat, targets).item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_reduce_targets_is_any_pixel_positive():
    gt = torch.zeros(1, 1, 8, 8)
    gt[0, 0, 3, 5] = 1
    cells = reduce_targets(gt, (2, 2))
    assert cells.tolist() == [[[[False, True], [False, False]]]]


def test_sal_equals_the_double_sums(example):
    pixel, phrase, gt, mask, _ = example
    l_v, l_t = sal_loss(pixel, phrase, gt, mask, tau=TAU)
    bv, bt = brute_sal(pixel, phrase, gt, mask, TAU)
    assert l_v.item() == pytest.approx(bv, rel=1e-9) and l_t.item() == pytest.approx(bt, rel=1e-9)


def test_sal_both_directions_contribute(example):
    pixel, phrase, gt, mask, _ = example
    l_v, l_t = sal_loss(pixel, phrase, gt, mask, tau=TAU)
    # A cell of sample 0 that no phrase covers: only l_v's denominators (phrase -> all pixels) see it.
    assert not reduce_targets(gt, (3, 3))[0, :, 1, 2].any()
    moved = pixel.clone()
    moved[0, :, 1, 2] += 3.0
    v2, t2 = sal_loss(moved, phrase, gt, mask, tau=TAU)
    assert v2.item() != pytest.approx(l_v.item()) and t2.item() == pytest.approx(l_t.item(), rel=1e-12)
    # Shifting every pixel by one vector shifts each phrase's logits by a constant: only l_t changes.
    shifted = pixel + torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=pixel.dtype)[None, :, None, None]
    v3, t3 = sal_loss(shifted, phrase, gt, mask, tau=TAU)
    assert v3.item() == pytest.approx(l_v.item(), rel=1e-9) and t3.item() != pytest.approx(l_t.item())
    crit = EPNGCriterion(tau=TAU)
    out = EPNGOutput(mask_logits=torch.zeros(2, 3, 3, 3, dtype=pixel.dtype), pixel_embed=pixel, phrase_embed=phrase)
    assert crit(out, gt, mask)["sal"].item() == pytest.approx((l_v + l_t).item())


def test_padding_never_contributes(example):
    pixel, phrase, gt, mask, logits = example
    crit = EPNGCriterion(tau=TAU)
    ref = crit(EPNGOutput(logits, pixel, phrase), gt, mask)
    gen = torch.Generator().manual_seed(5)

    def pad(t, shape):  # two more padding phrases with large random values
        return torch.cat([t, 10 * torch.randn(*shape, generator=gen, dtype=t.dtype)], dim=1)

    out = EPNGOutput(pad(logits, (2, 2, 6, 6)), pixel, pad(phrase, (2, 2, 4)))
    more = crit(
        out,
        torch.cat([gt, torch.ones(2, 2, 6, 6, dtype=gt.dtype)], 1),
        torch.cat([mask, torch.zeros(2, 2, dtype=torch.bool)], 1),
    )
    phrase2 = phrase.clone()
    phrase2[1, 1:] = 100.0  # existing padding slots with huge features
    logits2 = logits.clone()
    logits2[1, 1:] = -100.0
    same_slots = crit(EPNGOutput(logits2, pixel, phrase2), gt, mask)
    for key in ref:
        assert more[key].item() == pytest.approx(ref[key].item(), rel=1e-12), key
        assert same_slots[key].item() == pytest.approx(ref[key].item(), rel=1e-12), key


def test_no_real_phrase_gives_zero_finite_losses_and_gradients(example):
    pixel, phrase, gt, mask, logits = example
    pixel, phrase, logits = (t.clone().requires_grad_() for t in (pixel, phrase, logits))
    none = torch.zeros_like(mask)
    losses = EPNGCriterion(tau=TAU)(EPNGOutput(logits, pixel, phrase), gt, none)
    assert all(v.item() == 0 for v in losses.values())
    losses["loss"].backward()
    mixed = EPNGCriterion(tau=TAU)(
        EPNGOutput(logits, pixel, phrase), gt, torch.tensor([[True, True, False], [False] * 3])
    )
    mixed["loss"].backward()
    assert all(torch.isfinite(t.grad).all() for t in (pixel, phrase, logits))


def test_criterion_weights_and_config():
    crit = EPNGCriterion.from_config(EPNGConfig(loss_weights=(1.0, 3.0, 0.5), sal_tau=7.0, dice_eps=0.5))
    assert crit.weights == (1.0, 3.0, 0.5) and crit.tau == 7.0 and crit.dice_eps == 0.5
    gen = torch.Generator().manual_seed(2)
    out = EPNGOutput(
        torch.randn(1, 2, 4, 4, generator=gen),
        torch.randn(1, 8, 4, 4, generator=gen),
        torch.randn(1, 2, 8, generator=gen),
    )
    gt = (torch.rand(1, 2, 16, 16, generator=gen) > 0.5).float()
    losses = crit(out, gt, torch.ones(1, 2, dtype=torch.bool))
    assert set(losses) == {"loss", "bce", "dice", "sal", "sal_v", "sal_t"}
    expected = 1.0 * losses["bce"] + 3.0 * losses["dice"] + 0.5 * (losses["sal_v"] + losses["sal_t"])
    assert losses["loss"].item() == pytest.approx(expected.item())


def test_sal_similarities_stay_float32_under_autocast(example):
    pixel, phrase, gt, mask, _ = (t.float() if t.is_floating_point() else t for t in example)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        l_v, l_t = sal_loss(pixel, phrase, gt, mask, tau=TAU)
    bv, bt = brute_sal(pixel.double(), phrase.double(), gt, mask, TAU)
    assert l_v.dtype == torch.float32
    assert l_v.item() == pytest.approx(bv, rel=1e-5) and l_t.item() == pytest.approx(bt, rel=1e-5)
