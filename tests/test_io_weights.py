"""`load_into`: a safetensors file copied into a module's own tensors in groups."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from epng.io import weights
from epng.io.weights import _groups, load_into


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 4))


def _saved(tmp_path, seed: int = 1) -> tuple[nn.Module, str]:
    source = _net(seed)
    source[1].running_mean.uniform_()  # a buffer with values of its own
    path = str(tmp_path / "w.safetensors")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    return source, path


def test_copies_every_tensor_in_place(tmp_path, monkeypatch):
    source, path = _saved(tmp_path)
    target = _net(2)
    weight = target[0].weight  # the same Parameter object keeps the new values
    monkeypatch.setattr(weights, "GROUP_BYTES", 100)  # many groups: the file is reopened for each
    opened = []
    real_open = weights.safe_open
    monkeypatch.setattr(weights, "safe_open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    load_into(target, path)
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value), name
    assert target[0].weight is weight
    assert len(opened) > 4  # one open for the header, then one per group of <= 100 bytes (or one tensor)


def test_groups_cut_at_the_budget(monkeypatch):
    monkeypatch.setattr(weights, "GROUP_BYTES", 10)
    assert _groups({"a": 4, "b": 4, "c": 4, "d": 30, "e": 1}) == [["a", "b"], ["c"], ["d"], ["e"]]
    assert _groups({}) == [[]]


def test_mismatches_are_named_and_nothing_is_copied(tmp_path):
    _, path = _saved(tmp_path)
    other = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 5))  # last layer: 5 outputs
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(RuntimeError, match=r"2\.weight: shape \(4, 16\) in the file, \(5, 16\) in the model"):
        load_into(other, path)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in before.items())

    smaller = nn.Sequential(nn.Linear(8, 16))
    with pytest.raises(RuntimeError, match=r"not in the model: 1\.bias, 1\.num_batches_tracked"):
        load_into(smaller, path)
    load_into(smaller, path, strict=False)  # only the shared names
    assert torch.equal(smaller[0].weight, _saved(tmp_path)[0][0].weight)

    larger = nn.Sequential(*_net(3), nn.Linear(4, 2))
    with pytest.raises(RuntimeError, match=r"missing from the file: 3\.bias, 3\.weight"):
        load_into(larger, path)
