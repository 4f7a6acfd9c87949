"""Atomic training checkpoints that can be resumed exactly.

A checkpoint is a folder ``<output>/checkpoints/step_<N>/`` holding
``config.json`` + ``model.safetensors`` (a ``from_pretrained`` folder, usable by
``epng evaluate``), ``ema.safetensors`` when an EMA is kept, and
``trainer_state.pt`` (optimizer, scheduler, RNG states, data position), loaded
with ``weights_only=True`` so that it never runs pickled code.

Writes go to a temporary folder ``.tmp_step_<N>_<random>`` that is renamed into place,
so a crash leaves either the old checkpoint or the new one, never half of one; a process
killed during a write leaves its temporary folder, which :func:`sweep_partial_checkpoints`
removes when the run starts again. Before a write, the free space of the disk is checked
against the size of the newest checkpoint, and a full disk stops the run with a clear
:class:`CheckpointError` instead of a truncated file. A checkpoint that is damaged anyway
is reported and the previous one is used.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from epng.errors import CheckpointError

STATE_FILE = "trainer_state.pt"
EMA_FILE = "ema.safetensors"
PREFIX = "step_"
TMP_PREFIX = ".tmp_"
# what tempfile.mkdtemp(prefix=...) names the partial folders of save_checkpoint: ".tmp_step_<N>_" and
# eight characters of [a-z0-9_] (this code's earlier versions wrote ".tmp_" and the eight characters)
_PARTIAL = re.compile(r"\.tmp_(step_\d{8}_)?[a-z0-9_]{8}")


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


def _to_tuple(value: Any) -> Any:  # nested lists -> nested tuples, anything else as it is
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(
    output_dir: Path,
    step: int,
    model: torch.nn.Module,
    trainer_state: dict,
    ema_state: dict[str, torch.Tensor] | None = None,
    keep: int = 2,
) -> Path:
    """Write ``step_<N>`` atomically and keep only the newest ``keep`` checkpoints.

    Raises :class:`CheckpointError` (leaving the previous checkpoints as they were) when the
    disk has less free space than the newest checkpoint takes, or fills up during the write.
    """
    root = Path(output_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    check_free_space(output_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{PREFIX}{step:08d}_", dir=root))
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
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(f"{final}: the disk filled up during the write ({err.strerror})") from None
        raise
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def folder_bytes(path: Path) -> int:
    """Total size of the files in a folder (recursively)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def check_free_space(output_dir: Path) -> None:
    """Raise :class:`CheckpointError` when the disk of ``output_dir/checkpoints`` has less free
    space than the newest checkpoint takes (nothing to compare with before the first one)."""
    existing = list_checkpoints(output_dir)
    if not existing:
        return
    needed = folder_bytes(existing[-1])
    root = Path(output_dir) / "checkpoints"
    free = shutil.disk_usage(root).free
    if free < needed:
        raise CheckpointError(
            f"{root}: not enough free disk space for a checkpoint: {free / 2**20:,.1f} MiB free, the last "
            f"checkpoint ({existing[-1].name}) takes {needed / 2**20:,.1f} MiB; free some space (or lower "
            "run.keep_checkpoints) and re-run the same command to resume"
        )


def sweep_partial_checkpoints(output_dir: Path) -> list[Path]:
    """Remove the partial checkpoint folders that writes killed half-way left under
    ``output_dir/checkpoints`` (only folders named as :func:`save_checkpoint` names them);
    returns the removed paths. Call it only when no process of the run is writing."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    partial = sorted(p for p in root.iterdir() if p.is_dir() and _PARTIAL.fullmatch(p.name))
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    return partial


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
        raise CheckpointError(f"{files['model']}: unreadable ({_first_line(err)})") from None
    ema_state = None
    if (path / EMA_FILE).is_file():
        try:
            ema_state = load_file(path / EMA_FILE)
        except Exception as err:
            raise CheckpointError(f"{path / EMA_FILE}: unreadable ({_first_line(err)})") from None
    try:
        trainer_state = torch.load(files["state"], map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{files['state']}: unreadable ({_first_line(err)})") from None
    _check_trainer_state(trainer_state, files["state"])
    return LoadedCheckpoint(path, trainer_state["step"], model_state, ema_state, trainer_state)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _check_trainer_state(state: object, file: Path) -> None:
    """A trainer state is a dict with an integer step (the rest is checked when it is restored)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: not a trainer state (a {type(state).__name__})")
    if not isinstance(state.get("step"), int) or isinstance(state.get("step"), bool):
        raise CheckpointError(f"{file}: no integer 'step'")


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
