"""Reading and writing a JSON file, and the integer check that values decoded from JSON (or a pickle) need."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from numbers import Integral
from pathlib import Path
from typing import Any

from epng.errors import DataError
from epng.io.limits import InputLimits, check_file_bytes


def load_json(path: str | Path, limits: InputLimits | None = None) -> Any:
    """The parsed content of a UTF-8 JSON file; :class:`DataError` naming the file when it is
    missing, larger than ``max_annotation_bytes`` (checked before reading), not UTF-8, not
    valid JSON or nested too deeply to parse."""
    check_file_bytes(path, "max_annotation_bytes", limits)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror or err})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON ({err})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except ValueError as err:  # e.g. an integer literal longer than Python converts
        raise DataError(f"{path}: invalid JSON ({err})") from None
    except RecursionError:
        raise DataError(f"{path}: invalid JSON (nested too deeply)") from None


def is_int(value: Any) -> bool:
    """True for an integer (Python or numpy), false for a bool (which Python counts as an int)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def write_json(path: str | Path, obj: Any, indent: int | None = 2, default: Callable[[Any], Any] | None = None) -> None:
    """``obj`` as UTF-8 JSON with a final newline (``indent=None``: compact, ASCII only), its
    folder created; written through a temporary name and renamed, so a reader (or a run
    killed mid-write) sees the old file or the whole new one, never half of it. A value JSON
    cannot hold raises ``TypeError`` (nothing written) unless ``default`` converts it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if indent is None:
        text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), default=default)
    else:
        text = json.dumps(obj, indent=indent, default=default)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
