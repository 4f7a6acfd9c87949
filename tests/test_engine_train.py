"""Training engine: exact resume after SIGKILL and SIGTERM, partial checkpoints swept, damaged
checkpoints, torchrun parity and elastic restarts, faults."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from epng.engine import checkpoint as ckpt

CONFIG = "demo_cpu"  # the bundled config (epng.configs)


def overrides(root: Path, **extra) -> list[str]:
    base = {
        "data.root": str(root),
        "data.image_size": 64,
        "data.num_workers": 0,
        "data.val_max_narratives": 2,
        "optim.batch_size": 4,
        "optim.warmup_steps": 0,
        "run.checkpoint_every": 2,
        "run.log_every": 1,
        "run.deterministic": True,
        "run.tensorboard": False,
        "run.val_every": 0,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def train_cmd(out: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "epng.cli.main", "train", "--config", CONFIG, "--output", str(out), *args]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def log_records(run: Path, event: str | None = None) -> list[dict]:
    """The run's log.jsonl records, those of one ``event`` kind if given."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in records if event is None or r["event"] == event]


RESUME_ARGS = {"run.max_steps": 8, "optim.epochs": 10}  # the runs that are interrupted and resumed


@pytest.fixture(scope="module")
def straight_run(synth_dataset, tmp_path_factory) -> Path:
    """An uninterrupted run with RESUME_ARGS: what every interrupted and resumed run must end equal to."""
    out = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(train_cmd(out, overrides(synth_dataset, **RESUME_ARGS)), check=True, env=env(), capture_output=True)
    return out


