"""Reading an image file's header (never its pixels) and checking its size against the input limits.

Before any pixel is decoded, the file's size and the width x height its header declares
are checked against :mod:`epng.io.limits`: a few-kilobyte PNG that declares 50,000 x 50,000
pixels is refused without allocating them. PIL reads only the header when it opens a file.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from epng.errors import DataError
from epng.io.limits import InputLimits, check_file_bytes, check_image_pixels, current_limits, limit_error


@contextmanager
def open_image_header(
    path: str | Path,
    limits: InputLimits | None = None,
    missing: str = "image file not found",
    corrupt: str = "corrupt or unsupported image",
) -> Iterator[Image.Image]:
    """The image file opened lazily by PIL (only its header is read), once its file size
    (``max_image_bytes``) and declared pixel count (``max_image_pixels``) are within the limits.

    Raises :class:`DataError` "<path>: <missing>" or "<path>: <corrupt> (...)", or
    :class:`InputLimitError`, naming the file. PIL's own decompression-bomb check never
    refuses what the limits allow.
    """
    limits = limits or current_limits()
    check_file_bytes(path, "max_image_bytes", limits)
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limits.max_image_pixels:
        Image.MAX_IMAGE_PIXELS = limits.max_image_pixels  # only ever raised: PIL then warns above our limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise DataError(f"{path}: {missing}") from None
    except Image.DecompressionBombError as err:  # over twice PIL's threshold, which is at least our limit
        declared = re.search(r"\((\d+) pixels\)", str(err))
        pixels = int(declared.group(1)) if declared else 2 * Image.MAX_IMAGE_PIXELS + 1
        raise limit_error(
            path, "the pixel count the image declares", pixels, "max_image_pixels", limits.max_image_pixels
        ) from None
    except Exception as err:  # PIL's header parsers raise many types on damaged files
        raise DataError(f"{path}: {corrupt} ({first_line(err)})") from None
    with image:
        check_image_pixels(path, image.width, image.height, limits)
        yield image


def first_line(err: Exception) -> str:
    """The readable part of a decoder error (torchvision prefixes "fn, /path/file.cpp:NN, ")."""
    text = str(err).strip()
    text = text.splitlines()[0] if text else type(err).__name__
    return re.sub(r"^\w+, \S+:\d+, ", "", text)
