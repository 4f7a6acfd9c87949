"""Check a PNG benchmark root (spec PNG_BENCHMARK.md section 1) and say exactly what is wrong.

The item-level checks (:func:`validate_items`, :func:`load_item_arrays`) are shared with
``PNGDataset``; this module imports torch only when it decodes images.

``check_data`` checks, for each split: the four required paths exist; the panoptic json loads; every narrative
record parses (skip mode: counts by reason, one example message each); every referenced
image file and panoptic PNG exists; with ``deep`` every referenced image and PNG
decodes, sizes agree with the panoptic json, and every referenced segment id has pixels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from epng.data.layout import SplitLayout, available_splits, split_layout
from epng.data.panoptic import PanopticIndex, read_id_png, segment_pixel_counts
from epng.data.png_format import Narrative, load_narratives
from epng.errors import DataError

# Skip reasons of the image-level checks (record-level ones come from png_format._reason).
MISSING_IMAGE = "missing image"
MISSING_PNG = "missing panoptic PNG"
CORRUPT_IMAGE = "corrupt image"
CORRUPT_PNG = "corrupt panoptic PNG"
SIZE_MISMATCH = "size mismatch"
SEGMENT_WITHOUT_PIXELS = "segment id not in the PNG"
NO_GROUNDED_PHRASE = "no grounded phrase"


@dataclass
class ItemProblem:
    """A bad item found by :func:`validate_items`."""

    narrative: int  # record index in the narratives json
    image_id: int
    reason: str
    message: str
    path: str = ""  # the file at fault


def _where(layout: SplitLayout, narrative: Narrative) -> str:
    return f"[narrative record {narrative.index} of {layout.narratives_json}, image {narrative.image_id}]"


def image_path(layout: SplitLayout, panoptic: PanopticIndex, image_id: int) -> Path:
    return layout.image_dir / panoptic.image(image_id).file_name


def png_path(layout: SplitLayout, panoptic: PanopticIndex, image_id: int) -> Path:
    """The panoptic PNG of an image: the ``file_name`` of its panoptic annotation (COCO
    standard; ``<image_id:012d>.png`` in the real benchmark)."""
    return layout.panoptic_dir / panoptic.image(image_id).png_name


def load_item_arrays(layout: SplitLayout, panoptic: PanopticIndex, narrative: Narrative):
    """Decode and check the image and id map of one narrative (what ``PNGDataset`` reads).

    Returns ``(image, id_map)``: ``(3, h, w)`` uint8 tensor and ``(h, w)`` int64 array,
    after checking that both have the size of the panoptic json and that every segment
    id of every phrase has pixels. Raises :class:`DataError` naming the file and the
    record, with attributes ``reason`` (one of the reasons above) and ``path``.
    """
    from epng.data.transforms import decode_image_file  # torch: only when decoding

    info = panoptic.image(narrative.image_id)
    where = _where(layout, narrative)
    img_file, png_file = image_path(layout, panoptic, info.image_id), png_path(layout, panoptic, info.image_id)
    try:
        image = decode_image_file(img_file)
    except DataError as err:
        raise _reasoned(MISSING_IMAGE if not img_file.is_file() else CORRUPT_IMAGE, img_file, f"{err} {where}") from None
    id_map = _load_id_map(png_file, where)
    _check_sizes(info, img_file, tuple(image.shape[-2:]), png_file, id_map.shape, where)
    _check_segments(narrative, id_map, png_file, where)
    return image, id_map


def _reasoned(reason: str, path: Path, message: str) -> DataError:
    """A DataError that also carries the skip ``reason`` and the ``path`` at fault."""
    err = DataError(message)
    err.reason = reason  # type: ignore[attr-defined]
    err.path = str(path)  # type: ignore[attr-defined]
    return err


def _load_id_map(path: Path, where: str) -> np.ndarray:
    try:
        return read_id_png(path)
    except DataError as err:
        raise _reasoned(MISSING_PNG if not path.is_file() else CORRUPT_PNG, path, f"{err} {where}") from None


def _check_sizes(info, img_file: Path, img_hw, png_file: Path, png_hw, where: str) -> None:
    expected = (info.height, info.width)
    for path, what, hw in ((img_file, "image", img_hw), (png_file, "panoptic PNG", png_hw)):
        if tuple(hw) != expected:
            raise _reasoned(
                SIZE_MISMATCH,
                path,
                f"{path}: {what} is {hw[0]}x{hw[1]} but the panoptic json says {expected[0]}x{expected[1]} {where}",
            )


def _check_segments(narrative: Narrative, id_map: np.ndarray, png_file: Path, where: str, counts=None) -> None:
    if counts is None:
        counts = segment_pixel_counts(id_map, {s for p in narrative.phrases for s in p.segment_ids})
    for phrase in narrative.phrases:
        absent = [s for s in phrase.segment_ids if counts.get(s, 0) == 0]
        if absent:
            raise _reasoned(
                SEGMENT_WITHOUT_PIXELS,
                png_file,
                f"{png_file}: segment ids {absent} of segments[{phrase.chunk_index}] {phrase.text!r} "
                f"have no pixel in the panoptic PNG {where}",
            )


def validate_items(
    layout: SplitLayout,
    panoptic: PanopticIndex,
    narratives: Sequence[Narrative],
    deep: bool = False,
) -> list[ItemProblem]:
    """Image-level checks of ``narratives`` (see the module docstring), one problem per bad
    narrative. Files are checked once per image; ``deep`` decodes each image and PNG once."""
    by_image: dict[int, list[Narrative]] = defaultdict(list)
    for n in narratives:
        by_image[n.image_id].append(n)
    problems: list[ItemProblem] = []

    def fail(group: Iterable[Narrative], reason: str, path: Path, message_of) -> None:
        for n in group:
            problems.append(ItemProblem(n.index, n.image_id, reason, message_of(n), str(path)))

    for image_id, group in by_image.items():
        info = panoptic.image(image_id)
        img_file, png_file = image_path(layout, panoptic, image_id), png_path(layout, panoptic, image_id)
        if not img_file.is_file():
            fail(group, MISSING_IMAGE, img_file, lambda n: f"{img_file}: image file not found {_where(layout, n)}")
            continue
        if not png_file.is_file():
            fail(group, MISSING_PNG, png_file, lambda n: f"{png_file}: panoptic PNG not found {_where(layout, n)}")
            continue
        if not deep:
            continue
        from epng.data.transforms import decode_image_file  # torch: only when decoding

        try:
            image_hw = tuple(decode_image_file(img_file).shape[-2:])
        except DataError as err:
            fail(group, CORRUPT_IMAGE, img_file, lambda n: f"{err} {_where(layout, n)}")
            continue
        try:
            id_map = read_id_png(png_file)
        except DataError as err:
            fail(group, CORRUPT_PNG, png_file, lambda n: f"{err} {_where(layout, n)}")
            continue
        counts = segment_pixel_counts(id_map, {s for n in group for p in n.phrases for s in p.segment_ids})
        for n in group:
            try:
                _check_sizes(info, img_file, image_hw, png_file, id_map.shape, _where(layout, n))
                _check_segments(n, id_map, png_file, _where(layout, n), counts)
            except DataError as err:
                problems.append(ItemProblem(n.index, n.image_id, err.reason, str(err), err.path))  # type: ignore[attr-defined]
    problems.sort(key=lambda p: p.narrative)
    return problems


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
        p for p in layout.required_paths() if p.exists() and p.is_dir() != (p in (layout.image_dir, layout.panoptic_dir))
    ]
    if missing:
        out.issues.append(
            Issue(f"{len(missing)} missing folder(s)/file(s)", len(missing), [_describe(p, layout) for p in missing])
        )
    if wrong_kind:
        out.issues.append(
            Issue(f"{len(wrong_kind)} path(s) of the wrong kind (folder vs file)", len(wrong_kind), [str(p) for p in wrong_kind])
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
    problems = validate_items(layout, panoptic, narratives, deep=deep)
    by_reason: dict[str, list] = defaultdict(list)
    for p in problems:
        by_reason[p.reason].append(p)
    for reason, group in by_reason.items():
        files = list(dict.fromkeys(p.path for p in group))
        out.issues.append(
            Issue(f"{reason}: {len(files)} file(s), {len(group)} narrative(s) affected", len(group), files, group[0].message)
        )
    checked = "decoded and checked" if deep else "present"
    if not problems:
        out.info.append(f"all {len(images)} referenced images and panoptic PNGs {checked}")
    return out


def _describe(path: Path, layout) -> str:
    kind = "folder" if path in (layout.image_dir, layout.panoptic_dir) else "file"
    hint = {
        layout.image_dir: "COCO 2017 images",
        layout.panoptic_dir: "COCO panoptic PNGs (unzip panoptic_<split>.zip)",
        layout.panoptic_json: "COCO panoptic annotations",
        layout.narratives_json: "PNG narratives, from the PNG project page",
    }[path]
    return f"{path} ({kind}: {hint})"

