"""Bounds on untrusted input: one policy for every reader of images, captions, JSON files and pickles.

An input over a limit is refused before the expensive part (decoding the pixels, parsing
the file, tokenizing the caption) with an :class:`~epng.errors.InputLimitError` whose
one-line message names the file (or argument) and the limit. The limits in force are,
from lowest to highest precedence: the defaults of :class:`InputLimits`, the environment
variables ``EPNG_<NAME>`` (``EPNG_MAX_IMAGE_PIXELS=100000000``), and what a command sets
with :func:`set_limits` (``epng train``: the config's ``limits`` section; ``epng predict``,
``evaluate``, ``res-eval``, ``score``: ``--limit NAME=VALUE``). Readers take the limits
of :func:`current_limits` unless they are given others.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

from epng.errors import ConfigError, InputLimitError

MIB = 2**20
GIB = 2**30
ENV_PREFIX = "EPNG_"


@dataclass(frozen=True)
class InputLimits:
    """Every bound on untrusted input (all positive integers)."""

    max_image_pixels: int = 64_000_000  # width x height an image (or panoptic PNG) header may declare
    max_image_bytes: int = 512 * MIB  # size of an image or panoptic PNG file
    max_caption_chars: int = 20_000  # characters of a caption (narrative), checked before tokenizing
    max_caption_word_pieces: int = 4_096  # word pieces of a caption given to `Predictor.predict`
    max_annotation_bytes: int = 2 * GIB  # a JSON annotation file or refs pickle, which is read whole
    max_prediction_line_chars: int = 16 * MIB  # one line of a predictions JSON Lines file

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"input limit {f.name}={value!r}: must be a positive integer")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def updated(self, changes: Mapping[str, object], source: str = "limits") -> InputLimits:
        """A copy with ``changes`` (name -> int, or a string of digits) applied; unknown names
        and bad values raise :class:`ConfigError` naming ``source``."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise ConfigError(f"{source}: unknown input limit(s) {unknown}; known: {', '.join(self.names())}")
        parsed = {name: _as_int(value, f"{source}: {name}") for name, value in changes.items()}
        return replace(self, **parsed)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InputLimits:
        """The defaults, with every ``EPNG_<NAME>`` variable of ``environ`` (default ``os.environ``) applied."""
        environ = os.environ if environ is None else environ
        limits = cls()
        for name in cls.names():
            var = env_var(name)
            if var in environ:
                limits = limits.updated({name: environ[var]}, source=f"environment variable {var}")
        return limits


def _as_int(value: object, where: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(f"{where}={value!r}: must be a positive integer") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}={value!r}: must be a positive integer")
    return value


def env_var(name: str) -> str:
    """The environment variable of a limit: ``max_image_pixels`` -> ``EPNG_MAX_IMAGE_PIXELS``."""
    return ENV_PREFIX + name.upper()


_active: InputLimits | None = None


def current_limits() -> InputLimits:
    """The limits set by :func:`set_limits`, else the defaults with the environment applied."""
    if _active is not None:
        return _active
    return _from_env_values(tuple(os.environ.get(env_var(name)) for name in InputLimits.names()))


@lru_cache(maxsize=8)
def _from_env_values(values: tuple[str | None, ...]) -> InputLimits:
    return InputLimits.from_env({env_var(n): v for n, v in zip(InputLimits.names(), values) if v is not None})


def set_limits(limits: InputLimits | None) -> None:
    """Make ``limits`` the limits of this process (and of the processes it forks); ``None``
    goes back to the defaults with the environment applied."""
    global _active
    _active = limits


@contextmanager
def using_limits(limits: InputLimits) -> Iterator[InputLimits]:
    """:func:`set_limits` for the duration of a ``with`` block, then the limits that were in force."""
    global _active
    previous, _active = _active, limits
    try:
        yield limits
    finally:
        _active = previous


def parse_assignments(assignments: Iterable[str], base: InputLimits | None = None) -> InputLimits:
    """``["max_image_pixels=100000000", ...]`` applied to ``base`` (default: :func:`current_limits`)."""
    changes: dict[str, str] = {}
    for text in assignments:
        name, sep, value = text.partition("=")
        if not sep:
            raise ConfigError(f"--limit {text!r}: expected NAME=VALUE, NAME one of {', '.join(InputLimits.names())}")
        changes[name.strip()] = value
    return (base or current_limits()).updated(changes, source="--limit")


def limit_error(source: str | Path | None, what: str, value: int, name: str, limit: int) -> InputLimitError:
    """The one-line refusal: ``<source>: <what> is <value>, over the limit of <limit> (<name>; ...)``
    (no ``<source>:`` when ``source`` is None)."""
    prefix = "" if source is None else f"{source}: "
    return InputLimitError(f"{prefix}{what} is {value:,}, over the limit of {limit:,} {limit_hint(name)}")


def limit_hint(name: str) -> str:
    """How to raise the limit ``name``, in parentheses (the end of every refusal)."""
    return f"({name}; raise it with {env_var(name)}=N or --limit {name}=N)"


def check_size(source: str | Path | None, what: str, value: int, name: str, limits: InputLimits | None = None) -> None:
    """Raise :class:`InputLimitError` when ``value`` is over the limit ``name``."""
    limit = getattr(limits or current_limits(), name)
    if value > limit:
        raise limit_error(source, what, value, name, limit)


def check_file_bytes(path: str | Path, name: str, limits: InputLimits | None = None) -> None:
    """Refuse a file larger than the limit ``name`` (a ``stat``; nothing is read). A missing
    file passes: the reader reports it in its own words."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return
    check_size(path, "the file size in bytes", size, name, limits)


def check_image_pixels(source: str | Path, width: int, height: int, limits: InputLimits | None = None) -> None:
    """Refuse an image whose declared ``width x height`` is over ``max_image_pixels``."""
    what = f"the pixel count of the {width:,} x {height:,} image"
    check_size(source, what, width * height, "max_image_pixels", limits)


def check_caption_chars(caption: str, source: str | None = None, limits: InputLimits | None = None) -> None:
    """Refuse a caption of more than ``max_caption_chars`` characters (before it is tokenized)."""
    check_size(source, "the caption's length in characters", len(caption), "max_caption_chars", limits)
