"""Flat columns for the tables of the data layer: strings and ragged lists as one array each.

A column of N strings is one UTF-8 byte array and N + 1 offsets; a ragged column (N lists
of numbers) is one value array and N + 1 offsets, list ``i`` being
``values[offsets[i]:offsets[i + 1]]``. Such columns hold millions of entries as a few
numpy arrays (or read-only memory maps shared by every process) instead of millions of
Python objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def offsets_of(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """``(N + 1,)`` int64 offsets of lists with the given lengths (``[0, c0, c0 + c1, ...]``)."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=out[1:])
    return out


def concat_offsets(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The offsets of the lists of several ragged columns joined in order."""
    shifts = np.cumsum([0] + [int(o[-1]) for o in parts[:-1]], dtype=np.int64)
    return np.concatenate([np.zeros(1, dtype=np.int64)] + [o[1:] + k for o, k in zip(parts, shifts)])


def ragged_take(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lists ``rows`` of a ragged column, as a new ``(values, offsets)`` pair, in the order of ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = offsets[rows], offsets[rows + 1]
    out_offsets = offsets_of(ends - starts)
    index = np.arange(out_offsets[-1], dtype=np.int64) + np.repeat(starts - out_offsets[:-1], ends - starts)
    return np.asarray(values)[index], out_offsets


class StringColumn:
    """N strings stored as one UTF-8 byte array (``data``, uint8) and ``(N + 1,)`` byte offsets."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data, self.offsets = data, offsets

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> StringColumn:
        encoded = [s.encode("utf-8") for s in strings]
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, dtype=np.uint8)
        return cls(data.copy(), offsets_of([len(b) for b in encoded]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, rows: np.ndarray) -> list[str]:
        """The strings ``rows``, decoded in one pass."""
        data = self.data.tobytes()
        rows = np.asarray(rows, dtype=np.int64)
        return [data[s:e].decode("utf-8") for s, e in zip(self.offsets[rows].tolist(), self.offsets[rows + 1].tolist())]

    def __getitem__(self, i: int) -> str:
        return self.data[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")
