"""CPU peak memory of an inference call, each path in a fresh process.

The parent runs ``python -m epng.bench.memory --memory-child SPEC`` per path; the child
builds the model, prepares that path's predictor in place (no second copy of the weights),
warms it up (geometry tables, allocator, compile), collects garbage and gives freed heap
back to the OS, then reports the peak RSS over ``calls`` calls (`PeakRSS`) as one JSON line
on stdout.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import torch

from epng.bench.config import ModelBenchConfig
from epng.bench.harness import PeakRSS, proc_status_kib
from epng.bench.inputs import build_model, make_batch, make_predictor
from epng.bench.results import MemoryResult


def _trim_heap() -> None:
    """Collect unreachable objects and give freed heap pages back to the OS (glibc), so RSS
    reflects live memory."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_child(spec: dict) -> dict:
    """In this (fresh) process: the `PeakRSS` fields of ``spec["calls"]`` (default 1) calls of
    path ``spec["path"]`` at batch ``spec["batch"]`` in text mode ``spec["mode"]``, after a warm-up
    call, and ``process_peak_mib``: the whole process's peak (build and preparation included);
    ``spec["cfg"]`` is a `ModelBenchConfig.to_dict`."""
    cfg = ModelBenchConfig.from_dict(spec["cfg"])
    model = build_model(cfg)
    predictor = make_predictor(model, cfg, spec["path"], copy=False)
    del model
    b = make_batch(cfg, spec["batch"], torch.device(cfg.device))
    predictor.predict_torch(b)  # warm-up
    setup_peak_kib = proc_status_kib("VmHWM")  # building, preparing and the warm-up call
    _trim_heap()
    meter = PeakRSS()
    meter.start()
    for _ in range(spec.get("calls", 1)):
        if spec["mode"] == "text":
            predictor.clear_text_cache()
        predictor.predict_torch(b)
    out = meter.stop()
    if setup_peak_kib is not None:
        out["process_peak_mib"] = round(max(setup_peak_kib / 1024, out["peak_rss_mib"]), 1)
    return out


def measure_cpu_memory(cfg: ModelBenchConfig, batch: int) -> dict[str, MemoryResult]:
    """Peak RSS per path (text mode, one call at ``batch``), each in a fresh subprocess."""
    out = {}
    for name in cfg.paths:
        spec = {"cfg": cfg.to_dict(), "path": name, "batch": batch, "mode": "text", "calls": 1}
        cmd = [sys.executable, "-m", "epng.bench.memory", "--memory-child", json.dumps(spec)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(120.0, 10 * cfg.max_case_seconds))
        except subprocess.TimeoutExpired:
            out[name] = MemoryResult(error="timed out")
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            out[name] = MemoryResult(error=(proc.stderr.strip().splitlines() or ["failed"])[-1])
        else:
            out[name] = MemoryResult(**json.loads(lines[-1]))
    return out


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--memory-child":
        print(json.dumps(memory_child(json.loads(argv[1]))), flush=True)
        return 0
    print("usage: python -m epng.bench.memory --memory-child SPEC (internal); use `epng bench`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
