"""AR / recall curve / acc@0.5 against independent computations of their definitions."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from helpers_metrics import mask_iou

from epng.metrics.png_metric import (
    METRIC_KEYS,
    THRESHOLDS,
    accuracy_at,
    average_recall,
    compute_metrics,
    format_metrics_table,
    recall_curve,
)


def expected_ar_exact(ious: list[Fraction]) -> float:
    """AR x 100 in exact arithmetic: an IoU x adds (t_k - t_0) with k = #{i in 0..99998 : i / 1e5 <= x}."""
    total = Fraction(0)
    for x in ious:
        k = min(int(x * 100_000), 99_998) + 1  # floor(x * 1e5) + 1, capped at 99,999 thresholds
        total += Fraction(k, 100_000)
    return float(100 * total / len(ious))


def expected_ar_loop(ious: np.ndarray, step: int = 1) -> float:
    """The literal formula, summed in a Python loop over (every ``step``-th) threshold interval."""
    t = [i * 1e-5 for i in range(100_000)]
    total = 0.0
    for i in range(0, 99_999, step):
        recall = sum(1 for x in ious if x >= t[i]) / len(ious)
        total += (t[i + 1] - t[i]) * recall * step
    return 100 * total


def test_thresholds_are_the_formula():
    assert THRESHOLDS.shape == (100_000,)
    assert THRESHOLDS.dtype == np.float64
    assert all(THRESHOLDS[i] == i * 1e-5 for i in (0, 1, 3, 30_000, 50_000, 99_999))
    assert not THRESHOLDS.flags.writeable


def test_ar_one_half_zero_exact():
    ar = 100 * average_recall([1.0, 0.5, 0.0])
    # by hand: 1.0 -> 99,999 intervals, 0.5 -> 50,001 (i = 0..50,000), 0.0 -> 1 (i = 0)
    assert ar == pytest.approx(100 * (0.99999 + 0.50001 + 0.00001) / 3, abs=1e-9)
    assert ar == pytest.approx(expected_ar_exact([Fraction(1), Fraction(1, 2), Fraction(0)]), abs=1e-9)
    assert ar == pytest.approx(50.000333333333, abs=1e-9)


@pytest.mark.parametrize(
    "ious, expected",
    [
        ([1.0], 99.999),
        ([0.0], 0.001),  # recall(t_0 = 0) = 1 by definition: one interval of 1e-5
        ([0.0, 0.0, 0.0], 0.001),
        ([0.5], 50.001),
        ([0.25, 0.75], (25.001 + 75.001) / 2),
        ([1e-5], 0.002),  # exactly on t_1
        ([0.999995], 99.999),  # above t_99999 = 0.99999 but only 99,999 intervals count
    ],
)
def test_ar_small_cases(ious, expected):
    assert 100 * average_recall(ious) == pytest.approx(expected, abs=1e-9)


def test_ar_iou_exactly_on_a_threshold_counts():
    # 3/10 is mathematically on t_30000 although 30000 * 1e-5 > 3 / 10 in float64
    assert 30_000 * 1e-5 > 3 / 10
    iou = 3 / 10
    assert 100 * average_recall([iou]) == pytest.approx(100 * 30_001e-5, abs=1e-9)
    assert recall_curve([iou])[30_000] == 1.0
    assert recall_curve([iou])[30_001] == 0.0
    # the same for IoUs that are ratios of pixel counts landing on the grid
    for num, den in [(7, 20), (123, 1000), (2, 5), (99_999, 100_000), (1, 100_000)]:
        assert 100 * average_recall([num / den]) == pytest.approx(expected_ar_exact([Fraction(num, den)]), abs=1e-9)


def test_ar_matches_exact_formula_on_rational_ious():
    rng = np.random.default_rng(0)
    unions = rng.integers(1, 400_000, size=200)
    inters = (rng.random(200) * (unions + 1)).astype(np.int64).clip(0, unions)
    fracs = [Fraction(int(i), int(u)) for i, u in zip(inters, unions)]
    ious = inters / unions
    assert 100 * average_recall(ious) == pytest.approx(expected_ar_exact(fracs), abs=1e-9)


