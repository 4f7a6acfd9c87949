"""The EPNG training loop, top to bottom: one process, or many through ``torchrun``.

Re-running the same command on the same output folder resumes from the newest
intact checkpoint: weights, optimizer, scheduler, EMA, RNG states and the
position in the data order.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from epng.data.dataset import PNGDataset, collate_png, model_inputs
from epng.engine import checkpoint as ckpt
from epng.engine.config import save_config
from epng.engine.distributed import DistContext, all_reduce_sum, barrier, cleanup, gather_objects, init_distributed
from epng.engine.ema import ModelEMA
from epng.engine.evaluator import dataset_for, evaluate_loader
from epng.engine.precision import autocast_for
from epng.engine.sampler import ResumableSampler, ShardSampler
from epng.errors import ConfigError, EPNGError
from epng.losses import EPNGCriterion
from epng.model import EPNG, build_epng


class TrainingError(EPNGError, RuntimeError):
    """Training cannot go on (e.g. too many non-finite losses in a row)."""


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


def build_loader(dataset: PNGDataset, batch_size: int, sampler, num_workers: int, seed: int) -> DataLoader:
    # The loader gets its own generator so that making an iterator never draws from the global
    # RNG: a resumed run then consumes exactly the random numbers of an uninterrupted one.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_png,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=torch.cuda.is_available(),
    )


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


class JsonlLog:
    """Append-only JSON Lines log (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, **record) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def train(cfg: DictConfig, output_dir: str | Path) -> dict:
    """Train EPNG as ``cfg`` says, writing checkpoints, logs and the final model under ``output_dir``."""
    ctx = init_distributed(cfg.run.device)
    try:
        return _train(cfg, Path(output_dir), ctx)
    finally:
        cleanup(ctx)


