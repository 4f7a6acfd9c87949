"""Data-loader speed and memory: start-up, images/s and memory of `PNGDataset` + `collate_png`
for 0, 1, 2, ... workers.

Start-up is the construction of the dataset (parse and tokenize, or map a cache). With a
cache dir (``cache_dir`` or ``$EPNG_CACHE``) the dataset is constructed twice: the first
time builds the cache unless it is there already, the second maps it. The process's peak
RSS (``ru_maxrss``) is noted after each start-up and at the end.

Each worker count gets a fresh ``DataLoader`` over the same split; the first batch
(worker start-up, first decodes) is timed apart, then images/s is measured over the
following batches until ``max_batches`` or ``max_seconds``. Then, while the workers are
still alive, the proportional set size (PSS, ``/proc/<pid>/smaps_rollup``) of this process
and of its worker processes is summed: memory shared between them (mapped files,
copy-on-write pages) counts once in total. Images are decoded, resized and normalised as
for the model input; panoptic id maps are read and ground-truth masks built in collate.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from epng.bench.harness import markdown_table
from epng.bench.machine import isa_line, machine_info

if TYPE_CHECKING:
    from epng.data.dataset import PNGDataset


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


def peak_rss_mib() -> float:
    """The high-water mark of this process's resident memory, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started (the children of all its threads)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # a thread that ended meanwhile
            continue
    return out


def pss_mib(pid: int) -> float | None:
    """Proportional set size of a process in MiB (None when the kernel does not report it)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def process_tree_pss() -> dict | None:
    """PSS of this process and of its children (the DataLoader workers), and their total, in MiB."""
    main = pss_mib(os.getpid())
    if main is None:
        return None
    children = [p for p in (pss_mib(c) for c in child_pids(os.getpid())) if p is not None]
    return {"main": main, "workers": children, "total": round(main + sum(children), 1)}


def _startup(make: Callable[[], PNGDataset]) -> tuple[PNGDataset, dict]:
    start = time.perf_counter()
    dataset = make()
    seconds = time.perf_counter() - start
    return dataset, {"seconds": round(seconds, 2), "cache": dataset.cache_status, "peak_rss_mib": peak_rss_mib()}


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
    cache_dir: str | Path | None = None,
) -> dict:
    """Start-up, images/s and memory of the data pipeline for each worker count (JSON-ready dict)."""
    from torch.utils.data import DataLoader

    from epng.data.cache import cache_dir_from
    from epng.data.dataset import PNGDataset, collate_png
    from epng.data.input_format import InputFormat
    from epng.model import preset_config
    from epng.model.text_encoder import load_tokenizer
    from epng.model.visual_encoder import image_stats

    load_start = os.getloadavg()[0]
    split = pick_split(root, split)
    config = preset_config(preset, backbone_weights="none", text_weights="random", image_size=image_size)
    mean, std = image_stats(config)
    input_format = InputFormat(load_tokenizer(config), image_size, config.resize, mean, std, config.max_text_length)

    def make() -> PNGDataset:
        return PNGDataset(root, split, input_format, cache_dir=cache_dir)

    dataset, first = _startup(make)
    startups = [first]
    if cache_dir_from(cache_dir) is not None:
        del dataset
        dataset, again = _startup(make)
        startups.append(again)
    out = {
        "machine": machine_info("cpu"),
        "root": str(root),
        "split": split,
        "narratives": len(dataset),
        "image_size": image_size,
        "batch_size": batch_size,
        "cache_folder": None if dataset.cache_folder is None else str(dataset.cache_folder),
        "startup": startups,
        "workers": {},
    }
    for n in workers:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=n, collate_fn=collate_png)
        start = time.perf_counter()
        it = iter(loader)
        try:
            first_batch = next(it)
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
        pss = process_tree_pss()  # the workers are alive until the iterator goes
        del it, loader
        out["workers"][n] = {
            "first_batch_s": round(first_s, 3),
            "first_batch_images": int(first_batch["images"].shape[0]),
            "timed_batches": batches,
            "timed_images": images,
            "seconds": round(elapsed, 3),
            "images_per_s": images / elapsed if images else None,
            "images_per_s_per_worker": (images / elapsed / n) if images and n else None,
            "pss_mib": pss,
        }
    out["peak_rss_mib"] = peak_rss_mib()
    out["load_avg"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    return out


def format_loader(results: dict) -> str:
    rows = []
    for n, e in results["workers"].items():
        ips = e["images_per_s"]
        pss = e.get("pss_mib")
        rows.append(
            [
                n,
                f"{e['first_batch_s']:.2f}",
                e["timed_images"],
                f"{ips:.1f}" if ips else "— (too few batches)",
                f"{e['images_per_s_per_worker']:.1f}" if e.get("images_per_s_per_worker") else "—",
                f"{pss['total']:,.0f} ({pss['main']:,.0f} + {' + '.join(f'{w:,.0f}' for w in pss['workers']) or '0'})"
                if pss
                else "—",
            ]
        )
    head = (
        f"data loader: {results['root']} ({results['split']}, {results['narratives']} narratives), "
        f"input {results['image_size']}², batch {results['batch_size']}"
    )
    startup = "; ".join(
        f"{s['seconds']:.1f} s ({s['cache']}, peak RSS {s['peak_rss_mib']:,.0f} MiB)" for s in results["startup"]
    )
    load = results["load_avg"]
    lines = [
        head,
        isa_line(results["machine"]),
        f"start-up: {startup}" + (f"; cache {results['cache_folder']}" if results["cache_folder"] else ""),
        f"peak RSS of the process: {results['peak_rss_mib']:,.0f} MiB; load average {load['start']:.2f} at start, "
        f"{load['end']:.2f} at end",
    ]
    table = markdown_table(
        [
            "workers",
            "first batch (s)",
            "images timed",
            "images/s",
            "images/s per worker",
            "PSS MiB: total (main + workers)",
        ],
        rows,
    )
    return "\n".join(lines) + "\n\n" + table
