"""The EPNG training loop, top to bottom: one process, or many through ``torchrun``.

Each epoch's batches are read from where the run stands in that epoch's order; each one
is a micro-batch of :func:`train_step`. After every optimizer step the periodic actions
run in a fixed order: log, validate, checkpoint (last, so that it holds the best AR so
far). A non-finite loss skips its micro-batch and is logged; ``run.max_bad_steps`` of them
in a row stop the run.

Re-running the same command on the same output folder resumes from the newest intact
checkpoint: weights, optimizer, scheduler, EMA, RNG states and the position in the data order;
the partial checkpoint folders that processes killed during a write left are removed first.

A preemption signal (``run.preempt_signals``, see :mod:`epng.engine.preemption`) received
during the loop stops every process after the same optimizer step; the run writes a
checkpoint of that step and returns with ``preempted`` set (``epng train`` then exits
with status 143).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from epng.engine import checkpoint as ckpt
from epng.engine.config import input_limits, save_config
from epng.engine.distributed import DistContext, barrier, cleanup, init_distributed
from epng.engine.preemption import PreemptionFlag, parse_signals
from epng.engine.train_data import TrainData
from epng.engine.train_hooks import Checkpointer, Every, RunLog, TrainLogger, Validator
from epng.engine.train_state import TrainState, new_train_state, restore_train_state
from epng.engine.train_step import StepOptions, StepSetup, train_step
from epng.errors import CheckpointError, EPNGError
from epng.io.limits import using_limits
from epng.losses import EPNGCriterion
from epng.model import EPNG, build_epng


class TrainingError(EPNGError, RuntimeError):
    """Training cannot go on (e.g. too many non-finite losses in a row)."""


def train(cfg: DictConfig, output_dir: str | Path) -> dict:
    """Train EPNG as ``cfg`` says, writing checkpoints, logs and the final model under ``output_dir``.

    Returns the last step, the best val AR and the last validation's metrics; after a
    preemption signal, ``{"step", "preempted": <signal name or None on the processes that
    did not receive it>, "checkpoint": <its path on the main process>}`` instead.
    """
    ctx = init_distributed(cfg.run.device)
    try:
        with using_limits(input_limits(cfg)):
            return _train(cfg, Path(output_dir), ctx)
    finally:
        cleanup(ctx)


def _train(cfg: DictConfig, out: Path, ctx: DistContext) -> dict:
    torch.manual_seed(cfg.run.seed + ctx.rank)
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    log = RunLog(out, ctx)
    if ctx.is_main:
        sweep(out, log)

    # ---- model, loss, data, optimization state (resumed when the output holds a checkpoint)
    model = build_model(cfg).to(ctx.device)
    criterion = EPNGCriterion.from_config(model.config)
    data = TrainData.build(cfg, model, ctx)
    steps_per_epoch = max(data.batches_per_epoch // cfg.optim.grad_accum, 1)
    total_steps = steps_per_epoch * cfg.optim.epochs
    if cfg.run.max_steps:
        total_steps = min(total_steps, cfg.run.max_steps)
    state = new_train_state(model, cfg.optim, steps_per_epoch)
    resume(state, out, ctx, log)

    # ---- the step and the periodic actions
    setup = StepSetup(wrap_for_processes(model, ctx), criterion, ctx, StepOptions.from_config(cfg.optim))
    if cfg.run.tensorboard:
        log.open_tensorboard()
    logger = TrainLogger(log, ctx, Every(cfg.run.log_every, total_steps), state)
    validator = Validator(data, log, ctx, out, cfg.run.val_every, cfg.optim.amp)
    checkpointer = Checkpointer(out, ctx, Every(cfg.run.checkpoint_every, total_steps), cfg.run.keep_checkpoints)

    # ---- the loop (a preemption signal stops it after an optimizer step, with a checkpoint)
    stop = False
    model.train()
    with PreemptionFlag(parse_signals(cfg.run.preempt_signals)) as preemption:
        while state.step < total_steps and not stop:
            # An epoch starts a new accumulation; gradients of the previous epoch's last,
            # incomplete accumulation are not dropped and join the first step of this one.
            state.micro = 0
            for batch in data.epoch_batches(state, ctx):
                result = train_step(state, batch, setup)
                if not result.finite:
                    skip_nonfinite(state, log, out, cfg.run.max_bad_steps)
                    continue
                if not result.stepped:
                    continue
                logger.maybe_log(state, result.losses)
                validator.maybe_validate(state)
                checkpointer.maybe_save(state)
                stop = preemption.requested(ctx)
                if stop or state.step >= total_steps:
                    break
            else:  # the epoch's data is used up
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                validator.after_epoch(state)
    logger.close()
    if stop:
        return stop_for_preemption(state, checkpointer, preemption, log, ctx)

    # ---- the end: last validation, final models
    validator.after_training(state)
    if ctx.is_main:
        model.save_pretrained(out / "final")
        if state.ema:
            with state.ema.swapped_in(model):
                model.save_pretrained(out / "final_ema")
    summary = data.train_set.report().summary()
    log.event("done", step=state.step, skipped_samples=state.skipped_samples, data=summary)
    log.close()
    barrier(ctx)
    return {"step": state.step, "best_ar": state.best_ar, **validator.metrics}


def sweep(out: Path, log: RunLog) -> None:
    """Remove (and report) the partial checkpoint folders that killed writes left behind."""
    removed = ckpt.sweep_partial_checkpoints(out)
    if removed:
        names = ", ".join(p.name for p in removed)
        print(f"removed {len(removed)} partial checkpoint folder(s) left by interrupted writes: {names}")
        log.event("swept", removed=[str(p) for p in removed])


def stop_for_preemption(
    state: TrainState, checkpointer: Checkpointer, preemption: PreemptionFlag, log: RunLog, ctx: DistContext
) -> dict:
    """Checkpoint the step every process stopped at, and say so."""
    path = checkpointer.save(state)
    received = preemption.received.name if preemption.received else None
    log.event("preempted", step=state.step, signal=received, checkpoint=str(path))
    log.close()
    if ctx.is_main:
        print(
            f"preempted ({received or 'signal received by another process'}) at step {state.step}: "
            f"checkpoint {path}; re-run the same command to resume"
        )
    return {"step": state.step, "preempted": received, "checkpoint": path}


def build_model(cfg: DictConfig) -> EPNG:
    """``cfg.model.preset`` with ``cfg.model.overrides``; input size and resize come from ``cfg.data``."""
    overrides = {
        **OmegaConf.to_container(cfg.model.overrides),
        "image_size": cfg.data.image_size,
        "resize": cfg.data.resize,
    }
    return build_epng(cfg.model.preset, **overrides)


def resume(state: TrainState, out: Path, ctx: DistContext, log: RunLog) -> None:
    """Restore ``state`` from the newest intact checkpoint under ``out``, if there is one."""
    loaded = ckpt.load_latest_checkpoint(out)
    if loaded is None:
        return
    try:
        restore_train_state(state, loaded, ctx.rank)
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as err:
        why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise CheckpointError(
            f"{loaded.path}: does not fit this run's model or optimizer ({why}); "
            "resume with the config that wrote it, or use a new --output"
        ) from None
    if ctx.is_main:
        print(f"resuming from {loaded.path} (step {state.step}, epoch {state.epoch}, batch {state.batch_in_epoch})")
    log.event("resume", step=state.step, checkpoint=str(loaded.path))


def wrap_for_processes(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several processes, else itself."""
    if not ctx.enabled:
        return model
    return DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def skip_nonfinite(state: TrainState, log: RunLog, out: Path, max_bad_steps: int) -> None:
    """Log a micro-batch skipped for its non-finite loss; raise :class:`TrainingError`, naming
    the last good checkpoint, once ``max_bad_steps`` came in a row."""
    log.event("nonfinite_loss", step=state.step, epoch=state.epoch, batch=state.batch_in_epoch)
    if state.bad_in_a_row >= max_bad_steps:
        last = ckpt.list_checkpoints(out)
        raise TrainingError(
            f"{state.bad_in_a_row} non-finite losses in a row at step {state.step}; "
            f"the last good checkpoint is {last[-1] if last else 'none (no checkpoint yet)'}"
        )
