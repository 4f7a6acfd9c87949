"""Training engine: exact resume after SIGKILL, damaged checkpoints, torchrun parity, faults."""

from __future__ import annotations

import json
import os
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


def test_sigkill_and_resume_equals_uninterrupted_run(synth_dataset, tmp_path):
    args = overrides(synth_dataset, **{"run.max_steps": 8, "optim.epochs": 10})
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    subprocess.run(train_cmd(straight, args), check=True, env=env(), capture_output=True)

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
    a, b = weights(straight), weights(broken)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [r["step"] for r in log_records(broken, "train")]
    assert steps[-1] == 8


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


def test_two_process_torchrun_matches_one_process(synth_dataset, tmp_path):
    # Backbone fully frozen (BatchNorm statistics are then the same whatever the per-process
    # batch) and no dropout: one process with batch 4 and two with batch 2 see the same
    # global batches and must follow the same loss curve.
    common = {
        "run.max_steps": 4,
        "optim.lr": 1e-4,
        "model.overrides.trainable_stages": 0,
        "model.overrides.dropout": 0.0,
    }
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(train_cmd(one, overrides(synth_dataset, **common)), check=True, env=env(), capture_output=True)
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "epng.cli.main",
        "train",
        "--config",
        CONFIG,
        "--output",
        str(two),
        *overrides(synth_dataset, **common, **{"optim.batch_size": 2}),
    ]
    subprocess.run(torchrun, check=True, env=env(), capture_output=True, timeout=400)

    c1, c2 = ([r["loss"] for r in log_records(run, "train")] for run in (one, two))
    assert len(c1) == len(c2) == 4
    assert c1 == pytest.approx(c2, rel=1e-4)
    m1, m2 = (log_records(run, "val")[-1] for run in (one, two))
    assert m1["n_phrases"] == m2["n_phrases"] and m1["ar"] == pytest.approx(m2["ar"], abs=0.5)


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