def _train(cfg: DictConfig, out: Path, ctx: DistContext) -> dict:
    device = ctx.device
    torch.manual_seed(cfg.run.seed + ctx.rank)
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    log = JsonlLog(out / "log.jsonl", ctx.is_main)

    # ---- model, loss, data -------------------------------------------------------------
    overrides = {
        **OmegaConf.to_container(cfg.model.overrides),
        "image_size": cfg.data.image_size,
        "resize": cfg.data.resize,
    }
    model: EPNG = build_epng(cfg.model.preset, **overrides).to(device)
    criterion = EPNGCriterion.from_config(model.config)
    data = dict(mode=cfg.data.on_bad_sample, max_length=cfg.data.max_length)
    train_set = dataset_for(model, cfg.data.root, cfg.data.train_split, **data)
    val_set = dataset_for(model, cfg.data.root, cfg.data.val_split, max_narratives=cfg.data.val_max_narratives, **data)
    sampler = ResumableSampler(train_set, ctx.world_size, ctx.rank, seed=cfg.run.seed)
    val_sampler = ShardSampler(len(val_set), ctx.world_size, ctx.rank)
    batches_per_epoch = math.ceil(sampler.num_samples / cfg.optim.batch_size)
    steps_per_epoch = max(batches_per_epoch // cfg.optim.grad_accum, 1)
    total_steps = steps_per_epoch * cfg.optim.epochs
    if cfg.run.max_steps:
        total_steps = min(total_steps, cfg.run.max_steps)

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, steps_per_epoch, cfg.optim) / cfg.optim.lr
    )
    ema = ModelEMA(model, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
    # with several processes, loss terms are normalised by the unit counts of the global batch
    count_reducer = (lambda c: all_reduce_sum(c, ctx) / ctx.world_size) if ctx.enabled else None

    # ---- resume ------------------------------------------------------------------------
    step, epoch, batch_in_epoch, best_ar = 0, 0, 0, -1.0
    resumed = ckpt.load_latest_checkpoint(out)
    if resumed is not None:
        model.load_state_dict(resumed.model_state)
        if ema is not None and resumed.ema_state is not None:
            ema.load_state_dict(resumed.ema_state)
        state = resumed.trainer_state
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        best_ar = state["best_ar"]
        ckpt.set_rng_state(state["rng"][ctx.rank] if ctx.rank < len(state["rng"]) else state["rng"][0])
        if ctx.is_main:
            print(f"resuming from {resumed.path} (step {step}, epoch {epoch}, batch {batch_in_epoch})")
        log.write(event="resume", step=step, checkpoint=str(resumed.path))

    ddp = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if ctx.enabled
        else model
    )
    writer = _tensorboard(out, cfg) if ctx.is_main else None

    def save(tag_step: int) -> Path | None:
        rngs = gather_objects(ckpt.rng_state(), ctx)  # every process's RNG states
        if not ctx.is_main:
            barrier(ctx)
            return None
        state = {
            "step": tag_step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "best_ar": best_ar,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rngs,
        }
        path = ckpt.save_checkpoint(
            out, tag_step, model, state, ema.state_dict() if ema else None, cfg.run.keep_checkpoints
        )
        barrier(ctx)
        return path

    def validate() -> None:
        """AR on the val split (EMA weights if kept); the best model is kept in ``out/best``."""
        nonlocal best_ar, last_val_step, last_metrics
        loader = build_loader(val_set, cfg.optim.batch_size, val_sampler, cfg.data.num_workers, cfg.run.seed)
        with ema.swapped_in(model) if ema else nullcontext():
            last_metrics = evaluate_loader(model, loader, val_set, ctx, amp=cfg.optim.amp).compute()
            if last_metrics["ar"] is not None and last_metrics["ar"] > best_ar:
                best_ar = last_metrics["ar"]
                if ctx.is_main:
                    model.save_pretrained(out / "best")
        last_val_step = step
        log.write(event="val", step=step, **last_metrics)
        if writer:
            writer.add_scalar("val/ar", last_metrics["ar"] or 0.0, step)
        if ctx.is_main:
            tqdm.write(f"step {step}: val AR {last_metrics['ar']:.2f} (best {best_ar:.2f})")
        model.train()

    # ---- the loop ----------------------------------------------------------------------
    model.train()
    bad_in_a_row, n_skipped_samples, last_val_step, last_metrics = 0, 0, -1, {}
    progress = tqdm(total=total_steps, initial=step, desc="train", disable=not ctx.is_main, dynamic_ncols=True)
    t_last, images_since = time.perf_counter(), 0
    while step < total_steps:
        sampler.set_position(epoch, batch_in_epoch * cfg.optim.batch_size)
        loader = build_loader(train_set, cfg.optim.batch_size, sampler, cfg.data.num_workers, cfg.run.seed + epoch)
        micro = 0  # micro-batches accumulated since the last optimizer step
        for batch in loader:
            batch_in_epoch += 1
            n_skipped_samples += batch["n_skipped"]
            train_set.note_skipped(batch)
            # every process must take the same branch, or DDP waits forever
            if all_reduce_sum(torch.tensor(float(batch["images"].shape[0] == 0)), ctx).item() > 0:
                continue
            batch = to_device(batch, device)
            last_micro = micro + 1 == cfg.optim.grad_accum
            with nullcontext() if (last_micro or not ctx.enabled) else ddp.no_sync():
                with autocast_for(cfg.optim.amp, device):
                    outputs = ddp(*model_inputs(batch))
                losses = criterion(outputs, batch["gt_masks"], batch["phrase_mask"], count_reducer)
                if all_reduce_sum(torch.isfinite(losses["loss"]).float(), ctx).item() < ctx.world_size:
                    bad_in_a_row += 1
                    optimizer.zero_grad(set_to_none=True)
                    micro = 0
                    log.write(event="nonfinite_loss", step=step, epoch=epoch, batch=batch_in_epoch)
                    if bad_in_a_row >= cfg.run.max_bad_steps:
                        last = ckpt.list_checkpoints(out)
                        raise TrainingError(
                            f"{bad_in_a_row} non-finite losses in a row at step {step}; "
                            f"the last good checkpoint is {last[-1] if last else 'none (no checkpoint yet)'}"
                        )
                    continue
                (losses["loss"] / cfg.optim.grad_accum).backward()
            images_since += batch["images"].shape[0]
            micro += 1
            if not last_micro:
                continue

            # ---- optimizer step
            bad_in_a_row, micro = 0, 0
            if cfg.optim.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema:
                ema.update(model)
            step += 1
            progress.update(1)

            if step % cfg.run.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                speed = images_since * ctx.world_size / max(now - t_last, 1e-9)
                t_last, images_since = now, 0
                # the loss of the whole global batch is the mean over processes of their (rescaled) parts
                parts = {
                    k: round(v.item(), 5)
                    for k, v in zip(
                        losses, all_reduce_sum(torch.stack(list(losses.values())).detach(), ctx) / ctx.world_size
                    )
                }
                lr = scheduler.get_last_lr()[0]
                progress.set_postfix(loss=parts["loss"], sal=parts["sal"], lr=f"{lr:.1e}", img_s=f"{speed:.1f}")
                log.write(
                    event="train",
                    step=step,
                    epoch=epoch,
                    lr=lr,
                    images_per_s=speed,
                    skipped_samples=n_skipped_samples,
                    **parts,
                )
                if writer:
                    for k, v in parts.items():
                        writer.add_scalar(f"train/{k}", v, step)
                    writer.add_scalar("train/lr", lr, step)
            if cfg.run.val_every and step % cfg.run.val_every == 0:
                validate()
            if step % cfg.run.checkpoint_every == 0 or step == total_steps:
                save(step)
            if step >= total_steps:
                break
        else:  # the epoch's data is used up
            epoch, batch_in_epoch = epoch + 1, 0
            if not cfg.run.val_every and step > last_val_step:
                validate()
    progress.close()

    if step > last_val_step:
        validate()
    if ctx.is_main:
        model.save_pretrained(out / "final")
        if ema:
            with ema.swapped_in(model):
                model.save_pretrained(out / "final_ema")
    log.write(event="done", step=step, skipped_samples=n_skipped_samples, data=train_set.report().summary())
    if writer:
        writer.close()
    barrier(ctx)
    return {"step": step, "best_ar": best_ar, **last_metrics}


def _tensorboard(out: Path, cfg: DictConfig):
    if not cfg.run.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out / "tensorboard"))
