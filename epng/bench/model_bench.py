"""`epng bench`: speed, FLOPs and memory of an EPNG preset with random weights (no download).

Two inference paths:

* **plain** -- the fp32 eager model as `epng evaluate` / `Predictor` run it without amp:
  ``model(...)`` under ``torch.no_grad``, the model's own head (x4 upsample of the
  C-channel map, then the phrase kernels), `binary_masks` post-processing;
* **fast** -- `epng.engine.fast_inference.FastEPNG` (bf16 where native, channels-last,
  Conv-BN folding, stride-16 head, optional torch.compile) + the same post-processing.

With ``fast=True`` both run side by side, interleaved call by call, and every figure
gets a plain/fast ratio.  Inputs: ``batch`` images of ``image_size``² (standard-normal
pixels, i.e. already normalised), narratives of ``tokens`` word pieces with ``phrases``
grounded phrases of 3 word pieces (random ids, distinct per sample), original image
size ``orig_size`` (masks are produced at that size).  Inputs live on the device
before timing (no host-to-device copy in the figures).

"text" cases clear the text encoder's frozen-feature cache before every call (the
narrative is new: the transformer runs); "cached" cases reuse it (the transformer is
skipped; what `epng train` sees from its second epoch and a demo sees for a repeated
narrative).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch

from epng.bench.harness import (
    ModuleTimer,
    PeakRSS,
    Stats,
    count_flops,
    fmt_ms,
    fmt_ratio,
    machine_info,
    markdown_table,
    paired_ratio,
    sync,
    time_interleaved,
)
from epng.data.dataset import model_inputs

if TYPE_CHECKING:
    from epng.model.visual_encoder import VisualFeatures

PATHS = ("plain", "fast")
TEXT_MODES = ("text", "cached")


@dataclass
class ModelBenchConfig:
    """What `epng bench` measures (see the module docstring)."""

    preset: str = "epng_r101_bert"
    image_size: int = 640
    orig_size: tuple[int, int] = (480, 640)
    batch: int = 1
    throughput_batch: int = 8
    device: str = "cpu"
    repeats: int = 5
    warmup: int = 1
    max_case_seconds: float = 60.0
    phrases: int = 8
    tokens: int = 96
    fast: bool = False  # compare plain and fast side by side
    fast_only: bool = False  # only the fast path (e.g. a GPU run where the plain one is known)
    dtype: str = "auto"
    channels_last: bool = True
    fold_bn: bool = True
    text_bf16: bool = False  # fast path in bf16: also the text encoder (FastEPNG text_bf16)
    compile: bool = False
    compile_mode: str | None = None
    compile_scopes: tuple[str, ...] = ("visual", "communicator")
    train: bool = False
    train_batch: int | None = None  # default: batch
    train_repeats: int = 3
    stages: bool = True
    flops: bool = True
    memory: bool = True
    seed: int = 0
    train_only: bool = False  # skip every inference measurement
    deadline_seconds: float | None = None  # start no new phase after this many seconds
    overrides: dict = field(default_factory=dict)  # extra EPNGConfig fields

    @property
    def paths(self) -> tuple[str, ...]:
        if self.fast_only:
            return ("fast",)
        return PATHS if (self.fast or self.compile) else ("plain",)


# --------------------------------------------------------------------------- model and inputs


def build_model(cfg: ModelBenchConfig) -> torch.nn.Module:
    """The preset with random weights (no download), in eval mode on ``cfg.device``."""
    from epng.model import build_epng

    torch.manual_seed(cfg.seed)
    overrides = {"backbone_weights": "none", "text_weights": "random", "image_size": cfg.image_size, **cfg.overrides}
    return build_epng(cfg.preset, **overrides).to(cfg.device).eval()


def make_batch(cfg: ModelBenchConfig, batch: int, device: torch.device | str, seed: int = 0) -> dict:
    """A `collate_png`-like batch: ``batch`` samples, distinct narratives, gt masks for training."""
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + seed)
    t, p, s = cfg.tokens, cfg.phrases, cfg.image_size
    if t < 3 * p + 2:
        raise ValueError(f"--tokens {t} is too short for {p} phrases of 3 word pieces")
    ids = torch.randint(1000, 29000, (batch, t), generator=gen)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    ptm = torch.zeros(batch, p, t, dtype=torch.bool)
    stride = (t - 2) // p
    for k in range(p):
        ptm[:, k, 1 + k * stride : 1 + k * stride + 3] = True
    h, w = cfg.orig_size
    gt = torch.rand(batch, p, s // 4, s // 4, generator=gen) > 0.7
    gt = torch.nn.functional.interpolate(gt[:, :, None].float().flatten(0, 1), size=(s, s), mode="nearest")
    out = {
        "images": torch.randn(batch, 3, s, s, generator=gen),
        "input_ids": ids,
        "attention_mask": torch.ones(batch, t, dtype=torch.long),
        "phrase_token_mask": ptm,
        "phrase_mask": torch.ones(batch, p, dtype=torch.bool),
        "gt_masks": gt.view(batch, p, s, s).bool(),
    }
    out = {k: v.to(device) for k, v in out.items()}
    out["meta"] = [{"phrase_indices": list(range(p)), "orig_size": (h, w), "valid_size": (s, s)} for _ in range(batch)]
    return out


# --------------------------------------------------------------------------- the two paths


class PlainPath:
    """The fp32 eager model, as `epng evaluate` runs it without amp."""

    name = "plain"

    def __init__(self, model: torch.nn.Module) -> None:
        from epng.engine.postprocess import binary_masks

        self.model = model
        self._binary_masks = binary_masks
        self.label = "plain fp32 eager"

    def clear_text_cache(self) -> None:
        self.model.text_encoder.clear_cache()

    def logits(self, b: dict) -> torch.Tensor:
        with torch.no_grad():
            return self.model(*model_inputs(b)).mask_logits

    def masks(self, b: dict) -> list[torch.Tensor]:
        return self.post(self.logits(b), b)

    # stages
    def visual(self, b: dict) -> VisualFeatures:
        with torch.no_grad():
            return self.model.visual_encoder(b["images"])

    def text(self, b: dict) -> torch.Tensor:
        with torch.no_grad():
            return self.model.text_encoder(
                b["input_ids"], b["attention_mask"], b["phrase_token_mask"], b["phrase_mask"]
            )

    def communicator(self, visual: torch.Tensor, phrases: torch.Tensor, b: dict) -> torch.Tensor:
        with torch.no_grad():
            return self.model.communicator(visual, phrases, b["phrase_mask"])

    def head(self, visual: torch.Tensor, phrases: torch.Tensor, fine: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            return self.model.head(visual, phrases, fine).mask_logits

    def post(self, logits: torch.Tensor, b: dict) -> list[torch.Tensor]:
        with torch.no_grad():
            return self._binary_masks(logits, tuple(b["images"].shape[-2:]), b["meta"])

    @property
    def communicator_module(self) -> torch.nn.Module:
        return self.model.communicator


class FastPath(PlainPath):
    """`FastEPNG` on a prepared copy of the model."""

    name = "fast"

    def __init__(self, model: torch.nn.Module, cfg: ModelBenchConfig, copy: bool = True) -> None:
        from epng.engine.fast_inference import FastEPNG

        super().__init__(model)
        start = time.perf_counter()
        self.fast = FastEPNG(
            model,
            cfg.device,
            dtype=cfg.dtype,
            channels_last=cfg.channels_last,
            fold_bn=cfg.fold_bn,
            text_bf16=cfg.text_bf16,
            compile=cfg.compile,
            compile_scopes=cfg.compile_scopes,
            compile_mode=cfg.compile_mode,
            copy=copy,
        )
        self.prepare_seconds = time.perf_counter() - start
        self.model = self.fast.model
        self.clear_text_cache()
        rep = self.fast.report
        parts = [
            rep.dtype,
            "bf16 text" if rep.text_dtype == "bf16" else None,
            "channels-last" if rep.channels_last else None,
            f"{rep.folded_bn} BN folded" if rep.folded_bn else None,
            "stride-16 head" if rep.stride16_head else None,
            f"compile({'+'.join(rep.compile_scopes)})" if rep.compile_scopes else None,
        ]
        self.label = "fast (" + ", ".join(p for p in parts if p) + ")"

    def logits(self, b: dict) -> torch.Tensor:
        return self.fast(*model_inputs(b))

    def visual(self, b: dict) -> VisualFeatures:
        return self.fast.encode_visual(b["images"])

    def text(self, b: dict) -> torch.Tensor:
        return self.fast.encode_text(b["input_ids"], b["attention_mask"], b["phrase_token_mask"], b["phrase_mask"])

    def communicator(self, visual: torch.Tensor, phrases: torch.Tensor, b: dict) -> torch.Tensor:
        return self.fast.communicate(visual, phrases, b["phrase_mask"])

    def head(self, visual: torch.Tensor, phrases: torch.Tensor, fine: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        return self.fast.head(visual, phrases, fine)

    def post(self, logits: torch.Tensor, b: dict) -> list[torch.Tensor]:
        return self.fast.masks(logits, b["images"].shape[-2:], b["meta"])


def make_paths(model: torch.nn.Module, cfg: ModelBenchConfig) -> dict[str, PlainPath]:
    paths: dict[str, PlainPath] = {}
    for name in cfg.paths:
        paths[name] = PlainPath(model) if name == "plain" else FastPath(model, cfg)
    return paths


# --------------------------------------------------------------------------- measurements


def _case_fns(paths: dict[str, PlainPath], b: dict) -> tuple[dict[str, Callable], dict[str, Callable]]:
    """(timed callables, their setups) for the text/cached x path cases on batch ``b``."""
    fns, setup = {}, {}
    for name, path in paths.items():
        fns[f"{name}/text"] = lambda path=path: path.masks(b)
        setup[f"{name}/text"] = path.clear_text_cache
        fns[f"{name}/cached"] = lambda path=path: path.masks(b)
    return fns, setup


def _cuda_peak(fn: Callable[[], object], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def measure_inference(paths: dict[str, PlainPath], b: dict, cfg: ModelBenchConfig, device: torch.device) -> dict:
    """Latency (or per-batch time) of each path x text mode, interleaved."""
    fns, setup = _case_fns(paths, b)
    for path in paths.values():  # fill the caches for the "cached" cases
        path.masks(b)
    timed = time_interleaved(
        fns, repeats=cfg.repeats, warmup=cfg.warmup, device=device, max_seconds=cfg.max_case_seconds, setup=setup
    )
    batch = b["images"].shape[0]
    out: dict = {}
    for key, t in timed.items():
        name, mode = key.split("/")
        entry = t.to_dict()
        entry["batch"] = batch
        entry["images_per_s"] = batch / t.stats.median if t.times else math.nan
        out.setdefault(name, {})[mode] = entry
    if device.type == "cuda" and cfg.memory:
        for key, fn in fns.items():
            name, mode = key.split("/")
            if key in setup:
                setup[key]()
            out[name][mode]["peak_memory_mib"] = _cuda_peak(fn, device)
    if "plain" in out and "fast" in out:
        for mode in TEXT_MODES:
            p, f = timed[f"plain/{mode}"], timed[f"fast/{mode}"]
            out.setdefault("ratio", {})[mode] = {
                "median": out["plain"][mode]["median"] / out["fast"][mode]["median"],
                "min": out["plain"][mode]["min"] / out["fast"][mode]["min"],
                "paired_median": paired_ratio(p.times, f.times),
                "cpu_median": statistics.median(p.cpu_times) / statistics.median(f.cpu_times)
                if p.cpu_times and f.cpu_times
                else None,
            }
    return out


def measure_agreement(paths: dict[str, PlainPath], b: dict) -> dict:
    """How far the fast path's output is from the plain one on batch ``b``: share of equal
    mask pixels at original size, largest probability difference at stride 4."""
    from epng.engine.postprocess import binary_masks

    plain, fast = paths["plain"], paths["fast"]
    ref, out = plain.logits(b).float(), fast.logits(b).float()
    size = tuple(b["images"].shape[-2:])
    ref_m, out_m = binary_masks(ref, size, b["meta"]), binary_masks(out, size, b["meta"])
    equal = sum(int((x == y).sum()) for x, y in zip(ref_m, out_m))
    total = sum(x.numel() for x in ref_m)
    return {
        "mask_pixels_equal": equal / total,
        "mask_pixels_on_plain": sum(int(x.sum()) for x in ref_m) / total,
        "max_prob_diff_stride4": float((ref.sigmoid() - out.sigmoid()).abs().max()),
        "note": "random weights: logits pile up near 0, so this is a pessimistic figure for a trained model",
    }


def measure_stages(paths: dict[str, PlainPath], b: dict, cfg: ModelBenchConfig, device: torch.device) -> dict:
    """Per-stage time at batch ``b``: visual, text (cold cache), communicator, head,
    post-processing -- explicit stage calls, interleaved across paths -- and, inside the
    timed communicator calls, its LPA / cross-attention / FFN sub-layers through forward
    hooks (perf_counter on CPU, CUDA events on GPU; absent when a compiled communicator
    does not fire hooks)."""
    fns, setup, sub = {}, {}, {}
    for name, path in paths.items():
        path.clear_text_cache()
        v = path.visual(b)
        ph = path.text(b)
        c = path.communicator(v.fused, ph, b)
        lg = path.head(c, ph, v.fine)
        layers = list(getattr(path.communicator_module, "layers", []))
        groups = {g: [getattr(layer, g) for layer in layers if hasattr(layer, g)] for g in ("lpa", "cross", "ffn")}
        timer = ModuleTimer(groups, device)
        rounds: list[dict[str, float]] = []
        sub[name] = (timer, rounds)

        def comm(path=path, v=v, ph=ph, timer=timer, rounds=rounds):
            timer.reset()
            with timer:
                path.communicator(v.fused, ph, b)
            if all(timer.calls().values()):
                rounds.append(timer.seconds())

        fns[f"{name}/visual"] = lambda path=path: path.visual(b)
        fns[f"{name}/text"] = lambda path=path: path.text(b)
        setup[f"{name}/text"] = path.clear_text_cache
        fns[f"{name}/communicator"] = comm
        fns[f"{name}/head"] = lambda path=path, c=c, ph=ph, v=v: path.head(c, ph, v.fine)
        fns[f"{name}/postprocess"] = lambda path=path, lg=lg: path.post(lg, b)
    timed = time_interleaved(
        fns, repeats=cfg.repeats, warmup=cfg.warmup, device=device, max_seconds=cfg.max_case_seconds, setup=setup
    )
    out: dict = {}
    for key, t in timed.items():
        name, stage = key.split("/")
        out.setdefault(name, {})[stage] = t.to_dict()
    for name, (_, rounds) in sub.items():
        timed_rounds = rounds[cfg.warmup :] or rounds
        for g in ("lpa", "cross", "ffn"):
            if timed_rounds and g in timed_rounds[0]:
                out[name][f"communicator.{g}"] = Stats.of([r[g] for r in timed_rounds]).to_dict()
    return out


def measure_flops(paths: dict[str, PlainPath], b: dict) -> dict:
    """FLOPs per image of each stage (FlopCounterMode on one sample); the fast path's
    stages run eagerly for the count (compiled code is not dispatched op by op) and LPA
    runs its plain eager route (the same matmuls as any route)."""
    one = {k: v[:1] for k, v in b.items()}
    out = {}
    for name, path in paths.items():
        stages = {}
        fast = getattr(path, "fast", None)
        saved = None
        if fast is not None:  # count the eager twins of compiled stages
            saved = (fast._visual.compiled, fast._comm.compiled)
            fast._visual.compiled = fast._comm.compiled = None
        # LPA on its plain eager route while counting: fused kernels (FlexAttention, CPU flash)
        # are not all known to FlopCounterMode, and every route does the same dense attention work
        lpas = [m for m in path.communicator_module.modules() if hasattr(m, "backend") and hasattr(m, "route")]
        backends = [m.backend for m in lpas]
        for m in lpas:
            m.backend = "eager"
        try:
            path.clear_text_cache()
            v = path.visual(one)
            ph = path.text(one)
            c = path.communicator(v.fused, ph, one)
            stages["visual"] = count_flops(lambda: path.visual(one))
            path.clear_text_cache()
            stages["text"] = count_flops(lambda: path.text(one))
            stages["communicator"] = count_flops(lambda: path.communicator(v.fused, ph, one))
            stages["head"] = count_flops(lambda: path.head(c, ph, v.fine))
        finally:
            if saved is not None:
                fast._visual.compiled, fast._comm.compiled = saved
            for m, backend in zip(lpas, backends):
                m.backend = backend
        stages["total_text"] = sum(stages[k] for k in ("visual", "text", "communicator", "head"))
        stages["total_cached"] = stages["total_text"] - stages["text"]
        out[name] = stages
    return out


def measure_train(model: torch.nn.Module, cfg: ModelBenchConfig, device: torch.device) -> dict:
    """Training step (forward + loss + backward + Adam step) in fp32 and, where bf16 is
    native and the fast path is compared, under bf16 autocast (`epng train --amp bf16`)."""
    from epng.engine.fast_inference import bf16_supported
    from epng.losses import EPNGCriterion

    batch = cfg.train_batch or cfg.batch
    b = make_batch(cfg, batch, device, seed=7)
    criterion = EPNGCriterion.from_config(model.config)
    variants = {"fp32": False}
    if (cfg.fast or cfg.compile or cfg.fast_only) and bf16_supported(device):
        variants["bf16_autocast"] = True
    if cfg.fast_only and "bf16_autocast" in variants:
        variants.pop("fp32")
    model.train()
    model.text_encoder.clear_cache()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizers = {name: torch.optim.Adam(params, lr=1e-5) for name in variants}

    def step(name: str) -> None:
        opt = optimizers[name]
        ctx = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if variants[name]
            else torch.autocast(device.type, enabled=False)
        )
        with ctx:
            out = model(*model_inputs(b))
        loss = criterion(out, b["gt_masks"], b["phrase_mask"])["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    fns = {name: (lambda name=name: step(name)) for name in variants}
    timed = time_interleaved(fns, repeats=cfg.train_repeats, warmup=1, device=device, max_seconds=cfg.max_case_seconds)
    out = {"batch": batch, "trainable_params": sum(p.numel() for p in params)}
    for name, t in timed.items():
        entry = t.to_dict()
        entry["images_per_s"] = batch / t.stats.median if t.times else math.nan
        if device.type == "cuda" and cfg.memory:
            entry["peak_memory_mib"] = _cuda_peak(fns[name], device)
        out[name] = entry
    model.eval()
    del optimizers
    return out


# --------------------------------------------------------------------------- CPU memory (subprocess)


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc), so RSS reflects live memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _memory_child(spec: dict) -> dict:
    """In a fresh process: build, prepare, warm up, then the peak RSS of ``calls`` calls."""
    cfg = ModelBenchConfig(
        **{k: (tuple(v) if k in ("orig_size", "compile_scopes") else v) for k, v in spec["cfg"].items()}
    )
    device = torch.device(cfg.device)
    model = build_model(cfg)
    path: PlainPath = FastPath(model, cfg, copy=False) if spec["path"] == "fast" else PlainPath(model)
    del model
    b = make_batch(cfg, spec["batch"], device)
    path.clear_text_cache()
    path.masks(b)  # warm-up (geometry tables, allocator, compile)
    _trim_heap()
    meter = PeakRSS()
    meter.start()
    for _ in range(spec.get("calls", 1)):
        if spec["mode"] == "text":
            path.clear_text_cache()
        path.masks(b)
    return meter.stop()


def measure_cpu_memory(cfg: ModelBenchConfig, batch: int) -> dict:
    """Peak RSS per path (text mode, ``batch``), each in a fresh subprocess."""
    out = {}
    spec_cfg = asdict(cfg)
    for name in cfg.paths:
        spec = {"cfg": spec_cfg, "path": name, "batch": batch, "mode": "text", "calls": 1}
        cmd = [sys.executable, "-m", "epng.bench.model_bench", "--memory-child", json.dumps(spec)]
        env = dict(os.environ)
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=max(120.0, 10 * cfg.max_case_seconds)
            )
        except subprocess.TimeoutExpired:
            out[name] = {"error": "timed out"}
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            out[name] = {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
        else:
            out[name] = json.loads(lines[-1])
    return out


# --------------------------------------------------------------------------- the whole benchmark


def run_model_bench(
    cfg: ModelBenchConfig,
    log: Callable[[str], None] | None = None,
    on_progress: Callable[[dict], None] | None = None,
) -> dict:
    """Run every measurement ``cfg`` asks for; returns the JSON-ready results.

    ``on_progress(results)`` is called after every phase with the results so far (the CLI
    writes its ``--json`` file there, so that a run cut short keeps what it measured)."""
    t_start = time.perf_counter()
    progress = on_progress or (lambda results: None)
    log = log or (lambda msg: print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True))
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        from epng.errors import ConfigError

        raise ConfigError("--device cuda: no CUDA device is available")
    results: dict = {"machine": machine_info(device), "config": asdict(cfg)}
    t0 = time.perf_counter()
    model = build_model(cfg)
    results["build_seconds"] = round(time.perf_counter() - t0, 2)
    results["params"] = sum(p.numel() for p in model.parameters())
    log(f"built {cfg.preset} ({results['params'] / 1e6:.1f} M parameters) in {results['build_seconds']} s")
    paths = make_paths(model, cfg) if not cfg.train_only else {}
    if "fast" in paths:
        results["fast_prepare_seconds"] = round(paths["fast"].prepare_seconds, 2)
    results["labels"] = {name: p.label for name, p in paths.items()}

    def checkpoint() -> None:
        if "fast" in paths:
            results["fast_report"] = paths["fast"].fast.report.to_dict()
        progress(results)

    def phase(name: str, wanted: bool = True) -> bool:
        """Whether to run phase ``name`` (False, noted in results["skipped"], past the deadline)."""
        if not wanted:
            return False
        if cfg.deadline_seconds is not None and time.perf_counter() - t_start > cfg.deadline_seconds:
            results.setdefault("skipped", []).append(name)
            log(f"skipping {name}: past the {cfg.deadline_seconds:.0f} s deadline")
            return False
        return True

    inference = not cfg.train_only
    b1 = make_batch(cfg, cfg.batch, device)
    if phase("latency", inference):
        log(f"latency: batch {cfg.batch}, {' vs '.join(paths)} ...")
        results["latency"] = measure_inference(paths, b1, cfg, device)
        checkpoint()
    if phase("agreement", inference and "plain" in paths and "fast" in paths):
        results["agreement"] = measure_agreement(paths, b1)
        checkpoint()
    if phase("throughput", inference and bool(cfg.throughput_batch and cfg.throughput_batch > 0)):
        log(f"throughput: batch {cfg.throughput_batch} ...")
        bt = make_batch(cfg, cfg.throughput_batch, device, seed=1)
        results["throughput"] = measure_inference(paths, bt, cfg, device)
        del bt
        checkpoint()
    if phase("flops", inference and cfg.flops):
        log("FLOPs ...")
        results["flops"] = measure_flops(paths, b1)
        results["achieved"] = achieved_tflops(results)
        checkpoint()
    if phase("stages", inference and cfg.stages):
        log("stage breakdown ...")
        results["stages"] = measure_stages(paths, b1, cfg, device)
        checkpoint()
    if phase("cpu_memory", inference and cfg.memory and device.type == "cpu"):
        log("peak RSS (fresh subprocess per path) ...")
        results["cpu_memory"] = measure_cpu_memory(cfg, cfg.batch)
        checkpoint()
    checkpoint()
    del paths
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if phase("train", cfg.train or cfg.train_only):
        log(f"training step: batch {cfg.train_batch or cfg.batch} ...")
        results["train"] = measure_train(model, cfg, device)
        progress(results)
    results["load_avg_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    log("done")
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    return results


def achieved_tflops(results: dict) -> dict:
    """Achieved TFLOP/s of every timed case (FLOPs/image x images/s) and its share of the bf16 peak."""
    peak = results["machine"].get("bf16_peak_tflops")
    out: dict = {"peak_tflops": peak, "peak_source": results["machine"].get("bf16_peak_source")}
    for kind in ("latency", "throughput"):
        for name, modes in results.get(kind, {}).items():
            if name not in results["flops"]:
                continue
            for mode, entry in modes.items():
                flops = results["flops"][name]["total_text" if mode == "text" else "total_cached"]
                tflops = flops * entry["images_per_s"] / 1e12
                out.setdefault(kind, {}).setdefault(name, {})[mode] = {
                    "tflops": tflops,
                    "fraction_of_peak": tflops / peak if peak else None,
                }
    return out


# --------------------------------------------------------------------------- report


def _lat_cell(entry: dict | None) -> str:
    if not entry:
        return "—"
    return f"{fmt_ms(entry['median'])} / {fmt_ms(entry['p90'])}"


def format_results(results: dict) -> str:
    """Markdown tables of a `run_model_bench` result."""
    cfg = results["config"]
    names = [n for n in PATHS if n in results.get("latency", {})]
    labels = results.get("labels", {})
    lines = []
    m = results["machine"]
    lines.append(
        f"**{cfg['preset']}** (random weights), input {cfg['image_size']}², original {cfg['orig_size'][0]}×{cfg['orig_size'][1]}, "
        f"{cfg['phrases']} phrases / {cfg['tokens']} word pieces — {m['device_name']} "
        f"({m['cpu_cores_usable']} usable cores, {m['torch_threads']} torch threads, torch {m['torch']}, {m['date_utc']}; "
        f"load average {m.get('load_avg_1m') or 0:.1f} at start, {results.get('load_avg_end') or 0:.1f} at end)"
    )
    for n in names:
        lines.append(f"- {n}: {labels.get(n, n)}")
    lines.append("")
    compare = len(names) == 2
    headers = ["case"] + [f"{n}" for n in names] + (["speed-up (plain/fast)"] if compare else [])
    rows = []
    lat = results.get("latency", {})
    thr = results.get("throughput", {})
    for mode, what in (("text", "text encoder run"), ("cached", "cached text features")):
        if names and all(mode in lat.get(n, {}) for n in names):
            b = lat[names[0]][mode]["batch"]
            row = [f"latency, batch {b}, {what} (ms, median / p90)"] + [_lat_cell(lat[n][mode]) for n in names]
            if compare:
                row.append(fmt_ratio(lat["ratio"][mode]["median"]))
            rows.append(row)
            row = [f"  best of {lat[names[0]][mode]['n']} (ms, min)"] + [fmt_ms(lat[n][mode]["min"]) for n in names]
            if compare:
                row.append(fmt_ratio(lat["ratio"][mode]["min"]))
            rows.append(row)
            if lat[names[0]][mode].get("cpu_s_median") is not None and str(results["machine"].get("device")) == "cpu":
                row = ["  process CPU time per call (ms, median)"] + [
                    fmt_ms(lat[n][mode].get("cpu_s_median")) for n in names
                ]
                if compare:
                    row.append(fmt_ratio(lat["ratio"][mode].get("cpu_median")))
                rows.append(row)
    for mode, what in (("text", "text encoder run"), ("cached", "cached text features")):
        if names and thr and all(mode in thr.get(n, {}) for n in names):
            b = thr[names[0]][mode]["batch"]
            row = [f"throughput, batch {b}, {what} (images/s)"] + [f"{thr[n][mode]['images_per_s']:.2f}" for n in names]
            if compare:
                row.append(fmt_ratio(thr["ratio"][mode]["median"]))
            rows.append(row)
    if "flops" in results and names:
        fl = results["flops"]
        rows.append(
            ["GFLOPs / image (text encoder run)"]
            + [f"{fl[n]['total_text'] / 1e9:.1f}" for n in names]
            + ([""] if compare else [])
        )
        ach = results.get("achieved", {})
        src = "throughput" if thr else "latency"
        if ach.get(src):
            cells = []
            for n in names:
                a = ach[src].get(n, {}).get("cached")
                if a is None:
                    cells.append("—")
                else:
                    frac = a["fraction_of_peak"]
                    cells.append(
                        f"{a['tflops']:.2f}" + (f" ({100 * frac:.1f}% of {ach['peak_tflops']:.0f})" if frac else "")
                    )
            rows.append([f"achieved TFLOP/s ({src}, cached text)"] + cells + ([""] if compare else []))
    mem = results.get("cpu_memory")
    if mem and names:
        rows.append(
            ["peak RSS, batch 1 (MiB, total / extra during a call)"]
            + [
                f"{mem[n].get('peak_rss_mib', '—')} / {mem[n].get('extra_mib', '—')}"
                if "error" not in mem.get(n, {})
                else "error"
                for n in names
            ]
            + ([""] if compare else [])
        )
    if all("peak_memory_mib" in lat.get(n, {}).get("text", {}) for n in names) and names:
        rows.append(
            ["peak CUDA memory, latency case (MiB)"]
            + [str(lat[n]["text"]["peak_memory_mib"]) for n in names]
            + ([""] if compare else [])
        )
        if thr:
            rows.append(
                [f"peak CUDA memory, batch {thr[names[0]]['text']['batch']} (MiB)"]
                + [str(thr[n]["text"].get("peak_memory_mib")) for n in names]
                + ([""] if compare else [])
            )
    if rows:
        lines.append(markdown_table(headers, rows))
    if results.get("skipped"):
        lines.append(f"\nskipped (deadline): {', '.join(results['skipped'])}")
    agr = results.get("agreement")
    if agr:
        lines.append("")
        lines.append(
            f"fast vs plain: {100 * agr['mask_pixels_equal']:.3f}% of mask pixels identical at original size "
            f"({100 * agr['mask_pixels_on_plain']:.1f}% on), largest probability difference {agr['max_prob_diff_stride4']:.2e}"
        )
    rep = results.get("fast_report")
    if rep and rep.get("compile_scopes"):
        lines.append("")
        secs = ", ".join(f"{k}: {v:.1f} s" for k, v in rep.get("compile_seconds", {}).items()) or "—"
        errs = "; ".join(f"{k}: {v}" for k, v in rep.get("compile_errors", {}).items())
        lines.append(
            f"torch.compile ({rep['compile_mode']}): first call (compile + run) {secs}"
            + (f"; FAILED, eager fallback: {errs}" if errs else "")
        )

    st = results.get("stages")
    if st:
        lines.append("")
        stage_names = [
            "visual",
            "text",
            "communicator",
            "communicator.lpa",
            "communicator.cross",
            "communicator.ffn",
            "head",
            "postprocess",
        ]
        srows = []
        what = {
            "visual": "backbone + FPN + fusion",
            "text": "text encoder (cold cache)",
            "communicator": "communicator (S layers)",
            "communicator.lpa": "  of which LPA",
            "communicator.cross": "  of which cross-attention",
            "communicator.ffn": "  of which FFN",
            "head": "dense head",
            "postprocess": "masks at original size",
        }
        for s in stage_names:
            if not any(s in st.get(n, {}) for n in names):
                continue
            cells = [fmt_ms(st[n][s]["median"]) if s in st.get(n, {}) else "—" for n in names]
            row = [what[s]] + cells
            if compare:
                a, b = st["plain"].get(s), st["fast"].get(s)
                row.append(fmt_ratio(a["median"] / b["median"]) if a and b and b["median"] > 0 else "—")
            srows.append(row)
        lines.append(markdown_table(["stage (batch 1, ms median)"] + names + (["speed-up"] if compare else []), srows))
    tr = results.get("train")
    if tr:
        lines.append("")
        trows = []
        for name in ("fp32", "bf16_autocast"):
            if name in tr:
                e = tr[name]
                mem = f"{e['peak_memory_mib']}" if e.get("peak_memory_mib") is not None else "—"
                trows.append([name.replace("_", " "), tr["batch"], _lat_cell(e), f"{e['images_per_s']:.2f}", mem])
        lines.append(
            markdown_table(["training step", "batch", "step ms (median / p90)", "images/s", "peak CUDA MiB"], trows)
        )
    return "\n".join(lines)


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--memory-child":
        print(json.dumps(_memory_child(json.loads(argv[1]))), flush=True)
        return 0
    print("usage: python -m epng.bench.model_bench --memory-child SPEC (internal); use `epng bench`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