def assert_same_weights(a_run: Path, b_run: Path) -> None:
    a, b = weights(a_run), weights(b_run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def partial_folders(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(ckpt.TMP_PREFIX))


def test_sigkill_and_resume_equals_uninterrupted_run(synth_dataset, tmp_path, straight_run):
    args = overrides(synth_dataset, **RESUME_ARGS)
    broken = tmp_path / "broken"

    proc = subprocess.Popen(train_cmd(broken, args), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (broken / "checkpoints" / "step_00000004").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (broken / "final").exists(), "killed too late: the run had finished"

    resumed = subprocess.run(train_cmd(broken, args), check=True, env=env(), capture_output=True, text=True)
    assert "resuming from" in resumed.stdout
    assert_same_weights(straight_run, broken)
    steps = [r["step"] for r in log_records(broken, "train")]
    assert steps[-1] == 8
    assert partial_folders(broken) == []


def test_sigterm_stops_with_a_checkpoint_and_resumes_to_the_same_weights(synth_dataset, tmp_path, straight_run):
    """SIGTERM at a random moment after the first logged step: the run checkpoints the step it
    was at and exits 143; the re-run sweeps a partial folder left by a killed write (and only
    that) and ends with the weights of the uninterrupted run, bit for bit."""
    args = overrides(synth_dataset, **RESUME_ARGS)
    out = tmp_path / "preempted"
    proc = subprocess.Popen(
        train_cmd(out, args), env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.time() + 240
    while not (out / "log.jsonl").exists() or not log_records(out, "train"):
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first step was logged"
        time.sleep(0.01)
    time.sleep(random.Random(12).uniform(0.0, 2.0))
    assert proc.poll() is None, "the run finished before it could be preempted"
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=240)
    assert proc.returncode == 143
    assert not (out / "final").exists()
    [stop] = log_records(out, "preempted")
    assert stop["signal"] == "SIGTERM" and 1 <= stop["step"] < 8
    assert stop["checkpoint"] == str(out / "checkpoints" / f"step_{stop['step']:08d}")
    assert ckpt.load_latest_checkpoint(out).step == stop["step"]
    assert log_records(out, "train")[-1]["step"] == stop["step"]
    assert f"preempted (SIGTERM) at step {stop['step']}" in stdout

    # what a process killed while writing a checkpoint leaves, and two folders that are not ours
    (out / "checkpoints" / ".tmp_step_00000009_k2x_9abc").mkdir()
    (out / "checkpoints" / ".tmp_step_00000009_k2x_9abc" / "model.safetensors").write_bytes(b"half")
    (out / "checkpoints" / ".tmp_notes").mkdir()
    (out / "checkpoints" / "mine").mkdir()
    resumed = subprocess.run(train_cmd(out, args), check=True, env=env(), capture_output=True, text=True)
    assert "removed 1 partial checkpoint folder(s) left by interrupted writes: .tmp_step_00000009_k2x_9abc" in (
        resumed.stdout
    )
    assert log_records(out, "swept")[0]["removed"] == [str(out / "checkpoints" / ".tmp_step_00000009_k2x_9abc")]
    assert f"step_{stop['step']:08d}" in resumed.stdout
    assert_same_weights(straight_run, out)
    assert partial_folders(out) == [".tmp_notes"] and (out / "checkpoints" / "mine").is_dir()


def test_damaged_checkpoint_is_reported_and_the_previous_one_used(synth_dataset, tmp_path):
    out = tmp_path / "run"
    subprocess.run(
        train_cmd(out, overrides(synth_dataset, **{"run.max_steps": 4})), check=True, env=env(), capture_output=True
    )
    newest = ckpt.list_checkpoints(out)[-1]
    assert newest.name == "step_00000004"
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated on disk
    with pytest.warns(UserWarning, match=r"step_00000004.*model.safetensors.*unreadable"):
        loaded = ckpt.load_latest_checkpoint(out)
    assert loaded is not None and loaded.step == 2 and loaded.path.name == "step_00000002"
    # training resumes from the intact one and completes
    result = subprocess.run(
        train_cmd(out, overrides(synth_dataset, **{"run.max_steps": 4})),
        check=True,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert "resuming from" in result.stdout and "step_00000002" in result.stdout


def test_checkpoint_write_is_atomic(tmp_path):
    """A write that fails half-way leaves the previous checkpoint alone and no partial folder."""

    class Saveable(torch.nn.Linear):
        def save_pretrained(self, path):
            save_file(self.state_dict(), Path(path) / "model.safetensors")

    class Exploding(torch.nn.Linear):
        def save_pretrained(self, path):
            (Path(path) / "model.safetensors").write_bytes(b"partial")
            raise OSError("disk full")

    ckpt.save_checkpoint(tmp_path, 1, Saveable(2, 2), {"step": 1})
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(tmp_path, 2, Exploding(2, 2), {"step": 2})
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000001"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000001"]
    assert ckpt.load_latest_checkpoint(tmp_path).step == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Backbone fully frozen (BatchNorm statistics are then the same whatever the per-process
# batch) and no dropout: one process with batch 4 and two with batch 2 see the same
# global batches and must follow the same loss curve.
PARITY_ARGS = {
    "run.max_steps": 4,
    "optim.lr": 1e-4,
    "model.overrides.trainable_stages": 0,
    "model.overrides.dropout": 0.0,
}


def torchrun_cmd(out: Path, args: list[str], launcher: list[str], script: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        *launcher,
        *script,
        "train",
        "--config",
        CONFIG,
        "--output",
        str(out),
        *args,
    ]


@pytest.fixture(scope="module")
def two_process_run(synth_dataset, tmp_path_factory) -> Path:
    """An uninterrupted two-process (gloo) run with PARITY_ARGS and batch 2 per process."""
    out = tmp_path_factory.mktemp("two") / "run"
    args = overrides(synth_dataset, **PARITY_ARGS, **{"optim.batch_size": 2})
    launcher = ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    subprocess.run(
        torchrun_cmd(out, args, launcher, ["-m", "epng.cli.main"]),
        check=True,
        env=env(),
        capture_output=True,
        timeout=400,
    )
    return out


def test_two_process_torchrun_matches_one_process(synth_dataset, tmp_path, two_process_run):
    one = tmp_path / "one"
    subprocess.run(train_cmd(one, overrides(synth_dataset, **PARITY_ARGS)), check=True, env=env(), capture_output=True)

    c1, c2 = ([r["loss"] for r in log_records(run, "train")] for run in (one, two_process_run))
    assert len(c1) == len(c2) == 4
    assert c1 == pytest.approx(c2, rel=1e-4)
    m1, m2 = (log_records(run, "val")[-1] for run in (one, two_process_run))
    assert m1["n_phrases"] == m2["n_phrases"] and m1["ar"] == pytest.approx(m2["ar"], abs=0.5)


def test_torchrun_restarts_a_crashed_worker_and_ends_with_the_uninterrupted_weights(
    synth_dataset, tmp_path, two_process_run
):
    """Elastic restart: worker 1 dies after step 3 (one after the step-2 checkpoint); torchrun
    restarts the group, which resumes from step 2 and ends with the weights of the
    uninterrupted two-process run."""
    out = tmp_path / "elastic"
    args = overrides(synth_dataset, **PARITY_ARGS, **{"optim.batch_size": 2})
    launcher = ["--nnodes", "1", "--max-restarts", "2", "--rdzv-backend", "c10d"]
    launcher += ["--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--monitor-interval", "0.2"]
    script = [str(Path(__file__).parent / "helpers_crash_train.py")]
    # TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: with the agent's shared store, restarted workers can read the
    # addresses the previous attempt's workers published (PyTorch issue 135712); see README, Training
    crash_env = {**env(), "EPNG_TEST_CRASH": "1:3", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    run = subprocess.run(torchrun_cmd(out, args, launcher, script), env=crash_env, capture_output=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    # step 3 is never logged by the first group: worker 1 dies before the losses are all-reduced
    events = [(r["event"], r["step"]) for r in log_records(out) if r["event"] in ("train", "resume")]
    assert events == [("train", 1), ("train", 2), ("resume", 2), ("train", 3), ("train", 4)]
    assert_same_weights(two_process_run, out)
    assert partial_folders(out) == []


def test_nonfinite_losses_stop_the_run_with_the_last_good_checkpoint(synth_dataset, tmp_path, monkeypatch):
    from epng.engine.config import load_config
    from epng.engine.trainer import TrainingError, train
    from epng.losses import EPNGCriterion

    real_forward = EPNGCriterion.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        losses = real_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 2:  # the first two steps are fine, then every loss is NaN
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(EPNGCriterion, "forward", poisoned)
    cfg = load_config(
        CONFIG, overrides(synth_dataset, **{"run.max_steps": 20, "run.max_bad_steps": 3, "optim.epochs": 20})
    )
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"3 non-finite losses in a row at step 2.*step_00000002"):
        train(cfg, out)
    events = [r["event"] for r in log_records(out)]
    assert events.count("nonfinite_loss") == 3
    assert ckpt.load_latest_checkpoint(out).step == 2


def test_training_precision_is_fp32_bf16_or_auto():
    from epng.device import PRECISIONS, autocast, bf16_supported
    from epng.engine.config import load_config
    from epng.errors import ConfigError

    assert set(PRECISIONS) == {"fp32", "bf16", "auto"}
    native = bf16_supported("cpu")  # "auto": bf16 exactly where the CPU computes it natively
    for amp, autocast_on_cpu in (("fp32", False), ("bf16", True), ("auto", native)):
        assert load_config(overrides=[f"optim.amp={amp}"]).optim.amp == amp
        with autocast(amp, torch.device("cpu")):
            assert torch.is_autocast_enabled("cpu") == autocast_on_cpu, amp
    with pytest.raises(ConfigError, match=r"optim.amp='none'.*\('none' is now called 'fp32'\)"):
        load_config(overrides=["optim.amp=none"])


def test_ema_is_a_per_step_average_swapped_in_for_evaluation_only():
    from epng.engine.ema import ModelEMA

    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = ModelEMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)  # 0.9 * 1 + 0.1 * 3
    assert torch.allclose(ema.state_dict()["weight"], torch.full((1, 2), 1.2))
    with ema.swapped_in(model):
        assert torch.allclose(model.weight, torch.full((1, 2), 1.2))
    assert torch.equal(model.weight, torch.full((1, 2), 3.0))  # training weights untouched
