"""RES metrics on hand-made cases: mIoU vs oIoU, exact precision thresholds, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from epng.metrics.iou import intersection_union, iou_from_counts
from epng.metrics.res_metric import RES_THRESHOLDS, RESMetric, res_metrics


def test_miou_and_oiou_differ_when_object_sizes_differ():
    # a small object segmented perfectly, a large one half right
    m = res_metrics([10, 500], [10, 1000])
    assert m["n_expressions"] == 2
    assert m["mIoU"] == pytest.approx(100 * (1.0 + 0.5) / 2)  # 75: every expression weighs the same
    assert m["oIoU"] == pytest.approx(100 * 510 / 1010)  # 50.5: pixels weigh the same
    assert m["precision"] == {"0.5": 100.0, "0.6": 50.0, "0.7": 50.0, "0.8": 50.0, "0.9": 50.0}


def test_precision_counts_iou_equal_to_the_threshold():
    # IoU exactly 0.5, 0.6, 0.7, 0.8, 0.9 and, for each, one just below
    inter = [1, 3, 7, 4, 9, 4999, 5999, 6999, 7999, 8999]
    union = [2, 5, 10, 5, 10, 10000, 10000, 10000, 10000, 10000]
    m = res_metrics(inter, union)
    # P@t = share with IoU >= t: at 0.5 the five exact ones plus the 0.5999.. 0.8999 ones
    assert m["precision"]["0.5"] == pytest.approx(100 * 9 / 10)
    assert m["precision"]["0.6"] == pytest.approx(100 * 7 / 10)
    assert m["precision"]["0.7"] == pytest.approx(100 * 5 / 10)
    assert m["precision"]["0.8"] == pytest.approx(100 * 3 / 10)
    assert m["precision"]["0.9"] == pytest.approx(100 * 1 / 10)


@pytest.mark.parametrize("t", RES_THRESHOLDS)
def test_each_threshold_boundary_exactly(t):
    k = round(t * 1000)
    at = res_metrics([k], [1000], thresholds=[t])["precision"][f"{t:g}"]
    below = res_metrics([k - 1], [1000], thresholds=[t])["precision"][f"{t:g}"]
    # below t by 1e-18, less than a double can resolve: (k * 10**15 - 1) / 10**18 rounds to t
    assert (k * 10**15 - 1) / 10**18 >= t
    tiny_below = res_metrics([k * 10**15 - 1], [10**18], thresholds=[t])["precision"][f"{t:g}"]
    assert (at, below, tiny_below) == (100.0, 0.0, 0.0)


def test_metric_from_masks():
    gt = np.zeros((4, 6), dtype=bool)
    gt[1:3, 1:4] = True  # 6 pixels
    pred = np.zeros_like(gt)
    pred[1:3, 2:5] = True  # 6 pixels, 4 shared
    assert intersection_union(pred, gt) == (4, 8)
    metric = RESMetric()
    assert metric.add(pred, gt) == pytest.approx(0.5)
    assert metric.add(gt, gt) == 1.0
    assert metric.add(np.zeros_like(gt), gt) == 0.0
    m = metric.compute()
    assert len(metric) == 3 and m["n_expressions"] == 3
    assert m["mIoU"] == pytest.approx(100 * 1.5 / 3)
    assert m["oIoU"] == pytest.approx(100 * (4 + 6 + 0) / (8 + 6 + 6))
    assert m["precision"]["0.5"] == pytest.approx(100 * 2 / 3)
    assert m["precision"]["0.6"] == pytest.approx(100 * 1 / 3)
    np.testing.assert_allclose(metric.ious(), [0.5, 1.0, 0.0])


def test_edge_cases():
    assert iou_from_counts(0, 0) == 1.0  # both empty: perfect agreement
    m = res_metrics([0], [0])
    assert m["mIoU"] == 100.0 and m["oIoU"] == 100.0 and m["precision"]["0.9"] == 100.0
    empty = res_metrics([], [])
    assert empty["n_expressions"] == 0 and empty["mIoU"] == 0.0
    assert set(empty["precision"]) == {"0.5", "0.6", "0.7", "0.8", "0.9"}
    with pytest.raises(ValueError):
        res_metrics([5], [4])  # I > U
    with pytest.raises(ValueError):
        RESMetric().add_counts(-1, 3)
    with pytest.raises(ValueError):
        intersection_union(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError):
        RESMetric(thresholds=[1.5])
