"""Inference: the `Predictor` (one path for every caller), its options and the fast-path passes."""

from epng.inference.options import COMPILE_SCOPES, InferenceOptions
from epng.inference.predictor import ImageInput, Prediction, Predictor, load_image
from epng.inference.prepare import PreparationReport

__all__ = [
    "COMPILE_SCOPES",
    "ImageInput",
    "InferenceOptions",
    "Prediction",
    "PreparationReport",
    "Predictor",
    "load_image",
]
