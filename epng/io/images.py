"""Decoding JPEG/PNG image files into uint8 RGB tensors (torchvision)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image, read_file

from epng.errors import DataError


def decode_image_file(path: str | Path) -> torch.Tensor:
    """Decode a JPEG/PNG file into a ``(3, h, w)`` uint8 RGB tensor (gray is expanded).

    Raises :class:`DataError` naming the file when it is missing or cannot be decoded.
    EXIF orientation is not applied: annotations refer to the stored pixel grid.
    """
    path = Path(path)
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
        raise DataError(f"{path}: corrupt or unsupported image ({_first_line(err)})") from None
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] < 1 or image.shape[2] < 1:
        raise DataError(f"{path}: decoded to an unexpected shape {tuple(image.shape)}")
    return image


def _first_line(err: Exception) -> str:
    """The readable part of a decoder error (torchvision prefixes "fn, /path/file.cpp:NN, ")."""
    text = str(err).strip()
    text = text.splitlines()[0] if text else type(err).__name__
    return re.sub(r"^\w+, \S+:\d+, ", "", text)
