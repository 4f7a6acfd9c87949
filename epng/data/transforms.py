"""Resizing and normalisation of a decoded image, applied identically to its id map.

Two resize modes (:data:`epng.data.options.ResizeMode`):

* ``"square"`` (the paper): stretch the image to exactly ``H x W`` (e.g. 640 x 640);
  the whole input is valid.
* ``"letterbox"``: aspect-preserving resize by ``min(H / h, W / w)`` (so the long side
  fills ``S`` for a square target), placed top-left and padded bottom/right to ``H x W``.

``valid_size`` is the ``(h', w')`` the resized image occupies (top-left aligned; the rest
is padding). The image is resized bilinearly with antialiasing, the segment-id map with
nearest neighbour (half-pixel centres, like the bilinear image) by integer indexing, so
ids come through exactly. Padding is 0 in the normalised image (the mean colour) and 0
(void) in the id map.

Normalisation statistics are passed in (the backbone's own); ImageNet's are the default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from epng.data.options import RESIZE_MODES, ResizeMode, check_option
from epng.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``S`` or ``(H, W)`` -> ``(H, W)``, validated."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        values = tuple(int(s) for s in size)
        if len(values) != 2:
            raise ConfigError(f"image size must be S or (H, W), got {size!r}")
        h, w = values
    if min(h, w) < 1:
        raise ConfigError(f"image size must be positive, got {size!r}")
    return h, w


def valid_size(orig_hw: Sequence[int], size: int | Sequence[int], mode: ResizeMode = "square") -> tuple[int, int]:
    """``(h', w')`` that an ``orig_hw`` image occupies in the ``size`` input under ``mode``."""
    check_option("resize", mode, RESIZE_MODES)
    out_h, out_w = as_hw(size)
    h, w = int(orig_hw[0]), int(orig_hw[1])
    if mode == "square":
        return out_h, out_w
    scale = min(out_h / h, out_w / w)
    return min(out_h, max(1, round(h * scale))), min(out_w, max(1, round(w * scale)))


def nearest_indices(n_in: int, n_out: int) -> torch.Tensor:
    """Source index of each of ``n_out`` outputs, nearest neighbour with half-pixel centres."""
    idx = torch.floor((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out)).long()
    return idx.clamp_(0, n_in - 1)


def resize_id_map(
    id_map: torch.Tensor | np.ndarray, size: int | Sequence[int], mode: ResizeMode = "square"
) -> torch.Tensor:
    """Resize an ``(h, w)`` integer id map to the ``size`` input (nearest, exact ids, dtype kept);
    padding is 0 (void)."""
    ids = torch.as_tensor(id_map)
    if ids.ndim != 2:
        raise ValueError(f"id map must be (h, w), got shape {tuple(ids.shape)}")
    if ids.is_floating_point():
        raise ValueError("id map must hold integers")
    out_h, out_w = as_hw(size)
    new_h, new_w = valid_size(ids.shape, (out_h, out_w), mode)
    rows = nearest_indices(ids.shape[0], new_h)
    cols = nearest_indices(ids.shape[1], new_w)
    resized = ids[rows][:, cols]
    if (new_h, new_w) == (out_h, out_w):
        return resized.contiguous()
    out = torch.zeros((out_h, out_w), dtype=ids.dtype)
    out[:new_h, :new_w] = resized
    return out


def resize_image(image: torch.Tensor, size: int | Sequence[int], mode: ResizeMode = "square") -> torch.Tensor:
    """Resize a ``(3, h, w)`` uint8 (or float) image bilinearly with antialiasing to its
    ``valid_size`` (no padding; see :func:`pad_to`). The dtype is kept."""
    new_hw = valid_size(image.shape[-2:], size, mode)
    if tuple(image.shape[-2:]) == new_hw:
        return image
    return TF.resize(image, list(new_hw), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(3, h, w)`` (0..255) or float in [0, 1] -> float32 ``(x / 255 - mean) / std``."""
    x = image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()
    m = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (x - m) / s


def pad_to(image: torch.Tensor, size: int | Sequence[int], value: float = 0.0) -> torch.Tensor:
    """Pad ``(..., h, w)`` bottom/right with ``value`` to ``size``."""
    out_h, out_w = as_hw(size)
    h, w = image.shape[-2:]
    if (h, w) == (out_h, out_w):
        return image
    out = image.new_full((*image.shape[:-2], out_h, out_w), value)
    out[..., :h, :w] = image
    return out


class ResizeNormalize:
    """The evaluation/training transform: resize (``square`` | ``letterbox``) image and id
    map identically, normalise the image with ``mean``/``std``, pad to ``size``.

    ``__call__(image_uint8 (3, h, w), id_map (h, w)) -> (image float32 (3, H, W),
    id_map (H, W) same dtype, valid_size (h', w'))``.
    """

    def __init__(
        self,
        size: int | Sequence[int] = 640,
        mode: ResizeMode = "square",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        check_option("resize", mode, RESIZE_MODES)
        self.size = as_hw(size)
        self.mode = mode
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError(f"mean and std need 3 values each, got {mean!r} and {std!r}")
        if min(std) <= 0:
            raise ConfigError(f"std must be positive, got {std!r}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(
        self, image: torch.Tensor, id_map: torch.Tensor | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        if tuple(image.shape[-2:]) != tuple(id_map.shape):
            raise ValueError(f"image {tuple(image.shape[-2:])} and id map {tuple(id_map.shape)} differ in size")
        vs = valid_size(image.shape[-2:], self.size, self.mode)
        x = normalize(resize_image(image, self.size, self.mode), self.mean, self.std)
        return pad_to(x, self.size), resize_id_map(id_map, self.size, self.mode), vs

    def __repr__(self) -> str:
        return f"ResizeNormalize(size={self.size}, mode={self.mode!r}, mean={self.mean}, std={self.std})"
