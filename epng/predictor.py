"""`Predictor`: masks for your own picture and narrative.

    predictor = Predictor.from_pretrained("runs/demo/best")
    result = predictor.predict("photo.jpg", "a [red ball] on the [grass]")
    result.masks  # (P, h, w) bool at the image's own resolution, one per phrase

Phrases are either marked in the caption with square brackets, or given as a list
(each must occur in the caption; the first occurrence is used).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from epng.data.tokenization import align_phrases
from epng.data.transforms import ResizeNormalize
from epng.engine.checkpoint import load_model
from epng.engine.fast_inference import FastEPNG
from epng.engine.postprocess import binary_masks
from epng.engine.precision import autocast_for
from epng.errors import ConfigError, DataError
from epng.io.images import decode_image_file
from epng.model import EPNG

ImageInput = str | Path | np.ndarray | torch.Tensor

_BRACKETED = re.compile(r"\[([^\[\]]*)\]")


@dataclass
class Prediction:
    caption: str
    phrases: list[str]
    spans: list[tuple[int, int]]  # character spans in ``caption``
    masks: np.ndarray  # (P, h, w) bool at the image's resolution
    image: np.ndarray  # (h, w, 3) uint8, the image the masks belong to


def parse_bracketed(caption: str) -> tuple[str, list[tuple[int, int]]]:
    """``"a [red ball] on the [grass]"`` -> (``"a red ball on the grass"``, spans of the marked phrases)."""
    if caption.count("[") != caption.count("]"):
        raise ConfigError(f"unbalanced square brackets in the caption {caption!r}")
    clean, spans, last = [], [], 0
    length = 0
    for match in _BRACKETED.finditer(caption):
        before = caption[last : match.start()]
        clean.append(before)
        length += len(before)
        phrase = match.group(1)
        if not phrase.strip():
            raise ConfigError(f"empty [] phrase in the caption {caption!r}")
        spans.append((length, length + len(phrase)))
        clean.append(phrase)
        length += len(phrase)
        last = match.end()
    clean.append(caption[last:])
    return "".join(clean), spans


def locate_phrases(caption: str, phrases: Sequence[str]) -> list[tuple[int, int]]:
    """Character span of the first case-insensitive occurrence of each phrase in ``caption``."""
    lowered = caption.lower()
    spans = []
    for phrase in phrases:
        if not phrase.strip():
            raise ConfigError("an empty --phrase was given")
        start = lowered.find(phrase.strip().lower())
        if start < 0:
            raise ConfigError(f"phrase {phrase!r} does not occur in the caption")
        spans.append((start, start + len(phrase.strip())))
    return spans


def load_image(image: ImageInput) -> torch.Tensor:
    """A file path, an (h, w, 3) uint8 array or a (3, h, w) uint8 tensor -> (3, h, w) uint8 tensor."""
    if isinstance(image, (str, Path)):
        return decode_image_file(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise DataError(f"expected an (h, w, 3) uint8 image array, got {image.shape} {image.dtype}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if torch.is_tensor(image) and image.ndim == 3 and image.shape[0] == 3 and image.dtype == torch.uint8:
        return image
    raise DataError("image must be a file path, an (h, w, 3) uint8 array or a (3, h, w) uint8 tensor")


class Predictor:
    """Runs an :class:`EPNG` model on single images and narratives (no gradient)."""

    def __init__(
        self,
        model: EPNG,
        device: str | torch.device | None = None,
        threshold: float = 0.5,
        amp: str = "none",
        fast: bool = False,
    ):
        """``fast``: run through `FastEPNG` (bf16 where native, channels-last, folded BatchNorm);
        it prepares ``model`` in place, so use the predictor, not the model, afterwards."""
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.fast = FastEPNG(self.model, self.device, copy=False) if fast else None
        self.threshold = threshold
        self.amp = amp
        cfg = model.config
        self.transform = ResizeNormalize(cfg.image_size, cfg.resize, model.image_mean, model.image_std)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, **kwargs) -> Predictor:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(load_model(path, device), device, **kwargs)

    @torch.no_grad()
    def predict(self, image: ImageInput, caption: str, phrases: Sequence[str] | None = None) -> Prediction:
        if not isinstance(caption, str) or not caption.strip():
            raise ConfigError("the caption is empty")
        if phrases:
            spans = locate_phrases(caption, phrases)
        else:
            caption, spans = parse_bracketed(caption)
        if not spans:
            raise ConfigError('no phrase: mark phrases in the caption with [square brackets] or give --phrase "..."')

        max_length = self.model.config.max_text_length
        alignment = align_phrases(self.model.tokenizer, caption, spans, max_length)
        if alignment.truncated:
            lost = [caption[slice(*spans[k])] for k in alignment.truncated]
            raise ConfigError(
                f"the caption is too long for the text encoder ({max_length} word pieces): phrases {lost} fall beyond it"
            )
        if alignment.empty:
            lost = [caption[slice(*spans[k])] for k in alignment.empty]
            raise ConfigError(f"phrases {lost} hold no word the tokenizer keeps")

        pixels = load_image(image)
        orig_size = (int(pixels.shape[1]), int(pixels.shape[2]))
        x, _, valid = self.transform(pixels, torch.zeros(orig_size, dtype=torch.int32))
        n_tokens, n_phrases = len(alignment.input_ids), len(spans)
        phrase_token_mask = torch.zeros((1, n_phrases, n_tokens), dtype=torch.bool)
        for k, tokens in enumerate(alignment.phrase_tokens):
            phrase_token_mask[0, k, list(tokens)] = True
        inputs = (
            x[None],
            torch.tensor([alignment.input_ids]),
            torch.tensor([alignment.attention_mask]),
            phrase_token_mask,
            torch.ones((1, n_phrases), dtype=torch.bool),
        )
        inputs = tuple(t.to(self.device) for t in inputs)
        if self.fast is not None:
            mask_logits = self.fast(*inputs)
        else:
            with autocast_for(self.amp, self.device):
                mask_logits = self.model(*inputs).mask_logits
        meta = [{"phrase_indices": list(range(n_phrases)), "valid_size": valid, "orig_size": orig_size}]
        masks = binary_masks(mask_logits, tuple(x.shape[-2:]), meta, self.threshold)[0]
        return Prediction(
            caption=caption,
            phrases=[caption[s:e] for s, e in spans],
            spans=list(spans),
            masks=masks.cpu().numpy(),
            image=pixels.permute(1, 2, 0).numpy(),
        )
