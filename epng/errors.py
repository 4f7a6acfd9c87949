"""Errors that the command line reports as one clear line (no traceback)."""


class EPNGError(Exception):
    """Base class of every user-facing error in epng."""


class DataError(EPNGError, ValueError):
    """Malformed or missing input data; the message names the file and the record."""


class PredictionError(EPNGError, ValueError):
    """A malformed predictions file; the message names the line."""


class ConfigError(EPNGError, ValueError):
    """A bad configuration value or command-line argument."""


class CheckpointError(EPNGError, RuntimeError):
    """A missing, truncated or incompatible checkpoint."""
