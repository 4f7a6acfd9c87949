"""`ExportedModel`: a model's exported graphs on one runtime -- what a `Predictor` calls for the
stages it exports when `InferenceOptions.runtime` is not ``"torch"``.

Built once: export (`epng.inference.onnx_export`), int8 where asked (`epng.inference.quantize`),
one `GraphSession` per graph; the files live in a temporary folder only while the sessions
load them. ``encode_image``, ``communicate`` and ``head`` take and give CPU tensors;
`ExportedTransformer` stands in for the text encoder's transformer (its cache, pooling and
projection stay in torch). `runtime_model` gives the light model a runtime predictor keeps:
pre- and post-processing and the text encoder, without the exported modules' weights.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor, nn

from epng.errors import ConfigError
from epng.inference.export_cache import cached, calibration_key, model_key
from epng.inference.onnx_export import export_graphs
from epng.inference.options import INT8_GRAPHS
from epng.inference.quantize import DYNAMIC_GRAPHS, calibration_images, quantize_graphs, reduce_range
from epng.inference.runtimes import GraphSession, Runtime, check_runtime
from epng.model import EPNG
from epng.model.visual_encoder import VisualFeatures

if TYPE_CHECKING:
    from transformers import PretrainedConfig


def _array(t: Tensor) -> np.ndarray:
    """A CPU numpy view of ``t`` (float tensors as float32) for a graph's input."""
    t = t.detach().cpu()
    return (t.float() if t.is_floating_point() else t).contiguous().numpy()


GRAPHS = INT8_GRAPHS  # every exported graph, and each one int8 can apply to


def graph_runtime(runtime: Runtime, graph: str, int8: bool) -> Runtime:
    """The runtime that runs ``graph`` (``int8``: whether that graph is quantised): ``runtime``,
    except that on OpenVINO the dynamically quantised graphs (communicator, text;
    `epng.inference.quantize`) run on ONNX Runtime, which has kernels for them (OpenVINO runs
    them slower than their fp32 versions)."""
    if int8 and runtime == "openvino" and graph in DYNAMIC_GRAPHS:
        return "onnxruntime"
    return runtime


class ExportedTransformer(nn.Module):
    """The text graph in place of a transformers model: ``(input_ids, attention_mask)`` -> an
    object with ``last_hidden_state`` and ``hidden_states`` (the ones the graph gives)."""

    def __init__(self, session: GraphSession, config: PretrainedConfig) -> None:
        super().__init__()
        self.session = session
        self.config = config  # the transformer's config (hidden size, positions)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, output_hidden_states: bool = False) -> SimpleNamespace:
        hidden = self.session({"input_ids": _array(input_ids.long()), "attention_mask": _array(attention_mask.long())})
        return SimpleNamespace(last_hidden_state=hidden[-1], hidden_states=tuple(hidden))


