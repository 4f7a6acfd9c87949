"""Everything ``PNGDataset`` reads from a split's two json files, parsed and tokenized once, as flat arrays.

:class:`SplitTables` holds the panoptic index (:class:`PanopticIndex`), the narratives
with their grounded phrases (:class:`NarrativeTable`), their word pieces
(:class:`BatchAlignment`) and what the parse left out (:class:`LoadReport`).
:func:`build_split_tables` makes them: records are parsed in order (in skip mode, so one
build serves both modes: the report keeps the first bad record, which strict mode
raises), and captions are tokenized a chunk at a time through the tokenizer's batch call,
in a second thread while the next chunk is parsed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice

from epng.data.layout import SplitLayout
from epng.data.narrative_table import NarrativeTable
from epng.data.panoptic import PanopticIndex
from epng.data.png_format import LoadReport, parse_records, read_records
from epng.data.tokenization import BatchAlignment, align_batch, require_fast_tokenizer

#: narratives tokenized per batch call
CHUNK = 2048


@dataclass
class SplitTables:
    """The parsed and tokenized split (see the module docstring)."""

    panoptic: PanopticIndex
    narratives: NarrativeTable
    alignment: BatchAlignment  # one caption per narrative, one phrase per grounded phrase
    load_report: LoadReport
    max_length: int


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Millions of json objects that all stay alive: the cyclic collector would only rescan them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def build_split_tables(layout: SplitLayout, tokenizer, max_length: int) -> SplitTables:
    """Parse and tokenize the split of ``layout``; raises :class:`DataError` on a missing or malformed json file."""
    require_fast_tokenizer(tokenizer)
    with _collector_paused():
        panoptic = PanopticIndex(layout.panoptic_json)
        records = read_records(layout.narratives_json)
        report = LoadReport(n_records=len(records))
        parsed = parse_records(records, panoptic, layout.narratives_json, report, mode="skip")
        tables, pending = [], []
        # The tokenizer's batch call runs without the GIL: one thread tokenizes a chunk while this one parses the next.
        with ThreadPoolExecutor(max_workers=1) as tokenizing:
            while chunk := list(islice(parsed, CHUNK)):
                table = NarrativeTable.from_narratives(chunk)
                captions = [n.caption for n in chunk]
                pending.append(
                    tokenizing.submit(align_batch, tokenizer, captions, table.span, table.phrase_offsets, max_length)
                )
                tables.append(table)
            alignments = [p.result() for p in pending]
        del records, parsed
    return SplitTables(panoptic, NarrativeTable.concat(tables), BatchAlignment.concat(alignments), report, max_length)
