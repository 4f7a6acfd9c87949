"""Decoding JPEG/PNG image files into uint8 RGB tensors, their size checked first
(:func:`epng.io.image_header.open_image_header`); `load_image` takes a path, an array or a tensor.

JPEG (and GIF, WebP) files are decoded by torchvision. PNG files are decoded by PIL:
torchvision's PNG decoder crashes the whole process (a segmentation fault, which no
``except`` catches) on some damaged PNGs, while PIL raises an error; for 8-bit PNGs both
give the same pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file

from epng.errors import DataError
from epng.io.image_header import first_line, open_image_header
from epng.io.limits import InputLimits, check_image_pixels

_WIDE_GRAY = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # PIL's modes of 16-bit gray PNGs


def decode_image_file(path: str | Path, limits: InputLimits | None = None) -> torch.Tensor:
    """Decode a JPEG/PNG file into a ``(3, h, w)`` uint8 RGB tensor (gray is expanded, 16-bit
    samples keep their high byte, alpha is dropped).

    Raises :class:`DataError` naming the file when it is missing, cannot be decoded, or is
    over the input limits (checked on its header first, see :func:`open_image_header`).
    EXIF orientation is not applied: annotations refer to the stored pixel grid.
    """
    path = Path(path)
    with open_image_header(path, limits) as header:
        declared = (header.height, header.width)
        if header.format == "PNG":
            return _decode_with_pil(header, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            data = read_file(str(path))
    except (FileNotFoundError, RuntimeError) as err:
        if not path.is_file():
            raise DataError(f"{path}: image file not found") from None
        raise DataError(f"{path}: unreadable image file ({err})") from None
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as err:
        raise DataError(f"{path}: corrupt or unsupported image ({first_line(err)})") from None
    if image.ndim != 3 or image.shape[0] != 3 or tuple(image.shape[1:]) != declared:
        raise DataError(f"{path}: decoded to {tuple(image.shape)}, but its header declares {declared[0]}x{declared[1]}")
    return image


def _decode_with_pil(image: Image.Image, path: Path) -> torch.Tensor:
    try:
        if image.mode in _WIDE_GRAY:
            gray = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
            rgb = np.repeat(gray[..., None], 3, axis=-1)
        else:
            rgb = np.array(image.convert("RGB"))
    except Exception as err:  # PIL's decoders raise many types on damaged files
        raise DataError(f"{path}: corrupt or unsupported image ({first_line(err)})") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


ImageInput = str | Path | np.ndarray | torch.Tensor


def load_image(image: ImageInput) -> torch.Tensor:
    """A file path, an (h, w, 3) uint8 array or a (3, h, w) uint8 tensor -> (3, h, w) uint8 tensor.

    A file over the input limits is refused on its header, before decoding; an array or
    tensor with more than ``max_image_pixels`` pixels is refused too (:mod:`epng.io.limits`).
    """
    if isinstance(image, (str, Path)):
        return decode_image_file(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise DataError(f"expected an (h, w, 3) uint8 image array, got {image.shape} {image.dtype}")
        check_image_pixels("the image array", image.shape[1], image.shape[0])
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if torch.is_tensor(image) and image.ndim == 3 and image.shape[0] == 3 and image.dtype == torch.uint8:
        check_image_pixels("the image tensor", image.shape[2], image.shape[1])
        return image
    raise DataError("image must be a file path, an (h, w, 3) uint8 array or a (3, h, w) uint8 tensor")
