"""EPNG: end-to-end real-time Panoptic Narrative Grounding (Wang et al., AAAI 2023)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from epng import Predictor` without importing torch for `epng --help`
    if name == "Predictor":
        from epng.inference import Predictor

        return Predictor
    raise AttributeError(f"module 'epng' has no attribute {name!r}")
