"""A training run's data: the train and val splits, their per-process shards and loaders."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Sampler

from epng.data.dataset import PNGDataset, collate_png
from epng.engine.distributed import DistContext, all_reduce_sum
from epng.engine.evaluator import dataset_for
from epng.engine.sampler import ResumableSampler, ShardSampler
from epng.engine.train_state import TrainState
from epng.model import EPNG


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


@dataclass
class TrainData:
    train_set: PNGDataset
    val_set: PNGDataset
    sampler: ResumableSampler  # this process's shard of each epoch's shuffled order
    val_sampler: ShardSampler
    batch_size: int  # per process
    num_workers: int
    seed: int

    @classmethod
    def build(cls, cfg: DictConfig, model: EPNG, ctx: DistContext) -> TrainData:
        """The splits of ``cfg.data`` as ``model`` reads them; validation reads a prefix of
        ``data.val_max_narratives`` narratives when that is set."""
        data = cfg.data
        common = dict(mode=data.on_bad_sample, max_length=data.max_length, cache_dir=data.cache_dir)
        train_set = dataset_for(model, data.root, data.train_split, **common)
        val_set = dataset_for(model, data.root, data.val_split, max_narratives=data.val_max_narratives, **common)
        return cls(
            train_set,
            val_set,
            ResumableSampler(train_set, ctx.world_size, ctx.rank, seed=cfg.run.seed),
            ShardSampler(len(val_set), ctx.world_size, ctx.rank),
            cfg.optim.batch_size,
            data.num_workers,
            cfg.run.seed,
        )

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.sampler.num_samples / self.batch_size)

    def epoch_batches(self, state: TrainState, ctx: DistContext) -> Iterator[dict]:
        """The rest of epoch ``state.epoch`` from batch ``state.batch_in_epoch`` on, on this process's device.

        Every batch read advances ``state.batch_in_epoch`` and adds its skipped bad samples to
        ``state.skipped_samples``; a batch that came out empty on any process is passed over by
        every process (they must run the same steps).
        """
        self.sampler.set_position(state.epoch, state.batch_in_epoch * self.batch_size)
        for batch in self._loader(self.train_set, self.sampler, self.seed + state.epoch):
            state.batch_in_epoch += 1
            state.skipped_samples += batch["n_skipped"]
            self.train_set.note_skipped(batch)
            if all_reduce_sum(torch.tensor(float(batch["images"].shape[0] == 0)), ctx).item() > 0:
                continue
            yield to_device(batch, ctx.device)

    def val_loader(self) -> DataLoader:
        """This process's shard of the val split, in order."""
        return self._loader(self.val_set, self.val_sampler, self.seed)

    def _loader(self, dataset: PNGDataset, sampler: Sampler, seed: int) -> DataLoader:
        # The loader gets its own generator so that making an iterator never draws from the global
        # RNG: a resumed run then consumes exactly the random numbers of an uninterrupted one.
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_png,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(seed),
            pin_memory=torch.cuda.is_available(),
        )
