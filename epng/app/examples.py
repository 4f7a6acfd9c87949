"""Example scenes for the app: a few synthetic images with their narratives, phrases in [brackets].

They are drawn by the same code as ``epng synth`` (a scene is a pure function of its seed,
split and index), written once as PNG files to a cache folder and reused on later starts.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from epng.data.png_format import locate_utterances
from epng.data.synth import synth_image

SEED = 0
SPLIT = "val2017"
INDICES = (1, 3, 6)  # scenes of `epng synth --seed 0`'s val2017 with short, varied narratives
SIZE = 256


@dataclass(frozen=True)
class Example:
    image: Path  # PNG file
    narrative: str  # phrases marked with [brackets]


def bracketed_narrative(record: dict) -> str:
    """A narrative record (``caption`` + ``segments``) -> its caption with every grounded noun
    chunk (``noun`` with segment ids) marked in [brackets]."""
    caption = record["caption"]
    spans = locate_utterances(caption, [chunk["utterance"] for chunk in record["segments"]])
    pieces, cursor = [], 0
    for chunk, (start, end) in zip(record["segments"], spans):
        if chunk.get("noun") and chunk.get("segment_ids"):
            pieces += [caption[cursor:start], "[", caption[start:end], "]"]
            cursor = end
    pieces.append(caption[cursor:])
    return "".join(pieces)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/epng/app_examples`` (``~/.cache`` when unset), or a folder under the
    temporary directory when the home folder is not writable."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "epng" / "app_examples"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / "epng_app_examples"
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_png(pixels: np.ndarray, path: Path) -> None:
    """Write through a temporary name, so that a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, path)


def load_examples(folder: str | Path | None = None) -> list[Example]:
    """The example scenes, their images written under ``folder`` (default `default_cache_dir`)
    when not there yet."""
    folder = Path(folder) if folder is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for index in INDICES:
        _, scene, records = synth_image(SEED, SPLIT, index, SIZE)
        path = folder / f"synth_seed{SEED}_{SPLIT}_{index}_{SIZE}px.png"
        if not path.is_file():
            _write_png(scene.image, path)
        examples.append(Example(path, bracketed_narrative(records[0])))
    return examples
