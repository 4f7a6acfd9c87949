"""Post-training int8 of the exported graphs (ONNX Runtime's quantization tools), an explicit option,
applied to every graph below or to a selection of them (`InferenceOptions.int8_graphs`).

* visual graph: **static** -- the convolutions get per-channel int8 weights and uint8
  inputs whose ranges are calibrated (min / max) on images: the user's, or synthetic
  scenes drawn at the model's input size. Depthwise convolutions and the stem (which
  reads the image) stay fp32: they cost little and int8 costs them the most accuracy. On a
  CPU without VNNI both runtimes multiply uint8 by int8 with instructions that add pairs of
  products in int16, which can saturate: there the weights keep 7 bits (``reduce_range``,
  for the dynamic MatMuls too).
* communicator, text transformer: **dynamic** -- the linear layers' MatMuls get per-channel
  int8 weights, their inputs are quantised per call; the attention products, the softmaxes
  and the LayerNorms stay fp32. ONNX Runtime runs these graphs on both runtimes' paths
  (OpenVINO executes dynamically quantised MatMuls slower than fp32 ones).
* head: fp32 for the paper's head (a few cheap ops); the ``"fpn"`` head's convolutions are
  static int8 like the backbone's, calibrated on what the fp32 visual and communicator
  graphs give for the calibration images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from epng.device import cpu_flags
from epng.errors import ConfigError
from epng.inference.onnx_export import ExportedGraphs
from epng.inference.options import INT8_GRAPHS
from epng.model import EPNG

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
DYNAMIC_GRAPHS = ("communicator", "text")  # quantised dynamically (the others: static, or fp32)
SYNTHETIC_CALIBRATION = 8  # synthetic scenes when no calibration image is given


def calibration_images(model: EPNG, images: Sequence[str | Path] = (), count: int = SYNTHETIC_CALIBRATION) -> Tensor:
    """Network inputs (K, 3, S, S) to calibrate on: ``images`` (files) preprocessed as `EPNG.preprocess`
    does, or ``count`` synthetic scenes (coloured shapes on textured regions) when none is given."""
    from epng.io.images import decode_image_file

    if images:
        pixels = [decode_image_file(path) for path in images]
    else:
        from epng.data.synth.scene import make_scene

        rng = np.random.default_rng(0)
        side = model.config.image_size
        pixels = [torch.from_numpy(make_scene(rng, side, side).image).permute(2, 0, 1) for _ in range(count)]
    return torch.stack([model.preprocess(p)[0] for p in pixels])


class _Feeds:
    """An ONNX Runtime `CalibrationDataReader` over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def kept_in_fp32(path: Path) -> list[str]:
    """The convolutions of a graph that static int8 leaves in fp32: depthwise ones (grouped: few
    multiply-adds per activation, and the ones int8 hurts most) and those reading a graph
    input (the stem reads the image itself)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = {value.name for value in graph.input}
    kept = []
    for node in graph.node:
        grouped = any(a.name == "group" and a.i > 1 for a in node.attribute)
        if node.op_type == "Conv" and (grouped or node.input[0] in inputs):
            kept.append(node.name)
    return kept


def quantize_static(
    source: Path, target: Path, feeds: list[dict[str, np.ndarray]], op_types: tuple[str, ...], reduce_range: bool
) -> Path:
    """Static QDQ int8 of the ``op_types`` nodes (MatMuls: those with constant weights only; not
    the convolutions `kept_in_fp32`): per-channel int8 weights, uint8 inputs with min / max
    ranges calibrated on ``feeds``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    reader = type("Reader", (_Feeds, CalibrationDataReader), {})(feeds)
    ort_quantize_static(
        str(source),
        str(target),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(op_types),
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=kept_in_fp32(source),
        extra_options={"MatMulConstBOnly": True},
    )
    return target


def quantize_dynamic(source: Path, target: Path, reduce_range: bool) -> Path:
    """Dynamic int8 of the MatMuls with constant weights: per-channel int8 weights, inputs
    quantised per call."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    ort_quantize_dynamic(
        str(source),
        str(target),
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )
    return target


def calibration_feeds(graphs: ExportedGraphs, images: Tensor) -> dict[str, list[dict[str, np.ndarray]]]:
    """Per graph ("visual", "communicator", "head"), its inputs on the calibration ``images``
    (K, 3, S, S): the fp32 graphs run in turn, with phrase features drawn in the text encoder's
    ReLU6 range."""
    from epng.inference.runtimes import GraphSession

    visual = GraphSession(graphs.visual, "onnxruntime")
    communicator = GraphSession(graphs.communicator, "onnxruntime")
    gen = torch.Generator().manual_seed(0)
    feeds: dict[str, list[dict[str, np.ndarray]]] = {"visual": [], "communicator": [], "head": []}
    for x in images:
        image = {"images": x[None].numpy()}
        fused, *fine = (t.numpy() for t in visual(image))
        phrases = torch.randn(1, 4, fused.shape[1], generator=gen).clamp(0, 6).numpy()  # (1, P=4, C)
        comm = {"fused": fused, "phrases": phrases, "phrase_mask": np.ones((1, 4), dtype=bool)}
        (communicated,) = communicator(comm)
        head = {"communicated": communicated.numpy(), "phrases": phrases}
        head.update({f"fine{i}": f for i, f in enumerate(fine)})
        for name, feed in (("visual", image), ("communicator", comm), ("head", head)):
            feeds[name].append(feed)
    return feeds


def reduce_range(runtime: str) -> bool:
    """Whether int8 weights keep 7 bits on this CPU for ``runtime`` (see the module docstring)."""
    return runtime in ("onnxruntime", "openvino") and not (cpu_flags() & VNNI_FLAGS)


def quantize_graphs(
    graphs: ExportedGraphs, runtime: str, calibration: Tensor, folder: Path, selected: Sequence[str] = INT8_GRAPHS
) -> ExportedGraphs:
    """int8 versions of the ``selected`` graphs for ``runtime``, written into ``folder``, as the
    module docstring says (the others, and the paper head, keep their fp32 files);
    ``calibration`` (K, 3, S, S) are the network inputs the static ranges come from."""
    if calibration.ndim != 4 or calibration.shape[0] == 0:
        raise ConfigError("int8 calibration needs at least one image")
    seven_bits = reduce_range(runtime)
    static = "visual" in selected or (graphs.fine and "head" in selected)
    feeds = calibration_feeds(graphs, calibration) if static else {}
    paths = {}
    if "visual" in selected:
        paths["visual"] = quantize_static(
            graphs.visual, folder / "visual.int8.onnx", feeds["visual"], ("Conv",), seven_bits
        )
    if graphs.fine and "head" in selected:
        paths["head"] = quantize_static(graphs.head, folder / "head.int8.onnx", feeds["head"], ("Conv",), seven_bits)
    dynamic_bits = reduce_range("onnxruntime")  # the dynamic graphs run on ONNX Runtime
    if "communicator" in selected:
        paths["communicator"] = quantize_dynamic(graphs.communicator, folder / "communicator.int8.onnx", dynamic_bits)
    if graphs.text is not None and "text" in selected:
        paths["text"] = quantize_dynamic(graphs.text, folder / "text.int8.onnx", dynamic_bits)
    return graphs.replace(**paths)
