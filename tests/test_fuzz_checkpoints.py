"""Property-based tests of the checkpoint readers: a damaged training checkpoint or saved model folder
loads, or raises CheckpointError naming the file or folder; never another exception."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from helpers_fuzz import damaged_bytes, examples
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from epng.engine import checkpoint as ckpt
from epng.errors import CheckpointError
from epng.model import EPNG, build_epng, load_model


class Saveable(torch.nn.Linear):
    def save_pretrained(self, path):
        save_file(self.state_dict(), Path(path) / "model.safetensors")


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint folder as training writes it (optimizer state, RNG states, an EMA)."""
    out = tmp_path_factory.mktemp("run")
    model = Saveable(4, 3)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    state = {"step": 5, "epoch": 1, "batch_in_epoch": 2, "best_ar": 3.5, "optimizer": optimizer.state_dict()}
    state.update(scheduler={"last_epoch": 5}, rng=[ckpt.rng_state()])
    return ckpt.save_checkpoint(out, 5, model, state, ema_state=model.state_dict())


@examples(60)
@given(name=st.sampled_from(["model.safetensors", "ema.safetensors", "trainer_state.pt"]), data=st.data())
def test_training_checkpoints(training_checkpoint, name, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkpoints" / training_checkpoint.name
        shutil.copytree(training_checkpoint, folder)
        damaged = folder / name
        damaged.write_bytes(data.draw(damaged_bytes(damaged.read_bytes())))
        try:
            loaded = ckpt.load_checkpoint(folder)
        except CheckpointError as err:
            assert str(damaged) in str(err) and "\n" not in str(err), str(err)
            with pytest.warns(UserWarning, match=f"skipping damaged checkpoint: {re.escape(str(damaged))}"):
                assert ckpt.load_latest_checkpoint(Path(tmp)) is None
        else:
            assert isinstance(loaded.step, int) and loaded.path == folder
            assert all(torch.is_tensor(t) for t in loaded.model_state.values())


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("saved") / "model"
    build_epng("epng_lite0_minilm", image_size=64, backbone_weights="none").save_pretrained(path)
    return path


# a value of a JSON type other than the field's own (bools count as another type than numbers)
_BY_TYPE = {
    type(None): st.none(),
    bool: st.booleans(),
    int: st.integers(-3, 3),
    float: st.floats(-10, 10) | st.just(float("nan")),
    str: st.text(max_size=8),
    list: st.lists(st.integers(-3, 3), max_size=3),
    dict: st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2),
}


def other_type(value) -> st.SearchStrategy:
    return st.one_of([strategy for kind, strategy in _BY_TYPE.items() if type(value) is not kind])


@st.composite
def damaged_config(draw, config: dict) -> bytes:
    """config.json with a field of the wrong type, a field removed, an unknown field, another
    top-level value, or damaged bytes."""
    kind = draw(st.sampled_from(["wrong type", "wrong type", "removed", "unknown", "not an object", "bytes"]))
    if kind == "bytes":
        return draw(damaged_bytes(json.dumps(config).encode()))
    if kind == "not an object":
        return json.dumps(draw(other_type({}))).encode()
    changed = dict(config)
    key = draw(st.sampled_from(sorted(config)))
    if kind == "wrong type":
        changed[key] = draw(other_type(config[key]))
    elif kind == "removed":
        del changed[key]
    else:
        changed[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in config))] = draw(st.integers(-3, 3))
    return json.dumps(changed).encode()


@examples(12)
@given(data=st.data(), target=st.sampled_from(["config.json", "config.json", "model.safetensors"]))
def test_saved_model_folders(saved_model, data, target):
    """A saved model folder (what `epng predict` and `evaluate` load) with a damaged config.json
    (wrong types, unknown or missing keys) or a truncated weights file."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        for item in saved_model.iterdir():
            (folder / item.name).symlink_to(item)
        (folder / target).unlink()
        if target == "config.json":
            (folder / target).write_bytes(data.draw(damaged_config(json.loads((saved_model / target).read_text()))))
        else:
            size = (saved_model / target).stat().st_size
            cut = data.draw(st.integers(0, 4096) | st.integers(size - 4096, size - 1))
            with open(saved_model / target, "rb") as src:
                (folder / target).write_bytes(src.read(cut))
        try:
            model = load_model(folder)
        except CheckpointError as err:
            assert str(folder) in str(err) and "\n" not in str(err), str(err)
        else:
            assert isinstance(model, EPNG)
