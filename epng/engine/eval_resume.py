"""Evaluation that loses nothing: `epng evaluate` killed and re-run on the same output continues where it stopped.

``predictions.jsonl`` grows batch by batch. After every batch, once its lines have reached
the operating system, ``eval_progress.json`` records (atomically) how many batches are
done, how many bytes of predictions they wrote and which overlays were drawn, under the
identity of the evaluation (the model's weights and options, the split, its narratives and
the batch size). A re-run with the same identity cuts the predictions file back to the
recorded bytes (a line half written when the process died goes), skips the batches done
and appends; the phrases of the kept lines are scored again from their RLEs, which give
back the exact masks. The remaining batches are the very batches of an uninterrupted run,
so the output files come out identical. A different identity, or a predictions file
shorter than recorded, starts over. With several processes (torchrun) every run starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import torch

from epng.engine.distributed import DistContext
from epng.engine.sampler import ShardSampler
from epng.errors import PredictionError
from epng.io.json_file import write_json
from epng.metrics.scorer import PNGEvaluator

if TYPE_CHECKING:
    from epng.data.dataset import PNGDataset
    from epng.inference import Predictor

PROGRESS_FILE = "eval_progress.json"
PREDICTIONS_FILE = "predictions.jsonl"


class Writer(Protocol):
    """What progress tracking needs of the predictions writer (`PredictionWriter`)."""

    overlays: list[Path]

    def flush(self) -> int:
        """Hand the lines written so far to the operating system; the file's size in bytes."""
        ...


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every parameter and buffer (names, dtypes, shapes and values)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def evaluation_identity(predictor: Predictor, dataset: PNGDataset, split: str, batch_size: int) -> dict[str, Any]:
    """What must be the same for a re-run to continue an evaluation: the model and its
    inference options, the split and its narratives (record indices), and the batch size."""
    indices = hashlib.blake2b(json.dumps([n.index for n in dataset.narratives]).encode(), digest_size=16)
    return {
        "model": model_fingerprint(predictor.model),
        "options": repr(predictor.options),
        "threshold": predictor.threshold,
        "device": str(predictor.device),
        "split": split,
        "narratives_file": str(Path(dataset.layout.narratives_json).resolve()),
        "narratives": indices.hexdigest(),
        "batch_size": batch_size,
    }


@dataclass
class EvalProgress:
    """The progress of one evaluation in ``out_dir`` (``enabled`` False: no tracking, start over)."""

    out_dir: Path
    identity: dict[str, Any]
    enabled: bool
    batches_done: int = 0
    predictions_bytes: int = 0  # of predictions.jsonl, up to the end of the last batch done
    overlays: list[str] = field(default_factory=list)
    kept_bytes: int = 0  # the bytes of predictions.jsonl kept from the previous run

    @property
    def path(self) -> Path:
        return self.out_dir / PROGRESS_FILE

    @property
    def resumed(self) -> bool:
        """True when this run continues a previous one (its predictions are appended to)."""
        return self.kept_bytes > 0 or self.batches_done > 0

    @classmethod
    def start(cls, out_dir: str | Path, identity: dict[str, Any], ctx: DistContext) -> EvalProgress:
        """The progress to continue from in ``out_dir`` (the predictions file cut back to it), or
        a fresh start (any earlier progress file removed)."""
        out_dir = Path(out_dir)
        progress = cls(out_dir, identity, enabled=not ctx.enabled)
        if not progress.enabled:
            if ctx.is_main:
                progress.path.unlink(missing_ok=True)
            return progress
        predictions = out_dir / PREDICTIONS_FILE
        try:
            saved = json.loads(progress.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        usable = (
            isinstance(saved, dict)
            and saved.get("identity") == identity
            and isinstance(saved.get("batches_done"), int)
            and isinstance(saved.get("predictions_bytes"), int)
            and isinstance(saved.get("overlays", []), list)
            and min(saved["batches_done"], saved["predictions_bytes"]) >= 0
            and predictions.is_file()
            and predictions.stat().st_size >= saved["predictions_bytes"]
        )
        if not usable:
            if saved is not None:
                print(f"{progress.path}: from another evaluation (or damaged): starting over")
            progress.path.unlink(missing_ok=True)
            return progress
        os.truncate(predictions, saved["predictions_bytes"])
        progress.batches_done = saved["batches_done"]
        progress.predictions_bytes = progress.kept_bytes = saved["predictions_bytes"]
        progress.overlays = [str(p) for p in saved.get("overlays", [])]
        print(f"continuing the evaluation in {out_dir} after {progress.batches_done} batches")
        return progress

    def sampler(self, n_items: int, ctx: DistContext) -> Iterable[int]:
        """The dataset indices still to evaluate (this process's shard when not tracking)."""
        if not self.enabled:
            return ShardSampler(n_items, ctx.world_size, ctx.rank)
        return range(min(self.batches_done * self.identity["batch_size"], n_items), n_items)

    def track(self, loader: Iterable, writer: Writer) -> _Tracked:
        """``loader``'s batches; after each one is consumed (its predictions written), the progress is saved."""
        writer.overlays = [Path(p) for p in self.overlays]
        return _Tracked(loader, self, writer)

    def commit(self, writer: Writer) -> None:
        """One more batch done: record it (atomically, after its lines reached the operating system)."""
        self.batches_done += 1
        self.predictions_bytes = writer.flush()
        self.overlays = [str(p) for p in writer.overlays]
        if not self.enabled:
            return
        record = {
            "identity": self.identity,
            "batches_done": self.batches_done,
            "predictions_bytes": self.predictions_bytes,
            "overlays": self.overlays,
        }
        write_json(self.path, record, indent=1)

    def score_kept(self, evaluator: PNGEvaluator) -> None:
        """Score the predictions kept from the previous run (the first ``kept_bytes`` of the file)."""
        if not self.kept_bytes:
            return
        path = self.out_dir / PREDICTIONS_FILE
        with open(path, "rb") as f:
            for line_no, line in enumerate(_lines(f, self.kept_bytes), start=1):
                try:
                    entry = json.loads(line)
                    keys = (entry["narrative"], entry["phrase_index"], entry["segmentation"], entry["image_id"])
                    evaluator.add_rle(*keys)
                except (ValueError, KeyError, TypeError, PredictionError) as err:
                    raise PredictionError(
                        f"{path}: line {line_no}: cannot continue the evaluation from it ({err}); "
                        f"remove {self.path} to start over"
                    ) from None


def _lines(f: BinaryIO, n_bytes: int) -> Iterator[bytes]:
    """The non-blank lines among the first ``n_bytes`` of binary file ``f``."""
    left = n_bytes
    while left > 0:
        line = f.readline(left)
        if not line:
            return
        left -= len(line)
        if line.strip():
            yield line


class _Tracked(Sized):
    """Iterates a loader, committing the progress when the consumer asks for the next batch
    (the previous one is then fully written) and after the last one."""

    def __init__(self, loader: Iterable, progress: EvalProgress, writer: Writer):
        self.loader, self.progress, self.writer = loader, progress, writer

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for batch in self.loader:
            yield batch
            self.progress.commit(self.writer)
