"""Preemption-safe training, piece by piece: the signal flag (one process and two), the sweep of
partial checkpoint folders, the free-space check and a failed write that stops every process.
(The end-to-end SIGTERM and elastic-restart runs are in test_engine_train.py.)"""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import socket
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from epng.engine import checkpoint as ckpt
from epng.engine.distributed import DistContext
from epng.engine.preemption import PREEMPTED_EXIT_CODE, PreemptionFlag, parse_signals
from epng.engine.train_state import new_train_state, save_train_state
from epng.errors import CheckpointError, ConfigError

ONE = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


class Saveable(torch.nn.Linear):
    def save_pretrained(self, path):
        save_file(self.state_dict(), Path(path) / "model.safetensors")


def test_signal_names_are_checked():
    assert parse_signals(["SIGTERM", "usr1", "INT"]) == [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT]
    assert parse_signals([]) == []
    for bad in ("SIGKILL", "STOP", "SIGNOPE"):
        with pytest.raises(ConfigError, match=f"run.preempt_signals: '{bad}' is not a signal a process can catch"):
            parse_signals([bad])
    assert PREEMPTED_EXIT_CODE == 128 + signal.SIGTERM


def test_the_handler_only_sets_a_flag_and_is_removed_afterwards():
    before = signal.getsignal(signal.SIGUSR1)
    with PreemptionFlag([signal.SIGTERM, signal.SIGUSR1]) as flag:
        assert not flag.requested(ONE) and flag.received is None
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal changes nothing
        assert flag.requested(ONE) and flag.received == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Outcome = namedtuple("Outcome", "rank requested_before requested_after received save_error")


def _worker(rank: int, port: int, out_dir: str, queue) -> None:
    """Rank 1 alone receives SIGTERM; then rank 0 alone cannot write its checkpoint."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    ctx = DistContext(rank=rank, world_size=2, local_rank=rank, device=torch.device("cpu"))
    with PreemptionFlag([signal.SIGTERM]) as flag:
        before = flag.requested(ctx)
        if rank == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        after = flag.requested(ctx)
    optim = namedtuple("Optim", "lr weight_decay ema_decay lr_drops warmup_steps")(1e-3, 0.0, 0.0, [], 0)
    state = new_train_state(Saveable(2, 2), optim, steps_per_epoch=1)
    ckpt.check_free_space = _disk_full  # this process's copy of the module: the main process's write fails
    try:
        save_train_state(state, Path(out_dir), ctx, keep=2)
        error = None
    except CheckpointError as err:
        error = str(err)
    dist.destroy_process_group()
    queue.put(Outcome(rank, before, after, flag.received and flag.received.name, error))


def _disk_full(output_dir) -> None:
    raise CheckpointError(f"{output_dir}: not enough free disk space (simulated)")


def test_two_processes_stop_at_the_same_step_and_fail_together(tmp_path):
    """The flag is combined over processes: both see the request that only rank 1 received; and
    when rank 0 cannot write a checkpoint, rank 1 raises too instead of waiting for it."""
    mp = multiprocessing.get_context("fork")
    queue, port = mp.Queue(), _free_port()
    procs = [mp.Process(target=_worker, args=(rank, port, str(tmp_path), queue)) for rank in (0, 1)]
    for p in procs:
        p.start()
    outcomes = sorted((queue.get(timeout=120) for _ in procs), key=lambda o: o.rank)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert [(o.requested_before, o.requested_after) for o in outcomes] == [(False, True), (False, True)]
    assert [o.received for o in outcomes] == [None, "SIGTERM"]
    assert "not enough free disk space (simulated)" in outcomes[0].save_error
    assert "the main process could not write the checkpoint of step 0" in outcomes[1].save_error


def test_sweep_removes_only_the_partial_folders_this_code_names(tmp_path):
    root = tmp_path / "checkpoints"
    ours = [".tmp_step_00000012_ab_3x9zq", ".tmp_k2x9a_1q"]  # current naming; the earlier ".tmp_" + 8 characters
    others = [".tmp_notes", ".tmp_step_12_abcdefgh", ".tmp_ABCDEFGH", "step_00000010"]
    for name in ours + others:
        (root / name).mkdir(parents=True)
        (root / name / "model.safetensors").write_bytes(b"partial")
    (root / ".tmp_file_abc").write_bytes(b"a file, not a folder")
    assert [p.name for p in ckpt.sweep_partial_checkpoints(tmp_path)] == sorted(ours)
    assert sorted(p.name for p in root.iterdir()) == sorted([*others, ".tmp_file_abc"])
    assert ckpt.sweep_partial_checkpoints(tmp_path / "no_run_here") == []


def test_a_killed_write_leaves_a_folder_that_the_sweep_recognises(tmp_path):
    """What save_checkpoint names its temporary folder is what the sweep removes."""
    seen = []

    class Killed(Saveable):
        def save_pretrained(self, path):
            seen.append(Path(path).name)
            raise KeyboardInterrupt  # not cleaned up by a kill; here the name is all we need

    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 7, Killed(2, 2), {"step": 7})
    (tmp_path / "checkpoints" / seen[0]).mkdir()  # as a SIGKILL would have left it
    assert seen[0].startswith(".tmp_step_00000007_")
    assert [p.name for p in ckpt.sweep_partial_checkpoints(tmp_path)] == seen


def test_free_space_is_checked_against_the_last_checkpoint(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, 1, Saveable(64, 64), {"step": 1})
    size = ckpt.folder_bytes(tmp_path / "checkpoints" / "step_00000001")
    assert size > 64 * 64 * 4
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: usage(10 * size, 9 * size, size - 1))
    with pytest.raises(CheckpointError, match=r"not enough free disk space for a checkpoint: .* \(step_00000001\)"):
        ckpt.save_checkpoint(tmp_path, 2, Saveable(64, 64), {"step": 2})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000001"]
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: usage(10 * size, 9 * size, size))
    ckpt.save_checkpoint(tmp_path, 2, Saveable(64, 64), {"step": 2})
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000001", "step_00000002"]


def test_a_disk_that_fills_up_during_a_write_is_a_clear_error(tmp_path):
    class Full(Saveable):
        def save_pretrained(self, path):
            (Path(path) / "model.safetensors").write_bytes(b"trunc")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointError, match=r"step_00000003: the disk filled up during the write"):
        ckpt.save_checkpoint(tmp_path, 3, Full(2, 2), {"step": 3})
    assert list((tmp_path / "checkpoints").iterdir()) == []
