"""Reading a JSON file, and the integer check that values decoded from JSON (or a pickle) need."""

from __future__ import annotations

import json
from numbers import Integral
from pathlib import Path
from typing import Any

from epng.errors import DataError


def load_json(path: str | Path) -> Any:
    """The parsed content of a UTF-8 JSON file; :class:`DataError` naming the file when it is
    missing or not valid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON ({err})") from None


def is_int(value: Any) -> bool:
    """True for an integer (Python or numpy), false for a bool (which Python counts as an int)."""
    return isinstance(value, Integral) and not isinstance(value, bool)
