"""The narratives of a split as flat columns, and a lazy sequence view of them.

A :class:`NarrativeTable` holds N narratives with M grounded phrases and S segment ids
in the arrays :data:`NARRATIVE_ARRAYS` (ascending record index)::

    record_index, image_id              (N,)    int64
    captions, caption_offsets           UTF-8 bytes, (N + 1,) byte offsets
    phrase_offsets                      (N + 1,) phrases of narrative i: [o[i], o[i + 1])
    chunk_index                         (M,)    int64
    span                                (M, 2)  int64, [start, end) characters of the caption
    is_thing, is_plural                 (M,)    bool
    segment_offsets, segment_ids        (M + 1,), (S,) int64

:meth:`NarrativeTable.narrative` builds one :class:`Narrative` on access, equal to what
:func:`epng.data.png_format.load_narratives` returns for that record; a
:class:`NarrativeView` is a ``Sequence[Narrative]`` over some rows of a table, with the
per-narrative and per-phrase columns an evaluator needs as arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property

import numpy as np

from epng.data.columns import StringColumn, concat_offsets, offsets_of, ragged_take
from epng.data.png_format import GroundedPhrase, Narrative
from epng.io.json_file import is_int

NARRATIVE_ARRAYS = (
    "record_index",
    "image_id",
    "captions",
    "caption_offsets",
    "phrase_offsets",
    "chunk_index",
    "span",
    "is_thing",
    "is_plural",
    "segment_offsets",
    "segment_ids",
)


class NarrativeTable:
    """N narratives with their grounded phrases as the flat arrays :data:`NARRATIVE_ARRAYS`."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self._arrays = {name: arrays[name] for name in NARRATIVE_ARRAYS}
        for name, value in self._arrays.items():
            setattr(self, name, value)
        self._captions = StringColumn(self.captions, self.caption_offsets)

    @classmethod
    def from_narratives(cls, narratives: Iterable[Narrative]) -> NarrativeTable:
        """The table of ``narratives`` sorted by record index; ``ValueError`` when an index is given twice."""
        items = sorted(narratives, key=lambda n: n.index)
        for a, b in zip(items, items[1:]):
            if a.index == b.index:
                raise ValueError(f"narrative index {a.index} given twice")
        phrases = [p for n in items for p in n.phrases]
        captions = StringColumn.from_strings(n.caption for n in items)
        return cls(
            {
                "record_index": np.asarray([n.index for n in items], dtype=np.int64),
                "image_id": np.asarray([n.image_id for n in items], dtype=np.int64),
                "captions": captions.data,
                "caption_offsets": captions.offsets,
                "phrase_offsets": offsets_of([len(n.phrases) for n in items]),
                "chunk_index": np.asarray([p.chunk_index for p in phrases], dtype=np.int64),
                "span": np.asarray([p.span for p in phrases], dtype=np.int64).reshape(-1, 2),
                "is_thing": np.asarray([p.is_thing for p in phrases], dtype=bool),
                "is_plural": np.asarray([p.is_plural for p in phrases], dtype=bool),
                "segment_offsets": offsets_of([len(p.segment_ids) for p in phrases]),
                "segment_ids": np.asarray([s for p in phrases for s in p.segment_ids], dtype=np.int64),
            }
        )

    @classmethod
    def concat(cls, tables: Sequence[NarrativeTable]) -> NarrativeTable:
        """One table of the narratives of ``tables``, in order (record indices must keep ascending)."""
        if not tables:
            return cls.from_narratives([])
        out = {}
        for name in NARRATIVE_ARRAYS:
            parts = [getattr(t, name) for t in tables]
            out[name] = concat_offsets(parts) if name.endswith("offsets") else np.concatenate(parts)
        return cls(out)

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(self._arrays)

    def __len__(self) -> int:
        return len(self.record_index)

    def phrase_counts(self) -> np.ndarray:
        """``(N,)`` grounded phrases per narrative."""
        return np.diff(self.phrase_offsets)

    def narrative(self, row: int) -> Narrative:
        """The narrative in row ``row``, built from the columns."""
        p0, p1 = int(self.phrase_offsets[row]), int(self.phrase_offsets[row + 1])
        caption = self._captions[row]
        seg_offsets = self.segment_offsets[p0 : p1 + 1].tolist()
        segments = self.segment_ids[seg_offsets[0] : seg_offsets[-1]].tolist()
        base = seg_offsets[0]
        phrases = tuple(
            GroundedPhrase(
                phrase_index=k,
                chunk_index=chunk,
                text=caption[start:end],
                span=(start, end),
                segment_ids=tuple(segments[seg_offsets[k] - base : seg_offsets[k + 1] - base]),
                is_plural=plural,
                is_thing=thing,
            )
            for k, (chunk, (start, end), plural, thing) in enumerate(
                zip(
                    self.chunk_index[p0:p1].tolist(),
                    self.span[p0:p1].tolist(),
                    self.is_plural[p0:p1].tolist(),
                    self.is_thing[p0:p1].tolist(),
                )
            )
        )
        return Narrative(
            index=int(self.record_index[row]), image_id=int(self.image_id[row]), caption=caption, phrases=phrases
        )


