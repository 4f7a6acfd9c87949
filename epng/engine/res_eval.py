"""Zero-shot referring expression segmentation with a PNG-trained EPNG.

The whole expression is one phrase; its mask (threshold on the sigmoid, at the original
resolution, through `Predictor.predict_torch`) is compared with the referred object's mask
by :class:`epng.metrics.res_metric.RESMetric`. The code of ``epng res-eval``.

Outputs (when an output folder is given), per evaluated pair, under
``<output>/<dataset>_<split>/``: ``metrics.json``, ``predictions.jsonl`` (one line per
expression: ids, text, intersection, union, IoU and the predicted mask as a COCO RLE at
original resolution) and ``overlays/*.png``; and ``<output>/res_summary.json`` with every
pair's metrics and the pairs that were not found.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from torch.utils.data import DataLoader
from tqdm import tqdm

from epng.data.options import RESIZE_MODES, ErrorMode, check_option
from epng.data.refer import ReferData, ReferReport
from epng.data.refer_dataset import ReferDataset, collate_refer
from epng.data.refer_layout import STANDARD_PAIRS, refer_layout, resolve_names
from epng.data.transforms import as_hw
from epng.errors import ConfigError
from epng.inference import Predictor
from epng.io.images import decode_image_file
from epng.io.json_file import write_json
from epng.io.rle import encode_mask
from epng.metrics.res_metric import RES_THRESHOLDS, RESMetric, threshold_key
from epng.viz import save_phrase_panels

DEFAULT_IMAGE_SIZE = 640
DEFAULT_RESIZE = "square"

_T = TypeVar("_T")


# --------------------------------------------------------------------------- model and input settings


@dataclass(frozen=True)
class InputSettings:
    image_size: tuple[int, int]
    resize: str
    image_size_from: str  # "command line", "checkpoint config" or "default"
    resize_from: str


def input_settings(
    config: object, image_size: int | Sequence[int] | None = None, resize: str | None = None
) -> InputSettings:
    """The input size and resize mode: the command line's if given, else the checkpoint config's
    (its ``image_size`` and ``resize`` fields, when it has them), else 640 square."""

    def pick(given: _T | None, name: str, default: _T) -> tuple[_T, str]:
        if given is not None:
            return given, "command line"
        value = getattr(config, name, None)
        if value is not None:
            return value, "checkpoint config"
        return default, "default"

    size, size_from = pick(image_size, "image_size", DEFAULT_IMAGE_SIZE)
    mode, mode_from = pick(resize, "resize", DEFAULT_RESIZE)
    check_option(f"resize (from the {mode_from})", mode, RESIZE_MODES)
    return InputSettings(as_hw(size), str(mode), size_from, mode_from)


# --------------------------------------------------------------------------- evaluation


@dataclass
class RESResult:
    dataset: str
    split_by: str
    split: str
    metrics: dict  # RESMetric.compute() plus the run's settings
    report: ReferReport
    seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RESOptions:
    """How `evaluate_pairs` reads and scores the refer datasets.

    image_size / resize: the input size (S or (H, W)) and resize mode; ``None``: the
    checkpoint config's, else 640 square. threshold: mask probability threshold. mode:
    ``"strict"`` stops at the first bad ref or image, ``"skip"`` counts and skips it.
    skip_missing: report an absent pair instead of raising. n_overlays: overlay pictures
    per pair (with an output folder).
    """

    split_by: str | None = None
    image_dir: str | Path | None = None
    image_size: int | Sequence[int] | None = None
    resize: str | None = None
    batch_size: int = 8
    threshold: float = 0.5
    num_workers: int = 0
    mode: ErrorMode = "strict"
    n_overlays: int = 0
    skip_missing: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f"threshold must lie in [0, 1), got {self.threshold}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")


def evaluate_res(
    predictor: Predictor,
    dataset: ReferDataset,
    options: RESOptions,
    pair_dir: Path | None = None,
) -> dict:
    """RES metrics of ``predictor`` on ``dataset`` (:func:`epng.metrics.res_metric.res_metrics`, percent).

    A pixel is foreground when its probability at original resolution exceeds
    ``options.threshold``. With ``pair_dir``: one JSON line per expression in
    ``predictions.jsonl`` and ``options.n_overlays`` PNGs (the first expressions in dataset
    order) under ``overlays/``.
    """
    loader = DataLoader(
        dataset,
        batch_size=options.batch_size,
        shuffle=False,
        num_workers=options.num_workers,
        collate_fn=collate_refer,
        pin_memory=predictor.device.type == "cuda",
    )
    metric = RESMetric(RES_THRESHOLDS)
    out_file = None
    if pair_dir is not None:
        pair_dir.mkdir(parents=True, exist_ok=True)
        out_file = open(pair_dir / "predictions.jsonl", "w", encoding="utf-8")
    overlays_left = options.n_overlays if pair_dir is not None else 0
    desc = f"res {dataset.refer.dataset} {dataset.split}"
    try:
        for batch in tqdm(loader, desc=desc, disable=not options.progress, dynamic_ncols=True):
            dataset.note_skipped(batch)
            if batch["images"].shape[0] == 0:
                continue
            masks = predictor.predict_torch(batch, threshold=options.threshold)
            for meta, mask in zip(batch["meta"], masks):
                i = int(meta["narrative"])
                e = dataset.expressions[i]
                pred = mask[0].cpu().numpy()
                gt = dataset.gt_mask(i)
                iou = metric.add(pred, gt)
                if out_file is not None:
                    record = {
                        "index": e.index,
                        "ref_id": e.ref_id,
                        "sent_id": e.sent_id,
                        "ann_id": e.ann_id,
                        "image_id": e.image_id,
                        "expression": e.text,
                        "intersection": metric.intersections[-1],
                        "union": metric.unions[-1],
                        "iou": iou,
                        "segmentation": encode_mask(pred),
                    }
                    out_file.write(json.dumps(record) + "\n")
                if overlays_left > 0:
                    overlays_left -= 1
                    save_phrase_panels(
                        decode_image_file(dataset.image_file(i)).permute(1, 2, 0).numpy(),
                        pred[None],
                        gt[None],
                        [e.text],
                        [iou],
                        pair_dir / "overlays" / f"{e.index:05d}_ref{e.ref_id}_sent{e.sent_id}.png",
                        panel_px=480,
                    )
    finally:
        if out_file is not None:
            out_file.close()
    return metric.compute()


def pair_name(dataset: str, split: str) -> str:
    return f"{dataset}_{split}"


def _missing_pair(
    refer_root: str | Path, dataset_name: str, split: str, options: RESOptions, loaded: dict
) -> str | None:
    """Why the pair cannot be evaluated (``None`` when it can); loads its refs once into ``loaded``."""
    sb = resolve_names(dataset_name, options.split_by or None, split)
    layout = refer_layout(refer_root, dataset_name, sb, options.image_dir)
    absent = layout.missing()
    if absent and options.skip_missing:
        return f"{absent[0]} not found"
    if dataset_name not in loaded:
        loaded[dataset_name] = ReferData.load(refer_root, dataset_name, sb, options.image_dir)
    if options.skip_missing and not loaded[dataset_name].split_counts().get(split):
        return f"{layout.refs_file} has no ref of split {split}"
    return None


def evaluate_pairs(
    predictor: Predictor,
    refer_root: str | Path,
    pairs: Iterable[tuple[str, str]],
    options: RESOptions,
    output: str | Path | None = None,
    checkpoint: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[RESResult], list[dict]]:
    """Evaluate ``predictor`` on each (dataset, split) under ``refer_root``.

    With ``options.skip_missing`` a pair whose dataset files are absent (or whose refs file
    has no ref of that split) is reported in the second return value instead of raising.
    Writes the files listed in the module docstring when ``output`` is given.
    """
    model = predictor.model
    settings = input_settings(model.config, options.image_size, options.resize)
    out_root = Path(output) if output is not None else None
    loaded: dict[str, ReferData] = {}
    results: list[RESResult] = []
    missing: list[dict] = []
    for dataset_name, split in pairs:
        sb = resolve_names(dataset_name, options.split_by or None, split)
        reason = _missing_pair(refer_root, dataset_name, split, options, loaded)
        if reason is not None:
            missing.append({"dataset": dataset_name, "split_by": sb, "split": split, "reason": reason})
            log(f"{dataset_name} {split}: not evaluated ({reason})")
            continue
        start = time.perf_counter()
        input_format = model.input_format(settings.image_size, settings.resize)
        ds = ReferDataset(loaded[dataset_name], split, input_format, mode=options.mode)
        pair_dir = out_root / pair_name(dataset_name, split) if out_root is not None else None
        metrics = evaluate_res(predictor, ds, options, pair_dir)
        report = ds.report()
        metrics = {
            "dataset": dataset_name,
            "split_by": sb,
            "split": split,
            **metrics,
            "units": "percent",
            "precision_rule": "fraction of expressions with IoU >= t",
            "n_skipped": report.n_skipped,
            "skipped": dict(report.skipped),
            "n_partly_truncated": ds.n_partial,
            "threshold": options.threshold,
            "image_size": list(settings.image_size),
            "resize": settings.resize,
            "image_size_from": settings.image_size_from,
            "resize_from": settings.resize_from,
            "checkpoint": checkpoint,
        }
        result = RESResult(dataset_name, sb, split, metrics, report, time.perf_counter() - start)
        if pair_dir is not None:
            write_json(pair_dir / "metrics.json", metrics)
            result.files = {
                "metrics": str(pair_dir / "metrics.json"),
                "predictions": str(pair_dir / "predictions.jsonl"),
            }
        if report.skipped:
            log(report.summary())
        results.append(result)
    if out_root is not None:
        write_json(out_root / "res_summary.json", {"results": [r.metrics for r in results], "missing": missing})
    return results, missing


def format_res_table(results: Sequence[RESResult], missing: Sequence[dict] = ()) -> str:
    """One row per evaluated pair: expressions, mIoU, oIoU, P@0.5..0.9 (percent); then the missing pairs."""
    keys = [threshold_key(t) for t in RES_THRESHOLDS]
    header = ["dataset", "split", "exprs", "mIoU", "oIoU", *[f"P@{k}" for k in keys]]
    rows = [
        [
            r.dataset,
            r.split,
            str(r.metrics["n_expressions"]),
            f"{r.metrics['mIoU']:.2f}",
            f"{r.metrics['oIoU']:.2f}",
            *[f"{r.metrics['precision'][k]:.2f}" for k in keys],
        ]
        for r in results
    ]
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[c]) if c < 2 else cell.rjust(widths[c]) for c, cell in enumerate(row))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for m in missing:
        lines.append(f"{m['dataset']} {m['split']}: not evaluated ({m['reason']})")
    return "\n".join(lines)


__all__ = [
    "InputSettings",
    "RESResult",
    "STANDARD_PAIRS",
    "evaluate_pairs",
    "evaluate_res",
    "format_res_table",
    "input_settings",
    "pair_name",
    "RESOptions",
]
