"""`epng bench`: speed, FLOPs and memory of an EPNG preset with random weights (no download).

Two inference paths, each a named `Predictor`:

* **plain** -- ``Predictor(model, precision="fp32")``: the model's own forward in fp32
  without autograd, then the model's post-processing;
* **fast** -- ``Predictor(model, fast=True, precision=...)`` on a prepared copy (bf16 where
  the precision says so, channels-last, BatchNorm folding, stride-16 head, optional
  torch.compile), then the same post-processing.

* **runtime paths** -- ``Predictor(model, runtime=...)`` for each of ``runtimes``
  (``"onnxruntime"``, ``"openvino"``; and ``"<runtime>-int8"`` with ``int8``): the exported
  graphs (`epng.inference.exported`), exported once per run into ``export_dir`` (a temporary
  folder by default) so that the memory subprocesses reuse them.

All paths run side by side, interleaved call by call; with ``fast`` every figure gets a
plain / fast ratio, and every other path a plain / path ratio. Inputs (`epng.bench.inputs`):
``batch`` images of ``image_size``²
(standard-normal pixels, i.e. already normalised), narratives of ``tokens`` word pieces
with ``phrases`` grounded phrases of 3 word pieces (random ids, distinct per sample),
masks produced at ``orig_size``; inputs are on the device before timing.

Phases, in order (each skipped once ``deadline_seconds`` have passed): latency at
``batch``, fast-vs-plain agreement, throughput at ``throughput_batch``, FLOPs, per-stage
times, CPU peak memory (a fresh subprocess per path), training step.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from epng.bench.config import ModelBenchConfig
from epng.bench.inputs import build_model, make_batch, make_predictor
from epng.bench.machine import machine_info
from epng.bench.measure import Predictors, measure_agreement, measure_flops, measure_inference, measure_stages
from epng.bench.memory import measure_cpu_memory
from epng.bench.results import BenchResults
from epng.bench.train_step import measure_train
from epng.errors import ConfigError
from epng.model import EPNG


def run_model_bench(
    cfg: ModelBenchConfig,
    log: Callable[[str], None] | None = None,
    on_progress: Callable[[BenchResults], None] | None = None,
) -> BenchResults:
    """Run every measurement ``cfg`` asks for.

    ``on_progress(results)`` is called after every phase with the results so far (the CLI
    writes its ``--json`` file there, so that a run cut short keeps what it measured)."""
    t_start = time.perf_counter()
    progress = on_progress or (lambda results: None)
    log = log or (lambda msg: print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True))
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    machine = machine_info(device)
    t0 = time.perf_counter()
    model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    results = BenchResults(machine, cfg, params, round(time.perf_counter() - t0, 2))
    log(f"built {cfg.preset} ({params / 1e6:.1f} M parameters) in {results.build_seconds} s")
    inference = not cfg.train_only
    with tempfile.TemporaryDirectory(prefix="epng-bench-onnx-") as tmp:
        if cfg.runtime_paths and cfg.export_dir is None:
            cfg.export_dir = tmp  # the memory subprocesses load the graphs exported here
        try:
            return _run(cfg, model, results, inference, log, progress, t_start)
        finally:
            if cfg.export_dir == tmp:
                cfg.export_dir = None


def _run(
    cfg: ModelBenchConfig,
    model: EPNG,
    results: BenchResults,
    inference: bool,
    log: Callable[[str], None],
    progress: Callable[[BenchResults], None],
    t_start: float,
) -> BenchResults:
    """The phases of `run_model_bench` on the built ``model``."""
    device = torch.device(cfg.device)
    predictors: Predictors = {}
    for name in cfg.paths if inference else ():
        t_prepare = time.perf_counter()
        predictors[name] = make_predictor(model, cfg, name)
        seconds = round(time.perf_counter() - t_prepare, 2)
        if name == "fast":
            results.fast_prepare_seconds = seconds
        elif name in cfg.runtime_paths:
            results.runtime_prepare_seconds[name] = seconds
            log(f"{name}: exported graphs ready in {seconds} s")
        results.labels[name] = predictors[name].report.label()

    def checkpoint() -> None:
        if "fast" in predictors:
            results.fast_report = predictors["fast"].report  # compile times and LPA routes as they stand
        progress(results)

    def phase(name: str, wanted: bool = True) -> bool:
        """Whether to run phase ``name``; one past the deadline is noted in ``results.skipped``."""
        if not wanted:
            return False
        if cfg.deadline_seconds is not None and time.perf_counter() - t_start > cfg.deadline_seconds:
            results.skipped.append(name)
            log(f"skipping {name}: past the {cfg.deadline_seconds:.0f} s deadline")
            return False
        return True

    b1 = make_batch(cfg, cfg.batch, device)
    if phase("latency", inference):
        log(f"latency: batch {cfg.batch}, {' vs '.join(predictors)} ...")
        results.latency = measure_inference(predictors, b1, cfg, device)
        checkpoint()
    if phase("agreement", "plain" in predictors and len(predictors) > 1):
        if "fast" in predictors:
            results.agreement = measure_agreement(predictors, b1)
        for name in cfg.runtime_paths:
            results.runtime_agreement[name] = measure_agreement(predictors, b1, name)
        checkpoint()
    if phase("throughput", inference and cfg.throughput_batch > 0):
        log(f"throughput: batch {cfg.throughput_batch} ...")
        bt = make_batch(cfg, cfg.throughput_batch, device, seed=1)
        results.throughput = measure_inference(predictors, bt, cfg, device)
        del bt
        checkpoint()
    if phase("flops", inference and cfg.flops):
        log("FLOPs ...")
        results.flops = measure_flops(predictors, b1)
        checkpoint()
    if phase("stages", inference and cfg.stages):
        log("stage breakdown ...")
        results.stages = measure_stages(predictors, b1, cfg, device)
        checkpoint()
    checkpoint()
    predictors.clear()  # free the prepared copy and the runtimes' sessions before the memory children and training
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if phase("cpu_memory", inference and cfg.memory and device.type == "cpu"):
        log("peak RSS (fresh subprocess per path) ...")
        results.cpu_memory = measure_cpu_memory(cfg, cfg.batch)
        progress(results)
    if phase("train", cfg.train or cfg.train_only):
        log(f"training step: batch {cfg.train_batch or cfg.batch} ...")
        results.train = measure_train(model, cfg, device)
        progress(results)
    results.load_avg_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    log("done")
    results.total_seconds = round(time.perf_counter() - t_start, 1)
    return results