class NarrativeView(Sequence):
    """``Sequence[Narrative]`` over the rows ``rows`` (ascending) of a table; items are built on access.

    ``view[i]`` is the narrative in table row ``rows[i]``. The columns an evaluator needs
    come as arrays over the view: ``record_index`` and ``image_id`` per narrative,
    ``phrase_offsets`` (``(n + 1,)``: the phrases of item ``i`` are ``[o[i], o[i + 1])``)
    and ``is_thing`` / ``is_plural`` per phrase.
    """

    def __init__(self, table: NarrativeTable, rows: np.ndarray | None = None):
        self.table = table
        self.rows = np.arange(len(table), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)

    @classmethod
    def from_narratives(cls, narratives: Iterable[Narrative]) -> NarrativeView:
        """A view of a table built in memory from ``narratives`` (see :meth:`NarrativeTable.from_narratives`)."""
        return cls(NarrativeTable.from_narratives(narratives))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return NarrativeView(self.table, self.rows[i])
        return self.table.narrative(int(self.rows[i]))

    def select(self, keep: np.ndarray) -> NarrativeView:
        """The view of the items where the bool array ``keep`` is true."""
        return NarrativeView(self.table, self.rows[np.asarray(keep, dtype=bool)])

    def find(self, record_index: int) -> int:
        """Position of the narrative of record ``record_index`` in the view, or -1."""
        k = int(np.searchsorted(self.record_index, record_index))
        return k if k < len(self.rows) and self.record_index[k] == record_index else -1

    def by_record(self) -> NarrativesByRecord:
        """The view as a read-only ``Mapping`` record index -> narrative."""
        return NarrativesByRecord(self)

    @cached_property
    def record_index(self) -> np.ndarray:
        return self.table.record_index[self.rows]

    @cached_property
    def image_id(self) -> np.ndarray:
        return self.table.image_id[self.rows]

    @cached_property
    def _phrases(self) -> tuple[np.ndarray, np.ndarray]:
        n_phrases = int(self.table.phrase_offsets[-1])
        if len(self.rows) == len(self.table):  # every row, in order
            return np.arange(n_phrases, dtype=np.int64), self.table.phrase_offsets
        return ragged_take(np.arange(n_phrases, dtype=np.int64), self.table.phrase_offsets, self.rows)

    @property
    def phrase_rows(self) -> np.ndarray:
        """The table rows of the view's phrases, item after item."""
        return self._phrases[0]

    @property
    def phrase_offsets(self) -> np.ndarray:
        return self._phrases[1]

    @property
    def is_thing(self) -> np.ndarray:
        return self.table.is_thing[self.phrase_rows]

    @property
    def is_plural(self) -> np.ndarray:
        return self.table.is_plural[self.phrase_rows]


class NarrativesByRecord(Mapping):
    """Record index -> :class:`Narrative` over a :class:`NarrativeView` (built on access)."""

    def __init__(self, view: NarrativeView):
        self.view = view

    def __getitem__(self, record_index: int) -> Narrative:
        k = self.view.find(record_index) if is_int(record_index) else -1
        if k < 0:
            raise KeyError(record_index)
        return self.view[k]

    def __iter__(self) -> Iterator[int]:
        return iter(self.view.record_index.tolist())

    def __len__(self) -> int:
        return len(self.view)
