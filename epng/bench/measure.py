"""The inference measurements of `epng bench` on named `Predictor`s ("plain", "fast").

Paths are timed interleaved, call by call (`time_interleaved`), so that a busy machine
slows them alike. A "text" case clears the predictor's text cache before every call (the
narrative is new: the transformer runs); a "cached" case reuses it (the transformer is
skipped). Inputs are on the device before timing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch

from epng.bench.config import TEXT_MODES, ModelBenchConfig
from epng.bench.harness import ModuleTimer, Stats, Timed, count_flops, sync, time_interleaved
from epng.bench.results import SUBLAYERS, AgreementResult, CaseResult, FlopsResult, LatencyResult, SpeedUp, StageResult
from epng.data.inputs import model_inputs
from epng.inference import Predictor
from epng.inference.fold_cross import fold_cross_attention
from epng.model.lpa import lpa_route
from epng.model.visual_encoder import VisualFeatures

Predictors = dict[str, Predictor]  # path name -> predictor, "plain" first


def cuda_peak_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak CUDA memory allocated during one call of ``fn`` in MiB (None off CUDA)."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _timed(
    fns: dict[str, Callable[[], object]],
    setup: dict[str, Callable[[], object]],
    cfg: ModelBenchConfig,
    device: torch.device,
) -> dict[str, Timed]:
    return time_interleaved(
        fns, repeats=cfg.repeats, warmup=cfg.warmup, device=device, max_seconds=cfg.max_case_seconds, setup=setup
    )


def measure_inference(predictors: Predictors, b: dict, cfg: ModelBenchConfig, device: torch.device) -> LatencyResult:
    """Time per call of ``predict_torch`` on batch ``b`` for each path x text mode (and, on CUDA
    with ``cfg.memory``, each case's peak memory), with plain / fast speed-ups."""
    fns, setup = {}, {}
    for name, predictor in predictors.items():
        for mode in TEXT_MODES:
            fns[f"{name}/{mode}"] = partial(predictor.predict_torch, b)
        setup[f"{name}/text"] = predictor.clear_text_cache
        predictor.predict_torch(b)  # fill the cache for the "cached" case
    timed = _timed(fns, setup, cfg, device)
    batch = b["images"].shape[0]
    cases: dict[str, dict[str, CaseResult]] = {}
    for key, t in timed.items():
        name, mode = key.split("/")
        cases.setdefault(name, {})[mode] = CaseResult(t, batch)
    if device.type == "cuda" and cfg.memory:
        for key, fn in fns.items():
            name, mode = key.split("/")
            if key in setup:
                setup[key]()
            cases[name][mode].peak_memory_mib = cuda_peak_mib(fn, device)
    speedup, vs_plain = {}, {}
    if "plain" in predictors and "fast" in predictors:
        speedup = {mode: SpeedUp.of(timed[f"plain/{mode}"], timed[f"fast/{mode}"]) for mode in TEXT_MODES}
    if "plain" in predictors:
        for name in predictors:
            if name not in ("plain", "fast"):
                vs_plain[name] = {
                    mode: SpeedUp.of(timed[f"plain/{mode}"], timed[f"{name}/{mode}"]) for mode in TEXT_MODES
                }
    return LatencyResult(cases, speedup, vs_plain)


def measure_agreement(predictors: Predictors, b: dict, path: str = "fast") -> AgreementResult:
    """How far ``path``'s output is from the plain one on batch ``b``: share of equal mask
    pixels at original size (both through the same post-processing), largest probability
    difference at stride 4."""
    plain, fast = predictors["plain"], predictors[path]
    ref, out = plain.mask_logits(*model_inputs(b)).float(), fast.mask_logits(*model_inputs(b)).float()
    size = tuple(b["images"].shape[-2:])
    ref_m, out_m = plain.postprocess(ref, size, b["meta"]), plain.postprocess(out, size, b["meta"])
    total = sum(x.numel() for x in ref_m)
    return AgreementResult(
        mask_pixels_equal=sum(int((x == y).sum()) for x, y in zip(ref_m, out_m)) / total,
        mask_pixels_on_plain=sum(int(x.sum()) for x in ref_m) / total,
        max_prob_diff_stride4=float((ref.sigmoid() - out.sigmoid()).abs().max()),
    )


def _text(b: dict) -> tuple[torch.Tensor, ...]:
    return b["input_ids"], b["attention_mask"], b["phrase_token_mask"], b["phrase_mask"]


def _sublayer_timer(predictor: Predictor, device: torch.device) -> ModuleTimer:
    layers = list(predictor.model.communicator.layers)
    return ModuleTimer({g: [getattr(layer, g) for layer in layers] for g in SUBLAYERS}, device)


def measure_stages(predictors: Predictors, b: dict, cfg: ModelBenchConfig, device: torch.device) -> StageResult:
    """Per-stage time on batch ``b``: explicit stage calls (visual, text on a cold cache,
    communicator, head, post-processing) interleaved across paths, and -- inside the timed
    communicator calls, after the warm-up ones -- its LPA / cross-attention / FFN sub-layers
    through forward hooks (absent when a compiled communicator fires no hooks)."""
    fns, setup, rounds = {}, {}, {}
    size = tuple(b["images"].shape[-2:])
    for name, pred in predictors.items():
        pred.clear_text_cache()
        v = pred.encode_image(b["images"])
        ph = pred.encode_text(*_text(b))
        c = pred.communicate(v.fused, ph, b["phrase_mask"])
        lg = pred.head(c, ph, v.fine)
        fns[f"{name}/visual"] = partial(pred.encode_image, b["images"])
        fns[f"{name}/text"] = partial(pred.encode_text, *_text(b))
        setup[f"{name}/text"] = pred.clear_text_cache
        fns[f"{name}/communicator"] = partial(pred.communicate, v.fused, ph, b["phrase_mask"])
        if pred.report.runtime == "torch":  # an exported graph has no sub-layers to hook
            timer, per_call = _sublayer_timer(pred, device), []
            rounds[name] = per_call

            def comm(
                pred: Predictor = pred,
                v: VisualFeatures = v,
                ph: torch.Tensor = ph,
                timer: ModuleTimer = timer,
                per_call: list[dict[str, float]] = per_call,
            ) -> None:
                timer.reset()
                with timer:
                    pred.communicate(v.fused, ph, b["phrase_mask"])
                if all(timer.calls().values()):
                    per_call.append(timer.seconds())

            fns[f"{name}/communicator"] = comm
        fns[f"{name}/head"] = partial(pred.head, c, ph, v.fine)
        fns[f"{name}/postprocess"] = partial(pred.postprocess, lg, size, b["meta"])
    timed = _timed(fns, setup, cfg, device)
    result = StageResult({}, {})
    for key, t in timed.items():
        name, stage = key.split("/")
        result.timed.setdefault(name, {})[stage] = t
    for name, per_call in rounds.items():
        kept = per_call[cfg.warmup :] or per_call
        if kept:
            result.sublayers[name] = {f"communicator.{g}": Stats.of([r[g] for r in kept]) for g in SUBLAYERS}
    return result


@contextmanager
def _eager_stages(predictor: Predictor) -> Iterator[None]:
    """Inside the block the predictor's compiled stages run their eager twins."""
    stages = (predictor._visual, predictor._communicator)
    compiled = [stage.compiled for stage in stages]
    for stage in stages:
        stage.compiled = None
    try:
        yield
    finally:
        for stage, fn in zip(stages, compiled):
            stage.compiled = fn


def _stage_flops(pred: Predictor, one: dict) -> FlopsResult:
    with _eager_stages(pred), lpa_route("eager"):
        pred.clear_text_cache()
        v = pred.encode_image(one["images"])
        ph = pred.encode_text(*_text(one))
        c = pred.communicate(v.fused, ph, one["phrase_mask"])
        visual = count_flops(lambda: pred.encode_image(one["images"]))
        pred.clear_text_cache()
        text = count_flops(lambda: pred.encode_text(*_text(one)))
        communicator = count_flops(lambda: pred.communicate(v.fused, ph, one["phrase_mask"]))
        head = count_flops(lambda: pred.head(c, ph, v.fine))
    return FlopsResult(visual, text, communicator, head)


def measure_flops(predictors: Predictors, b: dict) -> dict[str, FlopsResult]:
    """FLOPs per image of each stage of each path, counted on one sample. Compiled stages run
    their eager twins for the count (compiled code is not dispatched op by op) and LPA runs
    its eager route: fused kernels are not all known to `FlopCounterMode`, and every route
    does the same dense attention work. An exported runtime computes what the fast path's
    formulation computes, with the reassociated cross-attention: its FLOPs are counted on such
    an fp32 twin of the model."""
    one = {k: v[:1] for k, v in b.items()}
    out = {name: _stage_flops(pred, one) for name, pred in predictors.items() if pred.report.runtime == "torch"}
    runtime = [name for name, pred in predictors.items() if pred.report.runtime != "torch"]
    if runtime:
        model = next(p.model for p in predictors.values() if p.report.runtime == "torch" and not p.options.fast)
        twin_predictor = Predictor(model, fast=True, precision="fp32")
        fold_cross_attention(twin_predictor.model.communicator)  # as the exported communicator computes it
        twin = _stage_flops(twin_predictor, one)
        out.update({name: twin for name in runtime})
    return out
