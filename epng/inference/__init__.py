"""Inference: the `Predictor` (one path for every caller), its options, the fast-path passes and
the exported-graph runtimes (ONNX export, ONNX Runtime / OpenVINO sessions, int8)."""

from epng.inference.options import COMPILE_SCOPES, InferenceOptions
from epng.inference.predictor import ImageInput, Prediction, Predictor, load_image
from epng.inference.prepare import PreparationReport
from epng.inference.runtimes import RUNTIMES

__all__ = [
    "COMPILE_SCOPES",
    "ImageInput",
    "InferenceOptions",
    "Prediction",
    "PreparationReport",
    "Predictor",
    "RUNTIMES",
    "load_image",
]
