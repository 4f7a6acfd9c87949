"""What a training run carries from one optimizer step to the next, and how a checkpoint restores it.

A checkpoint restores a run exactly: the weights, the optimizer, the learning-rate
schedule, the EMA, the step and epoch counters, the position in the epoch's data order
and every process's RNG states. The per-process counters (accumulation, non-finite
losses in a row, images, skipped samples) start afresh in every process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from epng.engine import checkpoint as ckpt
from epng.engine.distributed import DistContext, all_reduce_sum, gather_objects
from epng.engine.ema import ModelEMA
from epng.errors import CheckpointError, ConfigError
from epng.model import EPNG


@dataclass
class TrainState:
    model: EPNG
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: ModelEMA | None
    # saved in checkpoints
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # the epoch being read (0-based)
    batch_in_epoch: int = 0  # batches of this epoch's order already read
    best_ar: float = -1.0  # best validation AR so far
    # this process only, from its start
    micro: int = 0  # micro-batches accumulated since the last optimizer step
    bad_in_a_row: int = 0  # consecutive non-finite losses
    images: int = 0  # images trained on
    skipped_samples: int = 0  # bad samples left out by the data set

    @property
    def params(self) -> list[torch.Tensor]:
        """The trained parameters (those the optimizer updates)."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]


def lr_at(step: int, steps_per_epoch: int, optim: DictConfig) -> float:
    """Learning rate after ``step`` optimizer steps: linear warm-up, then piecewise constant by epoch."""
    epoch = step // max(steps_per_epoch, 1)
    lr = optim.lr
    for drop in sorted(optim.lr_drops, key=lambda d: d.epoch):
        if epoch >= drop.epoch:
            lr = drop.lr
    if optim.warmup_steps and step < optim.warmup_steps:
        lr *= (step + 1) / optim.warmup_steps
    return lr


def new_train_state(model: EPNG, optim: DictConfig, steps_per_epoch: int) -> TrainState:
    """Step 0 of a run: Adam on the parameters that require gradients, the :func:`lr_at`
    schedule and, when ``optim.ema_decay`` > 0, an EMA of the weights."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    optimizer = torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, steps_per_epoch, optim) / optim.lr)
    ema = ModelEMA(model, optim.ema_decay) if optim.ema_decay > 0 else None
    return TrainState(model, optimizer, scheduler, ema)


def save_train_state(state: TrainState, out: Path, ctx: DistContext, keep: int) -> Path | None:
    """Checkpoint ``state`` as ``out/checkpoints/step_<N>`` (written by the main process, which
    returns its path); every process must call this, as every process's RNG states are saved.

    When the main process cannot write (a full disk), every process raises
    :class:`CheckpointError`, so that none waits for the others.
    """
    rngs = gather_objects(ckpt.rng_state(), ctx)
    path, error = None, None
    if ctx.is_main:
        trainer_state = {
            "step": state.step,
            "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch,
            "best_ar": state.best_ar,
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "rng": rngs,
        }
        ema_state = state.ema.state_dict() if state.ema else None
        try:
            path = ckpt.save_checkpoint(out, state.step, state.model, trainer_state, ema_state, keep)
        except CheckpointError as err:
            error = err
    if all_reduce_sum(torch.tensor(float(error is not None)), ctx).item() > 0:  # also the barrier
        raise error or CheckpointError(f"the main process could not write the checkpoint of step {state.step}")
    return path


def restore_train_state(state: TrainState, loaded: ckpt.LoadedCheckpoint, rank: int) -> None:
    """Put ``state`` and this process's RNGs where the checkpoint left them (a process beyond the
    saved ones, after a change of process count, takes the main process's RNG states)."""
    state.model.load_state_dict(loaded.model_state)
    if state.ema is not None and loaded.ema_state is not None:
        state.ema.load_state_dict(loaded.ema_state)
    saved = loaded.trainer_state
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.step, state.epoch, state.batch_in_epoch = saved["step"], saved["epoch"], saved["batch_in_epoch"]
    state.best_ar = saved["best_ar"]
    ckpt.set_rng_state(saved["rng"][rank] if rank < len(saved["rng"]) else saved["rng"][0])
