"""`epng export`: a checkpoint as ONNX graphs, for ONNX Runtime, OpenVINO or any ONNX runtime.

    epng export --checkpoint runs/demo/best --format onnx --output model.onnx

writes ``model.onnx`` (images (B, 3, S, S) + phrase features (B, P, C) + phrase mask (B, P)
-> mask logits (B, P, S/4, S/4), S the checkpoint's input size) and ``model.text.onnx``
(word pieces -> the transformer's hidden states the phrase features are pooled from).
"""

from __future__ import annotations

import argparse

HELP = "export a checkpoint to ONNX: model.onnx (image graph) + model.text.onnx (text transformer)"
FORMATS = ("onnx",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a saved model folder (e.g. a run's best/)")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default onnx)")
    parser.add_argument("--output", required=True, help="the image graph's file, e.g. model.onnx")
    parser.add_argument("--no-text", action="store_true", help="do not export the text transformer")


def run(args: argparse.Namespace) -> int:
    from epng.errors import ConfigError
    from epng.inference.onnx_export import OPSET, export_model
    from epng.inference.runtimes import missing_packages
    from epng.model import load_model

    missing = [name for name in missing_packages("onnxruntime") if name != "onnxruntime"]
    if missing:
        raise ConfigError(f"epng export needs the package(s) {', '.join(missing)}: pip install 'epng[export]'")
    model = load_model(args.checkpoint, "cpu")
    for path in export_model(model, args.output, text=not args.no_text):
        print(f"{path} (opset {OPSET}, input {model.config.image_size}x{model.config.image_size})")
    return 0
