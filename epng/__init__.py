"""EPNG: end-to-end real-time Panoptic Narrative Grounding (Wang et al., AAAI 2023)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from epng.inference import Predictor

__version__ = "0.1.0"


def __getattr__(name: str) -> type[Predictor]:
    # `from epng import Predictor` without importing torch for `epng --help`
    if name == "Predictor":
        from epng.inference import Predictor

        return Predictor
    raise AttributeError(f"module 'epng' has no attribute {name!r}")
