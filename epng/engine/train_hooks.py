"""The periodic actions of a training run, kept apart from the step: logging, validation, checkpoints.

Every process calls every action (each may all-reduce); only the main process writes.
``log.jsonl`` gets one JSON object per event: ``train`` (losses of the global batch, lr,
images/s, skipped samples), ``val`` (the metrics), ``swept`` (partial checkpoint folders
removed at the start), ``resume``, ``nonfinite_loss``, ``preempted`` and ``done``.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from epng.device import Precision
from epng.engine.distributed import DistContext, all_reduce_sum
from epng.engine.evaluator import evaluate_loader
from epng.engine.train_data import TrainData
from epng.engine.train_state import TrainState, save_train_state
from epng.inference import Predictor


class RunLog:
    """``log.jsonl`` and, when asked, TensorBoard scalars under ``tensorboard/`` (main process only)."""

    def __init__(self, out: Path, ctx: DistContext):
        self.path, self.enabled = out / "log.jsonl", ctx.is_main
        self.tensorboard = None

    def open_tensorboard(self) -> None:
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(self.path.parent / "tensorboard"))

    def event(self, event: str, **record) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"event": event, **record}) + "\n")

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.tensorboard:
            for tag, value in values.items():
                self.tensorboard.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()


@dataclass(frozen=True)
class Every:
    """Every ``steps`` optimizer steps and after the run's last one."""

    steps: int
    total_steps: int

    def due(self, step: int) -> bool:
        return step % self.steps == 0 or step == self.total_steps


class TrainLogger:
    """The progress bar, and at its steps the losses of the global batch (the mean over
    processes of their parts), the learning rate and the images per second since the last log."""

    def __init__(self, log: RunLog, ctx: DistContext, every: Every, state: TrainState):
        self.log, self.ctx, self.every = log, ctx, every
        self.progress = tqdm(
            total=every.total_steps, initial=state.step, desc="train", disable=not ctx.is_main, dynamic_ncols=True
        )
        self.t_last, self.images_last = time.perf_counter(), state.images

    def maybe_log(self, state: TrainState, losses: dict[str, torch.Tensor]) -> None:
        """After an optimizer step; ``losses``: the terms of its last micro-batch."""
        self.progress.update(1)
        if not self.every.due(state.step):
            return
        now = time.perf_counter()
        speed = (state.images - self.images_last) * self.ctx.world_size / max(now - self.t_last, 1e-9)
        self.t_last, self.images_last = now, state.images
        means = all_reduce_sum(torch.stack(list(losses.values())).detach(), self.ctx) / self.ctx.world_size
        parts = {k: round(v.item(), 5) for k, v in zip(losses, means)}
        lr = state.scheduler.get_last_lr()[0]
        self.progress.set_postfix(loss=parts["loss"], sal=parts["sal"], lr=f"{lr:.1e}", img_s=f"{speed:.1f}")
        self.log.event(
            "train",
            step=state.step,
            epoch=state.epoch,
            lr=lr,
            images_per_s=speed,
            skipped_samples=state.skipped_samples,
            **parts,
        )
        self.log.scalars({**{f"train/{k}": v for k, v in parts.items()}, "train/lr": lr}, state.step)

    def close(self) -> None:
        self.progress.close()


class Validator:
    """AR on the val split, with the EMA weights when an EMA is kept; a new best AR saves the
    model (those same weights) as ``out/best``. Runs every ``every`` steps, or at the end of
    every epoch when ``every`` is 0, and at the end of the run unless it just ran."""

    def __init__(self, data: TrainData, log: RunLog, ctx: DistContext, out: Path, every: int, amp: Precision):
        self.data, self.log, self.ctx, self.out, self.every, self.amp = data, log, ctx, out, every, amp
        self.last_step = -1  # the step of the last validation
        self.metrics: dict = {}  # the last validation's metrics

    def maybe_validate(self, state: TrainState) -> None:
        """After an optimizer step."""
        if self.every and state.step % self.every == 0:
            self.validate(state)

    def after_epoch(self, state: TrainState) -> None:
        if not self.every and state.step > self.last_step:
            self.validate(state)

    def after_training(self, state: TrainState) -> None:
        if state.step > self.last_step:
            self.validate(state)

    def validate(self, state: TrainState) -> None:
        model, ema = state.model, state.ema
        with ema.swapped_in(model) if ema else nullcontext():
            predictor = Predictor(model, precision=self.amp)  # runs ``model`` itself: fast=False copies nothing
            self.metrics = evaluate_loader(predictor, self.data.val_loader(), self.data.val_set, self.ctx).compute()
            ar = self.metrics["ar"]
            if ar is not None and ar > state.best_ar:
                state.best_ar = ar
                if self.ctx.is_main:
                    model.save_pretrained(self.out / "best")
        self.last_step = state.step
        self.log.event("val", step=state.step, **self.metrics)
        self.log.scalars({"val/ar": ar or 0.0}, state.step)
        if self.ctx.is_main:
            shown = "n/a (no phrases)" if ar is None else f"{ar:.2f}"
            tqdm.write(f"step {state.step}: val AR {shown} (best {state.best_ar:.2f})")
        model.train()


class Checkpointer:
    """``out/checkpoints/step_<N>`` at its steps and after the last one, keeping the newest ``keep``."""

    def __init__(self, out: Path, ctx: DistContext, every: Every, keep: int):
        self.out, self.ctx, self.every, self.keep = out, ctx, every, keep
        self.last: tuple[int, Path | None] | None = None  # (step, path on the main process) of the last save

    def maybe_save(self, state: TrainState) -> None:
        """After an optimizer step (and validation, so that the best AR so far is saved)."""
        if self.every.due(state.step):
            self.save(state)

    def save(self, state: TrainState) -> Path | None:
        """Checkpoint now, unless this step is already saved; the path on the main process, else None."""
        if self.last is None or self.last[0] != state.step:
            self.last = (state.step, save_train_state(state, self.out, self.ctx, self.keep))
        return self.last[1]
