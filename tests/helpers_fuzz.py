"""What the fuzz tests (tests/test_fuzz_*.py) share: the hypothesis profile and the ways they damage input.

The ``epng`` profile (the default) draws a bounded number of examples per test, derandomized:
every run, in CI or not, tries the same examples, so the suite's time and outcome do not vary.
``HYPOTHESIS_PROFILE=explore`` draws random examples, ``EPNG_FUZZ_SCALE=N`` N times as many.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "epng", derandomize=True, deadline=None, database=None, print_blob=False, suppress_health_check=_QUIET
)
settings.register_profile("explore", deadline=None, database=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "epng"))
SCALE = int(os.environ.get("EPNG_FUZZ_SCALE", "1"))


def examples(n: int) -> settings:
    """``n`` examples (times EPNG_FUZZ_SCALE) under the loaded profile."""
    return settings(max_examples=n * SCALE)


# any JSON value, NaN and the infinities included (Python's json writes and reads them)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) into a JSON value, the empty path (the value itself) first."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += json_paths(item, (*prefix, index))
    return paths


@st.composite
def mutated_json(draw, value: Any) -> Any:
    """``value`` with one node, at a depth drawn uniformly, replaced by another JSON value or removed."""
    by_depth: dict[int, list[tuple]] = {}
    for path in json_paths(value):
        by_depth.setdefault(len(path), []).append(path)
    path = draw(st.sampled_from(by_depth[draw(st.sampled_from(sorted(by_depth)))]))
    if not path:
        return draw(json_values)
    copy = _deep_copy(value)
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return copy


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


@st.composite
def damaged_bytes(draw, data: bytes) -> bytes:
    """``data`` truncated, emptied, with bits flipped, or with random bytes inserted."""
    kind = draw(st.sampled_from(["truncate", "empty", "flip", "insert"]))
    if kind == "empty" or not data:
        return b""
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "insert":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    damaged = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        damaged[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(damaged)
