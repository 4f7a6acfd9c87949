"""ONNX export of a trained `EPNG`: the graphs an exported-graph runtime runs, and the user's file.

The runtimes (`epng.inference.exported`) run four graphs, each with a dynamic batch (and
phrase / word-piece count), in fp32, opset `OPSET`:

* **visual** -- ``images`` (B, 3, S, S) -> ``fused`` (B, C, S/16, S/16) [+ ``fine0`` P3, ``fine1``
  P2 for the ``"fpn"`` head]; BatchNorm folded into the convolutions first.
* **communicator** -- ``fused`` + ``phrases`` (B, P, C) + ``phrase_mask`` (B, P) bool ->
  ``communicated`` (B, C, S/16, S/16). LPA runs its banded formulation
  (`epng.model.lpa.banded`): exact, the grid fixed by ``S``, no (N, N) table; the phrase
  cross-attention its reassociated form (`epng.inference.fold_cross`).
* **head** -- ``communicated`` + ``phrases`` [+ ``fine*``] -> ``mask_logits`` (B, P, S/4, S/4),
  the inference head (`DenseHead.mask_logits`).
* **text** -- ``input_ids``, ``attention_mask`` (B, T) int64 -> the frozen transformer's hidden
  states the text encoder reads (``hidden0..3``: the last four for ``"mean4"``; ``hidden0``:
  the last one for ``"last"``); pooling and projection stay in torch.

The image side ``S`` is the model's ``config.image_size`` (what `EPNG.preprocess` gives).
`export_model` writes the user-facing files: ``model.onnx``, one image graph (the visual,
communicator and head graphs chained: images + phrase features -> mask logits), and
``model.text.onnx`` beside it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from epng.errors import ConfigError
from epng.inference.fold_bn import fold_conv_bn
from epng.inference.fold_cross import fold_cross_attention
from epng.model import EPNG
from epng.model.lpa.banded import banded_lpa

if TYPE_CHECKING:
    import onnx

OPSET = 18
GRAPH_VERSION = 4  # bumped when the exported formulation or the int8 recipe changes (cached graphs are keyed by it)
MAX_BATCH = 1024
MAX_PHRASES = 4096


class VisualGraph(nn.Module):
    """images (B, 3, S, S) -> fused (B, C, S/16, S/16) [, P3 (B, f, S/8, S/8), P2 (B, f, S/4, S/4)]."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        features = self.visual(images)
        return (features.fused, *features.fine)


class CommunicatorGraph(nn.Module):
    """fused (B, C, h, w), phrases (B, P, C), phrase_mask (B, P) bool -> communicated (B, C, h, w)."""

    def __init__(self, communicator: nn.Module) -> None:
        super().__init__()
        self.communicator = communicator

    def forward(self, fused: Tensor, phrases: Tensor, phrase_mask: Tensor) -> Tensor:
        return self.communicator(fused, phrases, phrase_mask)


class HeadGraph(nn.Module):
    """communicated (B, C, h, w), phrases (B, P, C) [, fine maps] -> mask logits (B, P, 4h, 4w)."""

    def __init__(self, model: EPNG) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, communicated: Tensor, phrases: Tensor, fine: list[Tensor]) -> Tensor:
        return self.head.mask_logits(communicated, phrases, tuple(fine))


