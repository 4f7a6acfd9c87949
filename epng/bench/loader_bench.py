"""Data-loader speed: images/s of `PNGDataset` + `collate_png` for 0, 1, 2, ... workers.

Each worker count gets a fresh ``DataLoader`` over the same split; the first batch
(worker start-up, first decodes) is timed apart, then images/s is measured over the
following batches until ``max_batches`` or ``max_seconds``.  Images are decoded with
torchvision.io (`epng.data.transforms.decode_image_file`), resized and normalised as
for the model input; panoptic id maps are read and ground-truth masks built in collate.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from epng.bench.harness import markdown_table
from epng.bench.machine import isa_line, machine_info


def pick_split(root: str | Path, split: str | None) -> str:
    from epng.data.layout import available_splits
    from epng.errors import ConfigError

    splits = available_splits(root)
    if split:
        if split not in splits:
            raise ConfigError(f"--loader-split {split!r}: not under {root}/annotations (found {splits or 'none'})")
        return split
    if not splits:
        raise ConfigError(
            f"--loader {root}: no png_coco_<split>.json under {root}/annotations (make one with `epng synth`)"
        )
    return "train2017" if "train2017" in splits else splits[0]


def run_loader_bench(
    root: str | Path,
    *,
    split: str | None = None,
    preset: str = "epng_r101_bert",
    image_size: int = 640,
    batch_size: int = 8,
    workers: Sequence[int] = (0, 1, 2),
    max_batches: int = 16,
    max_seconds: float = 30.0,
) -> dict:
    """Images/s of the data pipeline for each worker count (JSON-ready dict)."""
    from torch.utils.data import DataLoader

    from epng.data.dataset import PNGDataset, collate_png
    from epng.model import preset_config
    from epng.model.text_encoder import load_tokenizer
    from epng.model.visual_encoder import image_stats

    split = pick_split(root, split)
    config = preset_config(preset, backbone_weights="none", text_weights="random", image_size=image_size)
    mean, std = image_stats(config)
    dataset = PNGDataset(
        root,
        split,
        load_tokenizer(config),
        image_size=image_size,
        resize=config.resize,
        mean=mean,
        std=std,
        max_length=config.max_text_length,
    )
    out = {
        "machine": machine_info("cpu"),
        "root": str(root),
        "split": split,
        "narratives": len(dataset),
        "image_size": image_size,
        "batch_size": batch_size,
        "workers": {},
    }
    for n in workers:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=n, collate_fn=collate_png)
        start = time.perf_counter()
        it = iter(loader)
        try:
            first = next(it)
        except StopIteration:
            continue
        first_s = time.perf_counter() - start
        images, batches = 0, 0
        t0 = time.perf_counter()
        for batch in it:
            images += batch["images"].shape[0]
            batches += 1
            if batches >= max_batches or time.perf_counter() - t0 > max_seconds:
                break
        elapsed = time.perf_counter() - t0
        del it, loader
        out["workers"][n] = {
            "first_batch_s": round(first_s, 3),
            "first_batch_images": int(first["images"].shape[0]),
            "timed_batches": batches,
            "timed_images": images,
            "seconds": round(elapsed, 3),
            "images_per_s": images / elapsed if images else None,
            "images_per_s_per_worker": (images / elapsed / n) if images and n else None,
        }
    return out


def format_loader(results: dict) -> str:
    rows = []
    for n, e in results["workers"].items():
        ips = e["images_per_s"]
        rows.append(
            [
                n,
                f"{e['first_batch_s']:.2f}",
                e["timed_images"],
                f"{ips:.1f}" if ips else "— (too few batches)",
                f"{e['images_per_s_per_worker']:.1f}" if e.get("images_per_s_per_worker") else "—",
            ]
        )
    head = (
        f"data loader: {results['root']} ({results['split']}, {results['narratives']} narratives), "
        f"input {results['image_size']}², batch {results['batch_size']}"
    )
    return (
        head
        + "\n"
        + isa_line(results["machine"])
        + "\n\n"
        + markdown_table(["workers", "first batch (s)", "images timed", "images/s", "images/s per worker"], rows)
    )
