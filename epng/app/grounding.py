"""`Grounder`: the app's one door to the model -- checks the uploaded file, runs the
predictor one call at a time, and turns any failure into a one-line message for the page."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from epng.errors import ConfigError, DataError, EPNGError
from epng.inference import Prediction, Predictor

log = logging.getLogger("epng.app")

MAX_PIXELS = 4096 * 4096  # the largest image (width x height) the app accepts
GENERIC_ERROR = "Something went wrong while grounding this narrative (the server log has the details)."


def check_image_file(path: str | Path | None, max_pixels: int = MAX_PIXELS) -> Path:
    """The uploaded file, when it is an image of at most ``max_pixels`` pixels (only its
    header is read); otherwise a `DataError` naming the file."""
    if path is None or not str(path).strip():
        raise DataError("no image: upload a picture or pick an example first")
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise DataError(f"{path.name}: image file not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError):
        raise DataError(f"{path.name}: not an image this app can read (JPEG or PNG expected)") from None
    if width * height > max_pixels:
        raise DataError(
            f"{path.name}: the image is {width} x {height} pixels; the app accepts at most "
            f"{max_pixels / 1e6:.1f} megapixels (scale it down first)"
        )
    return path


def user_message(err: BaseException) -> str:
    """A one-line message for the page: an `EPNGError`'s own text, else `GENERIC_ERROR`."""
    if isinstance(err, EPNGError):
        return str(err)
    return GENERIC_ERROR


class Grounder:
    """Runs ``predictor`` for the app: one model call at a time (the predictor keeps the image
    of its last `Predictor.set_image`), the image encoded again only when the file changes."""

    def __init__(self, predictor: Predictor, max_pixels: int = MAX_PIXELS) -> None:
        self.predictor = predictor
        self.max_pixels = max_pixels
        self._lock = threading.Lock()
        self._image_key: tuple | None = None

    def ground(self, image_path: str | Path | None, caption: str | None, threshold: float) -> Prediction:
        """The prediction for the image file and the narrative; `EPNGError` on bad input."""
        path = check_image_file(image_path, self.max_pixels)
        if not caption or not caption.strip():
            raise ConfigError("the narrative is empty: type a caption and mark its phrases with [brackets]")
        if not 0.0 < float(threshold) < 1.0:
            raise ConfigError(f"the threshold must lie between 0 and 1, got {threshold}")
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key != self._image_key:
                self._image_key = None
                try:
                    self.predictor.set_image(path)
                except DataError as err:  # the decoder names the server-side upload path
                    raise DataError(str(err).replace(str(path), path.name)) from None
                self._image_key = key
            prediction = self.predictor.predict(caption, threshold=float(threshold))
        if not prediction.phrases:
            raise ConfigError("no phrase found in the narrative: mark the phrases to ground with [brackets]")
        return prediction
