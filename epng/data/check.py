"""`epng check-data`: check a PNG benchmark root and say exactly what is wrong.

The layout of a root is :class:`epng.data.layout.SplitLayout`. For each split,
:func:`check_data` checks: the four required paths exist; the panoptic json loads; every
narrative record parses (counted by reason, one example message each); every referenced
image file and panoptic PNG exists; with ``deep`` every referenced image and PNG decodes,
sizes agree with the panoptic json, and every referenced segment id has pixels (the item
checks of :mod:`epng.data.items`, which ``PNGDataset`` uses too).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from epng.data.items import validate_items
from epng.data.layout import SplitLayout, available_splits, split_layout
from epng.data.narrative_table import NarrativeView
from epng.data.panoptic import PanopticIndex
from epng.data.png_format import load_narratives
from epng.data.skips import NO_GROUNDED_PHRASE
from epng.errors import DataError

# --------------------------------------------------------------------------- check-data


@dataclass
class Issue:
    """One kind of problem: a headline (with its counts), how many problems it counts for,
    and the paths concerned or an example message."""

    what: str
    count: int = 1
    paths: list[str] = field(default_factory=list)
    example: str = ""


@dataclass
class SplitCheck:
    split: str
    issues: list[Issue] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues


@dataclass
class CheckResult:
    root: Path
    splits: list[SplitCheck] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)  # root-level

    @property
    def ok(self) -> bool:
        return not self.issues and all(s.ok for s in self.splits)

    @property
    def n_problems(self) -> int:
        return sum(i.count for i in self.issues) + sum(i.count for s in self.splits for i in s.issues)

    def format(self, max_list: int = 20) -> str:
        lines = [f"PNG benchmark root: {self.root}"]
        lines += _format_issues(self.issues, "  ", max_list)
        for s in self.splits:
            lines.append(f"split {s.split}: {'OK' if s.ok else 'PROBLEMS'}")
            lines += [f"  {line}" for line in s.info]
            lines += _format_issues(s.issues, "  ", max_list)
        if self.ok:
            lines.append("all checks passed")
        else:
            lines.append(f"{self.n_problems} problem(s) found")
        return "\n".join(lines)


def _format_issues(issues: list[Issue], indent: str, max_list: int) -> list[str]:
    lines = []
    for issue in issues:
        lines.append(f"{indent}ERROR: {issue.what}")
        shown = issue.paths[:max_list] if max_list > 0 else issue.paths
        lines += [f"{indent}    {p}" for p in shown]
        if len(issue.paths) > len(shown):
            lines.append(f"{indent}    ... and {len(issue.paths) - len(shown)} more")
        if issue.example:
            lines.append(f"{indent}    e.g. {issue.example}")
    return lines


def check_data(root: str | Path, splits: list[str] | None = None, deep: bool = False) -> CheckResult:
    """Check ``root`` for the given ``splits`` (default: every split with a narratives file)."""
    root = Path(root)
    result = CheckResult(root)
    if not root.is_dir():
        result.issues.append(Issue(f"benchmark root not found: {root}"))
        return result
    if not splits:
        splits = available_splits(root)
        if not splits:
            result.issues.append(
                Issue(
                    f"no narratives file {root / 'annotations' / 'png_coco_<split>.json'} "
                    "(download png_coco_train2017.json / png_coco_val2017.json from the PNG project page)"
                )
            )
            return result
    for split in splits:
        result.splits.append(_check_split(root, split, deep))
    return result


def _check_split(root: Path, split: str, deep: bool) -> SplitCheck:
    layout = split_layout(root, split)
    out = SplitCheck(split)
    missing = [p for p in layout.required_paths() if not p.exists()]
    wrong_kind = [
        p
        for p in layout.required_paths()
        if p.exists() and p.is_dir() != (p in (layout.image_dir, layout.panoptic_dir))
    ]
    if missing:
        out.issues.append(
            Issue(f"{len(missing)} missing folder(s)/file(s)", len(missing), [_describe(p, layout) for p in missing])
        )
    if wrong_kind:
        out.issues.append(
            Issue(
                f"{len(wrong_kind)} path(s) of the wrong kind (folder vs file)",
                len(wrong_kind),
                [str(p) for p in wrong_kind],
            )
        )

    panoptic = None
    if layout.panoptic_json.is_file():
        try:
            panoptic = PanopticIndex(layout.panoptic_json)
        except DataError as err:
            out.issues.append(Issue("malformed panoptic json", example=str(err)))
    if panoptic is None or not layout.narratives_json.is_file():
        return out
    try:
        narratives, load_report = load_narratives(layout.narratives_json, panoptic, mode="skip")
    except DataError as err:
        out.issues.append(Issue("malformed narratives json", example=str(err)))
        return out
    for reason, n in load_report.skipped.most_common():
        if reason == NO_GROUNDED_PHRASE:
            continue
        out.issues.append(Issue(f"{n} narrative record(s) unusable: {reason}", n, example=load_report.examples[reason]))

    phrases = [p for n in narratives for p in n.phrases]
    n_things = sum(p.is_thing for p in phrases)
    n_plural = sum(p.is_plural for p in phrases)
    images = {n.image_id for n in narratives}
    out.info.append(
        f"{load_report.n_records} records, {len(narratives)} narratives with {len(phrases)} grounded phrases "
        f"(things {n_things}, stuff {len(phrases) - n_things}; singular {len(phrases) - n_plural}, plural {n_plural}) "
        f"on {len(images)} images"
    )
    if load_report.skipped.get(NO_GROUNDED_PHRASE):
        out.info.append(f"{load_report.skipped[NO_GROUNDED_PHRASE]} records without a grounded phrase (not evaluated)")

    if not (layout.image_dir.is_dir() and layout.panoptic_dir.is_dir()):
        out.info.append("image/PNG files not checked: their folder is missing")
        return out
    problems = validate_items(layout, panoptic, NarrativeView.from_narratives(narratives), deep=deep)
    by_reason: dict[str, list] = defaultdict(list)
    for p in problems:
        by_reason[p.reason].append(p)
    for reason, group in by_reason.items():
        files = list(dict.fromkeys(p.path for p in group))
        out.issues.append(
            Issue(
                f"{reason}: {len(files)} file(s), {len(group)} narrative(s) affected",
                len(group),
                files,
                group[0].message,
            )
        )
    checked = "decoded and checked" if deep else "present"
    if not problems:
        out.info.append(f"all {len(images)} referenced images and panoptic PNGs {checked}")
    return out


def _describe(path: Path, layout: SplitLayout) -> str:
    kind = "folder" if path in (layout.image_dir, layout.panoptic_dir) else "file"
    hint = {
        layout.image_dir: "COCO 2017 images",
        layout.panoptic_dir: "COCO panoptic PNGs (unzip panoptic_<split>.zip)",
        layout.panoptic_json: "COCO panoptic annotations",
        layout.narratives_json: "PNG narratives, from the PNG project page",
    }[path]
    return f"{path} ({kind}: {hint})"
