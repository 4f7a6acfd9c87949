"""Where the files of a PNG benchmark root live.

For a split such as ``val2017``::

    <root>/images/<split>/                              COCO images
    <root>/annotations/png_coco_<split>.json            the narratives
    <root>/annotations/panoptic_<split>.json            COCO panoptic annotations
    <root>/annotations/panoptic_segmentation/<split>/   COCO panoptic PNGs
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SplitLayout:
    """Paths of one split (e.g. ``val2017``) under a benchmark root."""

    root: Path
    split: str

    @property
    def image_dir(self) -> Path:
        return self.root / "images" / self.split

    @property
    def narratives_json(self) -> Path:
        return self.root / "annotations" / f"png_coco_{self.split}.json"

    @property
    def panoptic_json(self) -> Path:
        return self.root / "annotations" / f"panoptic_{self.split}.json"

    @property
    def panoptic_dir(self) -> Path:
        return self.root / "annotations" / "panoptic_segmentation" / self.split

    def panoptic_png(self, image_id: int) -> Path:
        return self.panoptic_dir / f"{image_id:012d}.png"

    def required_paths(self) -> list[Path]:
        return [self.image_dir, self.narratives_json, self.panoptic_json, self.panoptic_dir]


def split_layout(root: str | Path, split: str) -> SplitLayout:
    return SplitLayout(Path(root), split)


def available_splits(root: str | Path) -> list[str]:
    """Splits that have a narratives file under ``root/annotations``."""
    ann = Path(root) / "annotations"
    if not ann.is_dir():
        return []
    prefix, suffix = "png_coco_", ".json"
    return sorted(p.name[len(prefix) : -len(suffix)] for p in ann.glob(f"{prefix}*{suffix}"))
