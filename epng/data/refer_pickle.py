"""Reading a refs pickle of the "refer" distribution without letting it run code.

The refs pickle is read by :class:`RestrictedUnpickler`, which builds only plain
containers, strings, numbers, booleans and ``None``: any reference to a global (a class
or function, the way a pickle runs code) is refused and reported as a :class:`DataError`
naming the file, before anything is called. Python 2 ``str`` objects arrive as ``bytes``
(``encoding="bytes"``) and are decoded as UTF-8, falling back to Latin-1, so text that
Python 2 stored as UTF-8 bytes is not garbled (which ``encoding="latin1"`` would do).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from epng.errors import DataError
from epng.io.limits import InputLimits, check_file_bytes


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle references a global (class or function); nothing was called."""

    def __init__(self, module: str, name: str):
        super().__init__(f"the pickle references {module}.{name}")
        self.module, self.name = module, name


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only lists, tuples, dicts, sets, strings, bytes, numbers, booleans and None.

    Those are made by opcodes that never call :meth:`find_class`; everything that needs a
    global (``GLOBAL``, ``STACK_GLOBAL``, ``EXT*`` opcodes, and hence every ``REDUCE`` /
    ``NEWOBJ`` / ``INST`` / ``OBJ``, which call what a global gave them) is refused here,
    and so are persistent ids. The refs files of the refer distribution need nothing else.
    """

    def find_class(self, module: str, name: str):  # noqa: D102 - documented above
        raise ForbiddenGlobal(module, name)

    def persistent_load(self, pid):  # noqa: D102
        raise pickle.UnpicklingError(f"the pickle uses a persistent id ({pid!r})")


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; Python 2 ``str`` objects come back as bytes."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _text(value: Any) -> Any:
    """Python 2 byte strings -> str (UTF-8, else Latin-1), through lists, tuples and dicts (keys too)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_text(v) for v in value)
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    return value


def load_refs_pickle(path: str | Path, limits: InputLimits | None = None) -> list:
    """The refs of a ``refs(<split_by>).p`` file, read with :class:`RestrictedUnpickler`.

    Raises :class:`DataError` naming the file when it is missing, larger than
    ``max_annotation_bytes`` (checked before reading), not a pickle, truncated,
    references any global (it could run code: refused before anything is called), or is
    not a list of dicts.
    """
    path = Path(path)
    check_file_bytes(path, "max_annotation_bytes", limits)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: refs file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the refs file ({err})") from None
    try:
        refs = _text(restricted_loads(data))
    except ForbiddenGlobal as err:
        raise DataError(
            f"{path}: refused to load: the pickle references {err.module}.{err.name}, which could run code; "
            "a refs file may only hold plain lists, dicts, strings and numbers"
        ) from None
    except RecursionError:
        raise DataError(f"{path}: the pickle is nested too deeply") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
        UnicodeError,
    ) as err:
        raise DataError(f"{path}: not a readable refs pickle ({type(err).__name__}: {err})") from None
    if not isinstance(refs, list):
        raise DataError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    return refs
