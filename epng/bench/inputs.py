"""The benchmark's model, inputs and predictors: a preset with random weights (no download),
random batches shaped like `collate_png`'s, and one `Predictor` per inference path."""

from __future__ import annotations

import torch

from epng.bench.config import ModelBenchConfig
from epng.data.inputs import batch_text_inputs
from epng.errors import ConfigError
from epng.inference import Predictor
from epng.model import EPNG, build_epng

CLS_ID, SEP_ID, PAD_ID = 101, 102, 0  # BERT word-piece vocabulary (the presets' text encoders share it)
WORD_IDS = (1000, 29000)  # random word pieces are drawn from [low, high)
PHRASE_TOKENS = 3  # word pieces per phrase


def build_model(cfg: ModelBenchConfig) -> EPNG:
    """The preset with random weights, in eval mode on ``cfg.device``."""
    torch.manual_seed(cfg.seed)
    overrides = {"backbone_weights": "none", "text_weights": "random", "image_size": cfg.image_size, **cfg.overrides}
    return build_epng(cfg.preset, **overrides).to(cfg.device).eval()


def phrase_positions(tokens: int, phrases: int) -> list[list[int]]:
    """Word-piece positions of ``phrases`` phrases of `PHRASE_TOKENS` pieces spread over a
    narrative of ``tokens`` pieces ([CLS] first, [SEP] last)."""
    if tokens < PHRASE_TOKENS * phrases + 2:
        raise ConfigError(f"--tokens {tokens} is too short for {phrases} phrases of {PHRASE_TOKENS} word pieces")
    stride = (tokens - 2) // phrases
    return [list(range(1 + k * stride, 1 + k * stride + PHRASE_TOKENS)) for k in range(phrases)]


def make_batch(cfg: ModelBenchConfig, batch: int, device: torch.device | str, seed: int = 0) -> dict:
    """A `collate_png`-like batch on ``device``: ``batch`` samples with distinct random narratives
    of ``cfg.tokens`` word pieces and ``cfg.phrases`` phrases, standard-normal (already
    normalised) ``cfg.image_size``² images, ground-truth masks for training, and ``meta``
    that maps the masks to ``cfg.orig_size``."""
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + seed)
    t, p, s = cfg.tokens, cfg.phrases, cfg.image_size
    positions = phrase_positions(t, p)
    ids = torch.randint(*WORD_IDS, (batch, t), generator=gen)
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    text = batch_text_inputs(list(ids), [positions] * batch, PAD_ID)
    gt = torch.rand(batch, p, s // 4, s // 4, generator=gen) > 0.7
    gt = torch.nn.functional.interpolate(gt[:, :, None].float().flatten(0, 1), size=(s, s), mode="nearest")
    out = {
        "images": torch.randn(batch, 3, s, s, generator=gen),
        **text._asdict(),
        "gt_masks": gt.view(batch, p, s, s).bool(),
    }
    out = {k: v.to(device) for k, v in out.items()}
    out["meta"] = [
        {"phrase_indices": list(range(p)), "orig_size": tuple(cfg.orig_size), "valid_size": (s, s)}
        for _ in range(batch)
    ]
    return out


def make_predictor(model: EPNG, cfg: ModelBenchConfig, path: str, copy: bool = True) -> Predictor:
    """The `Predictor` of inference path ``path`` ("plain" | "fast") with an empty text cache;
    the fast one prepares a copy of ``model`` unless ``copy=False``."""
    predictor = Predictor(model, cfg.options(path), device=cfg.device, copy=copy)
    predictor.clear_text_cache()
    return predictor
