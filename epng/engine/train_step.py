"""One training micro-batch: forward, loss, backward, and every ``grad_accum`` micro-batches the optimizer step."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from epng.data.inputs import model_inputs
from epng.device import Precision, autocast
from epng.engine.distributed import DistContext, all_reduce_sum
from epng.engine.train_state import TrainState
from epng.losses import EPNGCriterion


@dataclass(frozen=True)
class StepOptions:
    grad_accum: int  # optimizer step every N micro-batches; each micro-batch's loss is divided by N
    clip_grad_norm: float  # 0 = no clipping
    amp: Precision  # autocast of the forward pass

    @classmethod
    def from_config(cls, optim: DictConfig) -> StepOptions:
        return cls(optim.grad_accum, optim.clip_grad_norm, optim.amp)


@dataclass(frozen=True)
class StepSetup:
    """What a step runs, besides the state it changes."""

    module: nn.Module  # the model, wrapped in DistributedDataParallel when there are several processes
    criterion: EPNGCriterion
    ctx: DistContext
    options: StepOptions

    @property
    def count_reducer(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """With several processes, the loss terms are normalised by the unit counts of the global
        batch (the mean over processes of each one's counts), so that N processes with batch b
        follow the loss curve of one process with batch N*b."""
        return self._mean_over_processes if self.ctx.enabled else None

    def _mean_over_processes(self, counts: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(counts, self.ctx) / self.ctx.world_size


@dataclass
class StepResult:
    losses: dict[str, torch.Tensor]  # this micro-batch's loss terms on this process ("loss": their weighted sum)
    finite: bool  # False: the loss was not finite on some process; the accumulated gradients were dropped
    stepped: bool  # True: this micro-batch completed an accumulation and the optimizer stepped


def train_step(state: TrainState, batch: dict, setup: StepSetup) -> StepResult:
    """Train on one micro-batch (already on the device).

    The gradients of ``loss / grad_accum`` accumulate; the ``grad_accum``-th micro-batch
    clips them (if asked), steps the optimizer and the schedule, updates the EMA and counts
    the step. Processes synchronise gradients on that micro-batch only. A loss that is not
    finite on any process makes every process drop the gradients accumulated so far and
    start the accumulation again.
    """
    ctx, options = setup.ctx, setup.options
    last_micro = state.micro + 1 == options.grad_accum
    with nullcontext() if (last_micro or not ctx.enabled) else setup.module.no_sync():
        with autocast(options.amp, ctx.device):
            outputs = setup.module(*model_inputs(batch))
        losses = setup.criterion(outputs, batch["gt_masks"], batch["phrase_mask"], setup.count_reducer)
        if all_reduce_sum(torch.isfinite(losses["loss"]).float(), ctx).item() < ctx.world_size:
            state.optimizer.zero_grad(set_to_none=True)
            state.micro = 0
            state.bad_in_a_row += 1
            return StepResult(losses, finite=False, stepped=False)
        (losses["loss"] / options.grad_accum).backward()
    state.images += batch["images"].shape[0]
    state.micro += 1
    if not last_micro:
        return StepResult(losses, finite=True, stepped=False)

    state.bad_in_a_row, state.micro = 0, 0
    if options.clip_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(state.params, options.clip_grad_norm)
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    if state.ema:
        state.ema.update(state.model)
    state.step += 1
    return StepResult(losses, finite=True, stepped=True)
