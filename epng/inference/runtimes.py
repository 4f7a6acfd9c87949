"""Exported-graph runtimes: an ONNX Runtime or OpenVINO session behind one call.

``runtime`` is one of :data:`RUNTIMES`: ``"torch"`` runs the model itself; ``"onnxruntime"``
and ``"openvino"`` run its exported ONNX graphs (`epng.inference.onnx_export`) on the CPU.
A `GraphSession` takes named numpy inputs and gives the graph's outputs as CPU tensors it
owns (OpenVINO's output buffers are reused by the next call, so they are copied out).
Both use ``threads`` intra-op threads (default: torch's). ONNX Runtime's threads do not spin
between runs, its sessions free each buffer after its last use (no reuse plan across the
graph) and share one CPU arena. OpenVINO computes in bf16 where
``bf16`` is asked (natively bf16 CPUs), in fp32 otherwise; ONNX Runtime always in fp32.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from epng.errors import ConfigError

Runtime = Literal["torch", "onnxruntime", "openvino"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)
EXPORT_PACKAGES = ("onnx", "onnxscript")  # what exporting needs besides torch
SAME_AS_REQUESTED = 1  # ONNX Runtime's arena extend strategy kSameAsRequested


def missing_packages(runtime: str) -> list[str]:
    """The packages ``runtime`` needs that are not installed (empty for ``"torch"``)."""
    if runtime == "torch":
        return []
    return [name for name in (*EXPORT_PACKAGES, runtime) if importlib.util.find_spec(name) is None]


def check_runtime(runtime: str) -> None:
    """`ConfigError` unless ``runtime`` is known and its packages are installed."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    missing = missing_packages(runtime)
    if missing:
        raise ConfigError(f"runtime {runtime!r} needs the package(s) {', '.join(missing)}: pip install 'epng[export]'")


@functools.cache
def _register_shared_arena() -> None:
    """One CPU arena for every ONNX Runtime session of this process (it grows by what is asked,
    not by powers of two): a session's freed blocks serve the next graph instead of each
    session keeping its own peak."""
    import onnxruntime as ort

    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, SAME_AS_REQUESTED, -1, -1))


class GraphSession:
    """One ONNX file on one runtime: ``session(feeds)`` -> its outputs, in graph order, as tensors."""

    def __init__(self, path: str | Path, runtime: Runtime, *, threads: int | None = None, bf16: bool = False) -> None:
        check_runtime(runtime)
        if runtime == "torch":
            raise ConfigError("a GraphSession runs an exported graph: runtime 'onnxruntime' or 'openvino'")
        self.path, self.runtime = Path(path), runtime
        self.threads = threads or torch.get_num_threads()
        self.precision = "bf16" if bf16 and runtime == "openvino" else "fp32"
        if runtime == "onnxruntime":
            self._run = self._onnxruntime()
        else:
            self._run = self._openvino()

    def _onnxruntime(self) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # each session has its own thread pool: threads spinning after a run would take the
        # cores from the next graph (or from torch's stages) on a small CPU
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # the planned reuse of buffers across the graph kept the stacked communicator layers'
        # attention blocks alive together (GBs at 76x76 tokens): each buffer is freed after
        # its last use instead, and the freed blocks go back to one arena all sessions share
        options.enable_mem_reuse = False
        options.add_session_config_entry("session.use_env_allocators", "1")
        _register_shared_arena()
        session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        return lambda feeds: session.run(None, feeds)

    def _openvino(self) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
        import openvino as ov

        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
        }
        compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        request = compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in compiled.inputs]
        self.output_names = [o.get_any_name() for o in compiled.outputs]

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            request.infer(feeds)
            return [np.array(request.get_output_tensor(i).data, copy=True) for i in range(len(self.output_names))]

        return run

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[torch.Tensor]:
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise ConfigError(f"{self.path.name}: missing input(s) {missing}")
        return [torch.from_numpy(np.asarray(out)) for out in self._run({k: feeds[k] for k in self.input_names})]
