"""Errors that the command line reports as one clear line (no traceback): ``str(err)`` is that line."""

from __future__ import annotations


class EPNGError(Exception):
    """Base class of every user-facing error in epng."""


class DataError(EPNGError, ValueError):
    """Malformed or missing input data; the message names the file and the record."""


class BadItemError(DataError):
    """One bad item of a dataset (a record, an image, a panoptic PNG, a ref ...).

    ``reason`` is the kind of problem, the name under which skip mode counts the item
    (one of the skip reasons the data layer defines); ``path`` is the file at fault, or
    ``""`` when the message names it. Both have defaults so that the error can be rebuilt
    from its message alone (a DataLoader worker re-raises ``type(err)(message)``).
    """

    def __init__(self, message: str, reason: str = "", path: str = ""):
        super().__init__(message)
        self.reason = reason
        self.path = path


class InputLimitError(DataError):
    """An input over one of the bounds of :mod:`epng.io.limits` (refused before it is decoded
    or parsed); the message names the file (or the argument) and the limit."""


class PredictionError(EPNGError, ValueError):
    """A malformed predictions file; the message names the line."""


class ConfigError(EPNGError, ValueError):
    """A bad configuration value or command-line argument."""


class CheckpointError(EPNGError, RuntimeError):
    """A missing, truncated or incompatible checkpoint."""
