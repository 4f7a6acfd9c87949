"""`Grounder`: the app's one door to the model -- checks the uploaded file, runs the
predictor one call at a time, and turns any failure into a one-line message for the page."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

from epng.errors import ConfigError, DataError, EPNGError
from epng.inference import Prediction, Predictor
from epng.io.image_header import open_image_header

log = logging.getLogger("epng.app")

GENERIC_ERROR = "Something went wrong while grounding this narrative (the server log has the details)."


def check_image_file(path: str | Path | None) -> Path:
    """The uploaded file, when it is an image within the input limits of `epng.io.limits` (only
    its header is read); otherwise a `DataError` naming the file by its name alone."""
    if path is None or not str(path).strip():
        raise DataError("no image: upload a picture or pick an example first")
    path = Path(path)
    try:
        with open_image_header(path, corrupt="not an image this app can read (JPEG or PNG expected)"):
            pass
    except DataError as err:  # the server-side upload folder means nothing to the user
        raise type(err)(str(err).replace(str(path), path.name)) from None
    return path


def user_message(err: BaseException) -> str:
    """A one-line message for the page: an `EPNGError`'s own text, else `GENERIC_ERROR`."""
    if isinstance(err, EPNGError):
        return str(err)
    return GENERIC_ERROR


class Grounder:
    """Runs ``predictor`` for the app: one model call at a time (the predictor keeps the image
    of its last `Predictor.set_image`), the image encoded again only when the file changes."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self._lock = threading.Lock()
        self._image_key: tuple | None = None

    def ground(self, image_path: str | Path | None, caption: str | None, threshold: float) -> Prediction:
        """The prediction for the image file and the narrative; `EPNGError` on bad input."""
        path = check_image_file(image_path)
        if not caption or not caption.strip():
            raise ConfigError("the narrative is empty: type a sentence about the picture")
        if not 0.0 < float(threshold) < 1.0:
            raise ConfigError(f"the threshold must lie between 0 and 1, got {threshold}")
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            start = time.perf_counter()
            if key != self._image_key:
                self._image_key = None
                try:
                    self.predictor.set_image(path)
                except DataError as err:  # the decoder names the server-side upload path
                    raise DataError(str(err).replace(str(path), path.name)) from None
                self._image_key = key
            prediction = self.predictor.predict(caption, threshold=float(threshold))
            # the page's latency: the whole model call, the image's encoding included when it is new
            return dataclasses.replace(prediction, seconds=time.perf_counter() - start)
