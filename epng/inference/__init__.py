"""Inference: the `Predictor` (one path for every caller), its options, the fast-path passes and
the exported-graph runtimes (ONNX export, ONNX Runtime / OpenVINO sessions, int8)."""

from epng.inference.options import COMPILE_SCOPES, InferenceOptions
from epng.inference.predictor import Prediction, Predictor
from epng.inference.prepare import PreparationReport
from epng.inference.runtimes import RUNTIMES
from epng.io.images import ImageInput, load_image

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
