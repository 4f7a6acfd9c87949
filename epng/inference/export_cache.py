"""A folder of exported graphs reused across runs (`InferenceOptions.export_dir`).

Exporting the paper's model takes a while, so a runtime predictor can keep its graphs in
a folder: ``<export_dir>/<key>/`` holds the fp32 graphs of one model, ``key`` a digest of
its config and every weight; ``<key>/int8-<runtime>-<calibration key>/`` the int8 versions
for one runtime and calibration set. A sub-folder is used only once ``graphs.json`` in it
says it is complete; anything else is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from epng.inference.onnx_export import GRAPH_VERSION, OPSET, ExportedGraphs
from epng.model import EPNG

MANIFEST = "graphs.json"


def model_key(model: EPNG, text: bool) -> str:
    """Digest of ``model``'s config and weights, of the exported formulation's version and opset,
    and of whether the text graph is included."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    digest.update(f"{GRAPH_VERSION} {OPSET} {'text' if text else 'no-text'}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def calibration_key(
    runtime: str, calibration: tuple[str, ...], reduce_range: bool, graphs: tuple[str, ...] | None = None
) -> str:
    """Name of the int8 sub-folder of one runtime, calibration set, weight range and selection of
    int8 graphs (``None``: all of them)."""
    key = [list(calibration), reduce_range] + ([] if graphs is None else [sorted(graphs)])
    digest = hashlib.blake2b(json.dumps(key).encode(), digest_size=6).hexdigest()
    return f"int8-{runtime}-{digest}"


def _save(graphs: ExportedGraphs, folder: Path) -> None:
    fields = {
        k: (str(Path(v).relative_to(folder.parent)) if isinstance(v, Path) else v) for k, v in vars(graphs).items()
    }
    (folder / MANIFEST).write_text(json.dumps(fields, indent=1) + "\n")


def _load(folder: Path) -> ExportedGraphs | None:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None
    fields = json.loads(manifest.read_text())
    paths = ("visual", "communicator", "head", "text")
    loaded = {k: (folder.parent / v if k in paths and v is not None else v) for k, v in fields.items()}
    if any(loaded[k] is not None and not Path(loaded[k]).is_file() for k in paths):
        return None
    return ExportedGraphs(**loaded)


def cached(folder: Path, build: Callable[[Path], ExportedGraphs]) -> ExportedGraphs:
    """The graphs recorded in ``folder``, or ``build(folder)`` recorded there first."""
    graphs = _load(folder)
    if graphs is None:
        folder.mkdir(parents=True, exist_ok=True)
        graphs = build(folder)
        _save(graphs, folder)
    return graphs