class ExportedModel:
    """The visual, communicator, head (and text) graphs of ``model`` on ``runtime``.

    Args:
        model: a CPU `EPNG` in eval mode (read, not modified).
        runtime: ``"onnxruntime"`` or ``"openvino"``.
        int8: post-training int8 (`epng.inference.quantize`), calibrated on ``calibration``
            (image files; default: synthetic scenes), of the graphs in ``int8_graphs``.
        bf16: OpenVINO computes in bf16 (for CPUs with native bf16).
        text: also run the text encoder's transformer as a graph.
        threads: intra-op threads (default: torch's).
        export_dir: keep the graphs in this folder and reuse them (`epng.inference.export_cache`);
            default: a temporary folder, removed once the sessions are loaded.
    """

    def __init__(
        self,
        model: EPNG,
        runtime: Runtime,
        *,
        int8: bool = False,
        int8_graphs: Sequence[str] = INT8_GRAPHS,
        bf16: bool = False,
        calibration: Sequence[str | Path] = (),
        text: bool = True,
        threads: int | None = None,
        export_dir: str | Path | None = None,
    ) -> None:
        check_runtime(runtime)
        if runtime == "torch":
            raise ConfigError("ExportedModel runs exported graphs: runtime 'onnxruntime' or 'openvino'")
        if int8:
            check_runtime("onnxruntime")  # its quantization tools make the int8 graphs
        self.runtime, self.int8 = runtime, int8
        self.int8_graphs = tuple(g for g in INT8_GRAPHS if g in int8_graphs) if int8 else ()
        selection = None if set(self.int8_graphs) == set(INT8_GRAPHS) else self.int8_graphs
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="epng-onnx-") as tmp:
            root = Path(export_dir) if export_dir is not None else Path(tmp)
            folder = root / (model_key(model, text) if export_dir is not None else "graphs")
            graphs = cached(folder, lambda f: export_graphs(model, f, text=text))
            if int8:
                images = tuple(str(p) for p in calibration)
                graphs = cached(
                    folder / calibration_key(runtime, images, reduce_range(runtime), selection),
                    lambda f: quantize_graphs(graphs, runtime, calibration_images(model, images), f, self.int8_graphs),
                )

            present = [name for name in GRAPHS if name != "text" or graphs.text is not None]
            self.graph_runtimes = {name: graph_runtime(runtime, name, name in self.int8_graphs) for name in present}

            def session(name: str, path: Path) -> GraphSession:
                return GraphSession(path, self.graph_runtimes[name], threads=threads, bf16=bf16)

            self.visual = session("visual", graphs.visual)
            self.communicator = session("communicator", graphs.communicator)
            self.head_graph = session("head", graphs.head)
            transformer = model.text_encoder.model
            self.text = ExportedTransformer(session("text", graphs.text), transformer.config) if graphs.text else None
        self.precision = self.visual.precision
        self.fine = graphs.fine
        self.image_size = graphs.image_size
        self.build_seconds = time.perf_counter() - start

    def encode_image(self, images: Tensor) -> VisualFeatures:
        """(B, 3, S, S) normalised images -> fused map (B, C, S/16, S/16) [+ finer FPN maps]."""
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ConfigError(
                f"the exported graphs take {self.image_size}x{self.image_size} images, got {tuple(images.shape[-2:])}"
            )
        fused, *fine = self.visual({"images": _array(images)})
        return VisualFeatures(fused, tuple(fine))

    def communicate(self, fused: Tensor, phrases: Tensor, phrase_mask: Tensor) -> Tensor:
        """(B, C, h, w) + (B, P, C) + (B, P) bool -> communicated map (B, C, h, w)."""
        feeds = {"fused": _array(fused), "phrases": _array(phrases), "phrase_mask": _array(phrase_mask.bool())}
        return self.communicator(feeds)[0]

    def head(self, communicated: Tensor, phrases: Tensor, fine: Sequence[Tensor] = ()) -> Tensor:
        """Communicated map + phrases (+ finer FPN maps) -> mask logits (B, P, S/4, S/4), fp32."""
        feeds = {"communicated": _array(communicated), "phrases": _array(phrases)}
        feeds.update({f"fine{i}": _array(f) for i, f in enumerate(fine)})
        return self.head_graph(feeds)[0]


def _shell(module: nn.Module, **children: nn.Module | None) -> nn.Module:
    """A shallow copy of ``module`` sharing its weights, with some children replaced (or dropped)."""
    shell = copy.copy(module)
    shell._modules = OrderedDict(module._modules)
    for name, child in children.items():
        shell._modules[name] = child
    return shell


def runtime_model(model: EPNG, backend: ExportedModel) -> EPNG:
    """``model`` without its exported modules (visual encoder, communicator, head: None), its text
    encoder's transformer replaced by the text graph when there is one; the weights it keeps
    are shared with ``model``, which is left unchanged."""
    text_encoder = model.text_encoder
    if backend.text is not None:
        text_encoder = _shell(text_encoder, model=backend.text)
        text_encoder._cache = OrderedDict()  # its own cache: features of the graph, not of the model
    return _shell(model, visual_encoder=None, communicator=None, head=None, text_encoder=text_encoder)
