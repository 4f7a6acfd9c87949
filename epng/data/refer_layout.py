"""Where the files of a "refer" dataset (RefCOCO, RefCOCO+, RefCOCOg) live, and its valid names.

``root`` is the folder that holds one sub-folder per dataset::

    <root>/<dataset>/refs(<split_by>).p     pickle (protocol 2, written by Python 2) of refs
    <root>/<dataset>/instances.json         COCO instances (images, annotations, categories)
    <image_dir>/COCO_train2014_<image_id:012d>.jpg   default image_dir: <root>/images/train2014

Unknown dataset / split_by / split names are a :class:`ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from epng.errors import ConfigError

#: dataset -> split_by -> splits found in its refs file
REFER_DATASETS: dict[str, dict[str, tuple[str, ...]]] = {
    "refcoco": {"unc": ("train", "val", "testA", "testB")},
    "refcoco+": {"unc": ("train", "val", "testA", "testB")},
    "refcocog": {"umd": ("train", "val", "test"), "google": ("train", "val")},
}
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
#: the (dataset, split) pairs of the paper's zero-shot table
STANDARD_PAIRS: tuple[tuple[str, str], ...] = (
    ("refcoco", "testA"),
    ("refcoco", "testB"),
    ("refcoco+", "testA"),
    ("refcoco+", "testB"),
    ("refcocog", "test"),
)
IMAGE_SUBDIR = ("images", "train2014")


def resolve_names(dataset: str, split_by: str | None = None, split: str | None = None) -> str:
    """Check ``dataset`` / ``split_by`` / ``split`` against :data:`REFER_DATASETS`; return the split_by."""
    if dataset not in REFER_DATASETS:
        raise ConfigError(f"unknown refer dataset {dataset!r}; expected one of {', '.join(REFER_DATASETS)}")
    split_bys = REFER_DATASETS[dataset]
    split_by = split_by or DEFAULT_SPLIT_BY[dataset]
    if split_by not in split_bys:
        raise ConfigError(f"unknown split_by {split_by!r} for {dataset}; expected one of {', '.join(split_bys)}")
    if split is not None and split not in split_bys[split_by]:
        raise ConfigError(
            f"unknown split {split!r} for {dataset} ({split_by}); expected one of {', '.join(split_bys[split_by])}"
        )
    return split_by


@dataclass(frozen=True)
class ReferLayout:
    """Paths of one refer dataset under ``root``."""

    root: Path
    dataset: str
    split_by: str
    image_dir: Path

    @property
    def dataset_dir(self) -> Path:
        return self.root / self.dataset

    @property
    def refs_file(self) -> Path:
        return self.dataset_dir / f"refs({self.split_by}).p"

    @property
    def instances_file(self) -> Path:
        return self.dataset_dir / "instances.json"

    def image_file(self, image_id: int) -> Path:
        return self.image_dir / image_file_name(image_id)

    def missing(self) -> list[Path]:
        """The required files that do not exist (empty when the dataset is there)."""
        return [p for p in (self.refs_file, self.instances_file) if not p.is_file()]


def image_file_name(image_id: int) -> str:
    return f"COCO_train2014_{int(image_id):012d}.jpg"


def refer_layout(
    root: str | Path, dataset: str, split_by: str | None = None, image_dir: str | Path | None = None
) -> ReferLayout:
    """The layout of ``dataset`` under ``root``; images default to ``<root>/images/train2014``."""
    root = Path(root)
    split_by = resolve_names(dataset, split_by)
    images = Path(image_dir) if image_dir is not None else root.joinpath(*IMAGE_SUBDIR)
    return ReferLayout(root, dataset, split_by, images)