def test_ar_matches_literal_loop():
    ious = np.array([0.123456789, 0.9, 0.33, 0.0, 1.0, 0.5000049])
    # a coarse loop (every 50th interval, weighted x50) agrees to the discretisation error
    assert 100 * average_recall(ious) == pytest.approx(expected_ar_loop(ious, step=50), abs=0.05)


def test_ar_approximately_mean_iou():
    rng = np.random.default_rng(1)
    ious = rng.random(1000)
    assert 100 * average_recall(ious) == pytest.approx(100 * ious.mean(), abs=2e-3)


def test_recall_curve():
    curve = recall_curve([1.0, 0.5, 0.0, 0.2])
    assert curve.shape == (100_000,)
    assert curve[0] == 1.0
    assert curve[1] == 0.75
    assert curve[20_000] == 0.75
    assert curve[20_001] == 0.5
    assert curve[50_000] == 0.5
    assert curve[50_001] == 0.25
    assert curve[99_999] == 0.25
    assert np.all(np.diff(curve) <= 0)
    with pytest.raises(ValueError):
        recall_curve([])


def test_accuracy_is_strictly_above_half():
    assert accuracy_at([0.5, 0.5000001, 0.2, 1.0]) == 0.5
    assert accuracy_at([]) is None


def test_invalid_ious():
    for bad in ([float("nan")], [1.5], [-0.1], [float("inf")]):
        with pytest.raises(ValueError):
            average_recall(bad)


def test_compute_metrics_subsets_and_counts():
    ious = [1.0, 0.0, 0.5, 0.25]
    is_thing = [True, True, False, False]
    is_plural = [False, True, False, True]
    m = compute_metrics(ious, is_thing, is_plural, n_missing=1)
    assert tuple(m) == METRIC_KEYS
    assert m["ar"] == pytest.approx((99.999 + 0.001 + 50.001 + 25.001) / 4, abs=1e-9)
    assert m["ar_things"] == pytest.approx((99.999 + 0.001) / 2, abs=1e-9)
    assert m["ar_stuff"] == pytest.approx((50.001 + 25.001) / 2, abs=1e-9)
    assert m["ar_singulars"] == pytest.approx((99.999 + 50.001) / 2, abs=1e-9)
    assert m["ar_plurals"] == pytest.approx((0.001 + 25.001) / 2, abs=1e-9)
    assert m["acc_50"] == 25.0
    assert (m["n_phrases"], m["n_things"], m["n_stuff"], m["n_singulars"], m["n_plurals"], m["n_missing"]) == (
        4,
        2,
        2,
        2,
        2,
        1,
    )


def test_compute_metrics_empty_subsets_are_none():
    m = compute_metrics([0.7, 0.9], [True, True], [False, False])
    assert m["ar_stuff"] is None and m["ar_plurals"] is None
    assert m["n_stuff"] == 0 and m["n_plurals"] == 0
    assert m["ar"] == pytest.approx(100 * average_recall([0.7, 0.9]))
    table = format_metrics_table(m)
    assert "—" in table and "stuff" in table and "acc@0.5" in table
    empty = compute_metrics([], [], [])
    assert empty["ar"] is None and empty["acc_50"] is None and empty["n_phrases"] == 0
    format_metrics_table(empty)


def test_compute_metrics_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        compute_metrics([0.1, 0.2], [True], [False, False])
    with pytest.raises(ValueError):
        compute_metrics([0.1], [True], [False], n_missing=2)


def test_mask_iou_against_numpy():
    rng = np.random.default_rng(2)
    for _ in range(20):
        a = rng.random((13, 17)) < 0.4
        b = rng.random((13, 17)) < 0.6
        expected = np.logical_and(a, b).sum() / np.logical_or(a, b).sum()
        assert mask_iou(a, b) == pytest.approx(expected, abs=0)
    empty = np.zeros((3, 3), bool)
    assert mask_iou(empty, empty) == 1.0
    assert mask_iou(empty, ~empty) == 0.0
    with pytest.raises(ValueError):
        mask_iou(empty, np.zeros((3, 4), bool))
