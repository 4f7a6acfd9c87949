"""Atomic training checkpoints that can be resumed exactly.

A checkpoint is a folder ``<output>/checkpoints/step_<N>/`` holding
``config.json`` + ``model.safetensors`` (a ``from_pretrained`` folder, usable by
``epng evaluate``), ``ema.safetensors`` when an EMA is kept, and
``trainer_state.pt`` (optimizer, scheduler, RNG states, data position), loaded
with ``weights_only=True`` so that it never runs pickled code.

Writes go to a temporary folder that is renamed into place, so a crash leaves
either the old checkpoint or the new one, never half of one. A checkpoint that is
damaged anyway (e.g. truncated by a full disk) is reported and the previous one is
used.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from epng.errors import CheckpointError

STATE_FILE = "trainer_state.pt"
EMA_FILE = "ema.safetensors"
PREFIX = "step_"


@dataclass
class LoadedCheckpoint:
    path: Path
    step: int
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None
    trainer_state: dict


def rng_state() -> dict:
    """Every RNG that training consumes, as tensors and plain values (weights_only-loadable)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(value):
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(
    output_dir: Path,
    step: int,
    model: torch.nn.Module,
    trainer_state: dict,
    ema_state: dict[str, torch.Tensor] | None = None,
    keep: int = 2,
) -> Path:
    """Write ``step_<N>`` atomically and keep only the newest ``keep`` checkpoints."""
    root = Path(output_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_", dir=root))
    try:
        model.save_pretrained(tmp)
        if ema_state is not None:
            save_file({k: v.contiguous() for k, v in ema_state.items()}, tmp / EMA_FILE)
        torch.save(trainer_state, tmp / STATE_FILE)
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Read one checkpoint folder; raises CheckpointError naming the file that is damaged."""
    path = Path(path)
    files = {"model": path / "model.safetensors", "state": path / STATE_FILE}
    for f in files.values():
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
    try:
        model_state = load_file(files["model"])
    except Exception as err:  # safetensors raises several error types on damaged files
        raise CheckpointError(f"{files['model']}: unreadable ({err})") from None
    ema_state = None
    if (path / EMA_FILE).is_file():
        try:
            ema_state = load_file(path / EMA_FILE)
        except Exception as err:
            raise CheckpointError(f"{path / EMA_FILE}: unreadable ({err})") from None
    try:
        trainer_state = torch.load(files["state"], map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{files['state']}: unreadable ({err})") from None
    return LoadedCheckpoint(path, int(trainer_state["step"]), model_state, ema_state, trainer_state)


def load_latest_checkpoint(output_dir: Path) -> LoadedCheckpoint | None:
    """The newest checkpoint that loads; damaged ones are reported and skipped."""
    for path in reversed(list_checkpoints(output_dir)):
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"skipping damaged checkpoint: {err}; trying the previous one", stacklevel=2)
    return None


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
