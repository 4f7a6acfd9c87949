"""`EPNG`: visual encoder + text encoder + communicator + dense head, with its own pre- and post-processing.

Saved with ``save_pretrained(dir)`` as ``config.json`` + ``model.safetensors`` (+ the text
encoder's architecture and tokenizer files in ``dir/text_encoder/``); ``from_pretrained(dir)``
rebuilds with random weights and copies the safetensors file's tensors into them: no pickle, no network, no
backbone weight file.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin, snapshot_download
from torch import Tensor, nn

from epng.data import transforms
from epng.data.input_format import InputFormat
from epng.data.options import ResizeMode
from epng.errors import CheckpointError, ConfigError
from epng.io.weights import load_into
from epng.model.communicator import Communicator
from epng.model.config import EPNGConfig
from epng.model.head import DenseHead, EPNGOutput
from epng.model.text_encoder import TextEncoder
from epng.model.visual_encoder import VisualEncoder, VisualFeatures, image_stats

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TEXT_FILES_DIR = "text_encoder"
WEIGHTS_NAME = "model.safetensors"


class EPNG(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="epng",
    tags=["panoptic-narrative-grounding"],
):
    """End-to-end Panoptic Narrative Grounding network.

    ``config.image_mean`` / ``image_std`` are resolved at construction (the backbone
    weights' own statistics) and exposed as ``image_mean`` / ``image_std``;
    ``text_files`` is a folder with the text encoder's config and tokenizer (used by
    ``from_pretrained``; normally left ``None``).
    """

    def __init__(self, config: EPNGConfig, text_files: str | None = None) -> None:
        super().__init__()
        mean, std = image_stats(config)
        self.config = replace(config, image_mean=tuple(mean), image_std=tuple(std))
        self._hub_mixin_config = self.config
        self.visual_encoder = VisualEncoder(self.config)
        self.text_encoder = TextEncoder(self.config, text_files)
        self.communicator = Communicator(self.config)
        self.head = DenseHead(self.config)

    @property
    def image_mean(self) -> tuple[float, ...]:
        return self.config.image_mean

    @property
    def image_std(self) -> tuple[float, ...]:
        return self.config.image_std

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The fast tokenizer matching the text encoder (the dataset needs its offsets)."""
        return self.text_encoder.tokenizer

    def forward(
        self,
        images: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        phrase_token_mask: Tensor,
        phrase_mask: Tensor,
    ) -> EPNGOutput:
        """images (B, 3, H, W); input_ids, attention_mask (B, T); phrase_token_mask (B, P, T) bool;
        phrase_mask (B, P) bool -> mask logits (B, P, H/4, W/4), pixel (B, C, H/4, W/4), phrase (B, P, C)."""
        phrase_mask = phrase_mask.bool()
        visual = self.encode_image(images)
        phrases = self.encode_text(input_ids, attention_mask, phrase_token_mask, phrase_mask)  # (B, P, C)
        fused = self.communicator(visual.fused, phrases, phrase_mask)  # (B, C, H/16, W/16)
        return self.head(fused, phrases, visual.fine)

    def encode_image(self, images: Tensor) -> VisualFeatures:
        """(B, 3, H, W) normalised images -> fused map (B, C, H/16, W/16) [+ finer FPN maps]."""
        return self.visual_encoder(images)

    def encode_text(
        self, input_ids: Tensor, attention_mask: Tensor, phrase_token_mask: Tensor, phrase_mask: Tensor
    ) -> Tensor:
        """Word pieces (B, T) + phrase spans (B, P, T) -> phrase features (B, P, C)."""
        return self.text_encoder(input_ids, attention_mask, phrase_token_mask.bool(), phrase_mask.bool())

    # ------------------------------------------------------------------ pre- and post-processing

    def input_format(
        self,
        image_size: int | tuple[int, int] | None = None,
        resize: ResizeMode | None = None,
        max_length: int | None = None,
    ) -> InputFormat:
        """How datasets must shape samples for this model: its tokenizer, normalisation and the
        config's input size and resize mode (unless given); ``max_length`` is capped by the text
        encoder's limit."""
        limit = self.config.max_text_length
        return InputFormat(
            self.tokenizer,
            image_size=self.config.image_size if image_size is None else image_size,
            resize=self.config.resize if resize is None else resize,
            mean=self.image_mean,
            std=self.image_std,
            max_length=limit if max_length is None else min(max_length, limit),
        )

    def preprocess(self, image: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(3, h, w) uint8 image -> (3, H, W) normalised network input and the (h', w') part of it
        the image occupies (top-left; the rest is padding), by the config's size and resize mode."""
        size, mode = self.config.image_size, self.config.resize
        x = transforms.normalize(transforms.resize_image(image, size, mode), self.image_mean, self.image_std)
        return transforms.pad_to(x, size), transforms.valid_size(image.shape[-2:], size, mode)

    @staticmethod
    def postprocess_logits(
        mask_logits: Tensor, input_size: tuple[int, int], valid_size: tuple[int, int], orig_size: tuple[int, int]
    ) -> Tensor:
        """(P, h4, w4) logits of one sample -> (P, h, w) probabilities at its original resolution.

        One bilinear resize maps the stride-4 map so that its valid part lands exactly on
        ``orig_size``, then the padding is cropped off. The *logits* are resized and then
        squashed, as BCE and Dice see them in training; resizing probabilities instead would
        move every boundary towards the side with the smaller |logit|.
        """
        (in_h, in_w), (valid_h, valid_w), (h, w) = input_size, valid_size, orig_size
        full = (max(round(h * in_h / valid_h), h), max(round(w * in_w / valid_w), w))
        logits = F.interpolate(mask_logits.float()[None], size=full, mode="bilinear", align_corners=False)
        return torch.sigmoid(logits[0, :, :h, :w])  # (P, h, w)

    @classmethod
    def postprocess_masks(
        cls, mask_logits: Tensor, input_size: tuple[int, int], meta: list[dict], threshold: float = 0.5
    ) -> list[Tensor]:
        """(B, P, h4, w4) logits -> per sample a (P_b, h, w) bool mask of its real phrases
        (``meta[b]``: ``phrase_indices``, ``valid_size``, ``orig_size``), thresholded on the device."""
        masks = []
        for b, m in enumerate(meta):
            n = len(m["phrase_indices"])
            probs = cls.postprocess_logits(mask_logits[b, :n], input_size, m["valid_size"], m["orig_size"])
            masks.append(probs > threshold)
        return masks

    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)
        text_dir = Path(save_directory) / TEXT_FILES_DIR
        self.text_encoder.model.config.save_pretrained(text_dir)
        self.text_encoder.tokenizer.save_pretrained(text_dir)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: EPNGConfig | dict | None = None,
        map_location: str = "cpu",
        strict: bool = True,
        **kwargs,
    ) -> EPNG:
        """Build with random weights (no backbone/text downloads) and load ``model.safetensors``."""
        if config is None:
            raise CheckpointError(f"{model_id}: no config.json, not an EPNG checkpoint")
        if isinstance(config, dict):
            try:
                config = EPNGConfig.from_dict(config)
            except ConfigError as err:
                raise CheckpointError(f"{model_id}/config.json: {err}") from err
        if os.path.isdir(model_id):
            root = Path(model_id)
        else:
            root = Path(
                snapshot_download(
                    repo_id=model_id,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    token=token,
                    local_files_only=local_files_only,
                )
            )
        weights = root / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{model_id}: missing {WEIGHTS_NAME}")
        text_files = root / TEXT_FILES_DIR
        mean, std = image_stats(config)  # of the original weights, before they are swapped for random ones
        config = replace(config, image_mean=tuple(mean), image_std=tuple(std))
        model = cls(
            replace(config, backbone_weights="none", text_weights="random"),
            text_files=str(text_files) if (text_files / "config.json").is_file() else None,
        )
        try:
            load_into(model, weights, strict=strict)  # one tensor at a time: no second copy of the weights
        except (RuntimeError, OSError) as err:
            raise CheckpointError(f"{weights}: does not match the EPNG config in {model_id} ({err})") from err
        model.config = config
        model._hub_mixin_config = config
        return model.to(map_location).eval()