class TextGraph(nn.Module):
    """input_ids, attention_mask (B, T) -> the hidden states (B, T, D) the text encoder reads."""

    def __init__(self, transformer: nn.Module, layers: str) -> None:
        super().__init__()
        self.transformer = transformer
        self.count = 4 if layers == "mean4" else 1

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        out = self.transformer(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return tuple(out.hidden_states[-self.count :])


@dataclass(frozen=True)
class ExportedGraphs:
    """Paths of a model's exported graphs and what running them needs."""

    visual: Path
    communicator: Path
    head: Path
    text: Path | None
    image_size: int
    fine: int  # finer FPN maps the visual graph gives and the head graph takes
    text_outputs: int  # hidden states the text graph gives (0: no text graph)

    def replace(self, **paths: Path) -> ExportedGraphs:
        """The same graphs with some files swapped (e.g. for their int8 versions)."""
        return replace(self, **paths)


def _export(module: nn.Module, args: tuple, path: Path, names: tuple[list[str], list[str]], dynamic: tuple) -> Path:
    """``torch.onnx.export`` (the dynamo exporter) of ``module`` on example ``args`` into one file;
    ``dynamic``: the dynamic dims of each argument, structured like ``args``."""
    inputs, outputs = names
    # the exporter's progress lines and notes (dim names and the like) stay out of the output
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


class _Exporter:
    """Example inputs, dynamic dims and the folded backbone shared by one model's exports."""

    def __init__(self, model: EPNG) -> None:
        if next(model.parameters()).device.type != "cpu":
            raise ConfigError("ONNX export runs on a CPU model: move it with model.to('cpu') first")
        self.model = model.eval()
        self.batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        self.phrase_dim = torch.export.Dim("phrases", min=1, max=MAX_PHRASES)
        self.visual = copy.deepcopy(model.visual_encoder)
        self.visual.body, _ = fold_conv_bn(self.visual.body)
        size = model.config.image_size
        self.images = torch.randn(2, 3, size, size)  # (B=2, 3, S, S)
        self.features = self.visual(self.images)
        self.fine = [f"fine{i}" for i in range(len(self.features.fine))]
        self.phrases = torch.randn(2, 3, model.config.d_model)  # (B=2, P=3, C)
        self.phrase_mask = torch.tensor([[True, True, True], [True, True, False]])  # one padding phrase
        self.communicator = copy.deepcopy(model.communicator)
        fold_cross_attention(self.communicator)
        for lpa in self.communicator.lpa_layers():  # real tables now: built inside the trace they would be fake
            lpa.geometry(tuple(self.features.fused.shape[-2:]), "cpu")

    def phrase_dims(self) -> tuple[dict, dict]:
        """Dynamic dims of ``phrases`` (B, P, C) and ``phrase_mask`` (B, P)."""
        return {0: self.batch, 1: self.phrase_dim}, {0: self.batch, 1: self.phrase_dim}

    def visual_graph(self, path: Path) -> Path:
        names = (["images"], ["fused", *self.fine])
        return _export(VisualGraph(self.visual), (self.images,), path, names, ({0: self.batch},))

    def communicator_graph(self, path: Path) -> Path:
        args = (self.features.fused, self.phrases, self.phrase_mask)
        names = (["fused", "phrases", "phrase_mask"], ["communicated"])
        with banded_lpa():
            return _export(
                CommunicatorGraph(self.communicator), args, path, names, ({0: self.batch}, *self.phrase_dims())
            )

    def head_graph(self, path: Path) -> Path:
        args = (self.features.fused, self.phrases, list(self.features.fine))  # a list: the exporter's own form
        dims = ({0: self.batch}, self.phrase_dims()[0], [{0: self.batch} for _ in self.fine])
        return _export(
            HeadGraph(self.model), args, path, (["communicated", "phrases", *self.fine], ["mask_logits"]), dims
        )

    def text_graph(self, path: Path) -> tuple[Path, int]:
        graph = TextGraph(self.model.text_encoder.model, self.model.config.text_layers)
        ids = torch.randint(1000, 2000, (2, 16))  # (B=2, T=16) word pieces
        words = torch.export.Dim("words", min=2, max=self.model.text_encoder.max_length)
        dims = ({0: self.batch, 1: words}, {0: self.batch, 1: words})
        names = (["input_ids", "attention_mask"], [f"hidden{i}" for i in range(graph.count)])
        return _export(graph, (ids, torch.ones_like(ids)), path, names, dims), graph.count


@torch.no_grad()
def export_graphs(model: EPNG, folder: str | Path, *, text: bool = True) -> ExportedGraphs:
    """Export ``model``'s visual, communicator, head (and ``text``) graphs into ``folder``.

    ``model`` keeps its weights (BatchNorm is folded in a copy of the backbone); its LPA
    layers get their grid tables for ``config.image_size`` built ahead of the trace.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ex = _Exporter(model)
    text_path, outputs = ex.text_graph(folder / "text.onnx") if text else (None, 0)
    return ExportedGraphs(
        visual=ex.visual_graph(folder / "visual.onnx"),
        communicator=ex.communicator_graph(folder / "communicator.onnx"),
        head=ex.head_graph(folder / "head.onnx"),
        text=text_path,
        image_size=model.config.image_size,
        fine=len(ex.fine),
        text_outputs=outputs,
    )


def _rename_input(model: onnx.ModelProto, old: str, new: str) -> None:
    """Rename graph input ``old`` of ``model`` (in place), with every use of it."""
    for value in model.graph.input:
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def merge_image_graph(graphs: ExportedGraphs, output: str | Path) -> Path:
    """One ONNX file: images + phrase features -> mask logits, the visual, communicator and head
    graphs chained (their inner names prefixed, the phrase input shared)."""
    import onnx
    from onnx import compose, helper

    def load(path: Path, prefix: str) -> onnx.ModelProto:
        model = onnx.load(str(path))
        return compose.add_prefix(model, prefix, rename_inputs=False, rename_outputs=False)

    fine = [f"fine{i}" for i in range(graphs.fine)]
    front = compose.merge_models(
        load(graphs.visual, "visual/"),
        load(graphs.communicator, "communicator/"),
        io_map=[("fused", "fused")],
        outputs=["communicated", *fine],
    )
    # the head reads the same phrases: hand them on as an output the head's input is linked to
    front.graph.node.append(helper.make_node("Identity", ["phrases"], ["head_phrases"]))
    phrases = next(v for v in front.graph.input if v.name == "phrases")
    front.graph.output.append(helper.make_tensor_value_info("head_phrases", phrases.type.tensor_type.elem_type, None))
    head = load(graphs.head, "head/")
    _rename_input(head, "phrases", "head_phrases")
    links = [("communicated", "communicated"), ("head_phrases", "head_phrases")] + [(f, f) for f in fine]
    merged = compose.merge_models(front, head, io_map=links, outputs=["mask_logits"])
    onnx.checker.check_model(merged)
    onnx.save(merged, str(output))
    return Path(output)


def write_model_files(graphs: ExportedGraphs, output: str | Path) -> list[Path]:
    """``output`` (the image graph: images + phrase features -> mask logits) and, when ``graphs``
    has a text graph, ``<stem>.text.onnx`` (word pieces -> hidden states) beside it."""
    import shutil

    output = Path(output)
    if output.suffix != ".onnx":
        raise ConfigError(f"{output}: expected a file name ending in .onnx")
    output.parent.mkdir(parents=True, exist_ok=True)
    paths = [merge_image_graph(graphs, output)]
    if graphs.text is not None:
        paths.append(Path(shutil.copyfile(graphs.text, output.with_suffix(".text.onnx"))))
    return paths


def export_model(model: EPNG, output: str | Path, *, text: bool = True) -> list[Path]:
    """Export ``model`` and write its user-facing files (`write_model_files`); returns their paths."""
    import tempfile

    if Path(output).suffix != ".onnx":
        raise ConfigError(f"{output}: expected a file name ending in .onnx")
    with tempfile.TemporaryDirectory(prefix="epng-export-") as tmp:
        return write_model_files(export_graphs(model, tmp, text=text), output)
