"""The option vocabularies of the data layer: each is one ``Literal`` type and the tuple of its values."""

from __future__ import annotations

from typing import Literal, get_args

from epng.errors import ConfigError

#: what a reader does with a bad item: ``"strict"`` raises a :class:`DataError` naming it,
#: ``"skip"`` leaves it out and counts it by reason
ErrorMode = Literal["strict", "skip"]
ERROR_MODES: tuple[str, ...] = get_args(ErrorMode)

#: how an image becomes the model input: ``"square"`` stretches it to the input size (the
#: paper), ``"letterbox"`` keeps its aspect ratio and pads the bottom/right
ResizeMode = Literal["square", "letterbox"]
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)

#: what ``PNGDataset`` checks at construction: ``"files"`` that the files exist, ``"deep"``
#: also that every image and panoptic PNG decodes and agrees with the annotations
ValidateMode = Literal["files", "deep"]
VALIDATE_MODES: tuple[str, ...] = get_args(ValidateMode)


def check_option(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` ("<name> must be 'a' or 'b', got ...") unless ``value`` is one of ``choices``."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
