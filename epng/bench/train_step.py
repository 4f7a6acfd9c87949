"""Training-step time of `epng bench`: forward + loss + backward + Adam step, as `epng train` runs it.

Variants, timed interleaved: "fp32"; "bf16_autocast" (`epng train --amp bf16`) where the
device computes bf16 natively and the fast path is benchmarked; with ``fast_only`` the bf16
variant replaces the fp32 one where it runs.
"""

from __future__ import annotations

import torch

from epng.bench.config import ModelBenchConfig
from epng.bench.harness import time_interleaved
from epng.bench.inputs import make_batch
from epng.bench.measure import cuda_peak_mib
from epng.bench.results import CaseResult, TrainResult
from epng.data.inputs import model_inputs
from epng.device import autocast, bf16_supported
from epng.losses import EPNGCriterion
from epng.model import EPNG


def train_variants(cfg: ModelBenchConfig, device: torch.device) -> dict[str, str]:
    """Variant name -> the precision its forward runs in."""
    variants = {"fp32": "fp32"}
    if "fast" in cfg.paths and bf16_supported(device):
        variants["bf16_autocast"] = "bf16"
        if cfg.fast_only:
            del variants["fp32"]
    return variants


def measure_train(model: EPNG, cfg: ModelBenchConfig, device: torch.device) -> TrainResult:
    """Time training steps of ``model`` (left in eval mode afterwards) on a random batch of
    ``cfg.train_batch`` (default ``cfg.batch``) samples."""
    batch = cfg.train_batch or cfg.batch
    b = make_batch(cfg, batch, device, seed=7)
    criterion = EPNGCriterion.from_config(model.config)
    variants = train_variants(cfg, device)
    model.train()
    model.text_encoder.clear_cache()  # drop what the inference phases cached (other narratives)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizers = {name: torch.optim.Adam(params, lr=1e-5) for name in variants}

    def step(name: str) -> None:
        with autocast(variants[name], device):
            out = model(*model_inputs(b))
        loss = criterion(out, b["gt_masks"], b["phrase_mask"])["loss"]
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    fns = {name: (lambda name=name: step(name)) for name in variants}
    timed = time_interleaved(fns, repeats=cfg.train_repeats, warmup=1, device=device, max_seconds=cfg.max_case_seconds)
    steps = {}
    for name, t in timed.items():
        steps[name] = CaseResult(t, batch)
        if device.type == "cuda" and cfg.memory:
            steps[name].peak_memory_mib = cuda_peak_mib(fns[name], device)
    model.eval()
    return TrainResult(batch, sum(p.numel() for p in params), steps)
