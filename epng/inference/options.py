"""`InferenceOptions`: how a `Predictor` runs a trained model -- one set of names for every caller."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

from epng.device import PRECISIONS, Precision
from epng.errors import ConfigError
from epng.inference.runtimes import RUNTIMES, Runtime

CompileScope = Literal["visual", "communicator"]
COMPILE_SCOPES: tuple[str, ...] = get_args(CompileScope)
Int8Graph = Literal["visual", "communicator", "head", "text"]
INT8_GRAPHS: tuple[str, ...] = get_args(Int8Graph)  # the exported graphs int8 can apply to


@dataclass(frozen=True)
class InferenceOptions:
    """Inference settings (``epng predict / evaluate / res-eval / bench / app`` and `Predictor`).

    precision: ``"fp32"`` | ``"bf16"`` | ``"auto"`` (bf16 where the device has it natively).
        In bf16 the visual encoder and the communicator compute in bf16; LayerNorm, the
        softmaxes, the text encoder (unless ``text_bf16``) and the phrase kernels stay fp32.
    fast: prepare the model once for inference: BatchNorm folded into the backbone's
        convolutions, channels-last backbone and FPN, bf16 weights where the precision is
        bf16, the paper head's phrase kernels at stride 16. Off: the model runs as trained.
    channels_last, fold_bn: the two fast-path passes, each on by default when ``fast``.
    text_bf16: in bf16, also run the text encoder in bf16 (costs mask agreement).
    compile: ``torch.compile`` the stages in ``compile_scopes`` (fast path only);
        ``compile_mode``: a torch.compile mode, ``None`` = default mode with weight freezing.
    runtime: ``"torch"`` runs the model itself; ``"onnxruntime"`` | ``"openvino"`` (CPU) export
        the visual encoder, communicator, head and text transformer to ONNX once and run
        those graphs (they hold the fast path's formulation; ``fast`` and its passes do not
        apply). OpenVINO computes in bf16 where the precision resolves to bf16.
    int8: with an exported runtime, post-training int8 (static for the convolutions,
        calibrated on ``calibration`` image files or synthetic scenes; dynamic for the
        linear layers on ONNX Runtime). Off by default: it trades some mask agreement.
    int8_graphs: with ``int8``, the graphs it applies to (default all; the others stay fp32):
        ``"visual"`` (most of the time saved), ``"communicator"``, ``"head"`` (the ``"fpn"``
        head's convolutions), ``"text"``.
    export_dir: with an exported runtime, keep the exported graphs in this folder and reuse
        them for the same model (config and weights), runtime and calibration set.
    """

    precision: Precision = "auto"
    fast: bool = False
    channels_last: bool = True
    fold_bn: bool = True
    text_bf16: bool = False
    compile: bool = False
    compile_scopes: tuple[CompileScope, ...] = COMPILE_SCOPES
    compile_mode: str | None = None
    runtime: Runtime = "torch"
    int8: bool = False
    int8_graphs: tuple[Int8Graph, ...] = INT8_GRAPHS
    calibration: tuple[str, ...] = ()
    export_dir: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        bad = [s for s in self.compile_scopes if s not in COMPILE_SCOPES]
        if bad:
            raise ConfigError(f"compile scopes must be among {COMPILE_SCOPES}, got {bad}")
        if self.compile and not self.fast:
            raise ConfigError("compile=True needs fast=True (compiling prepares the model for inference)")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.runtime != "torch" and self.compile:
            raise ConfigError(f"compile=True runs torch.compile: it needs runtime='torch', not {self.runtime!r}")
        if self.int8 and self.runtime == "torch":
            raise ConfigError("int8=True needs an exported runtime: runtime='onnxruntime' or 'openvino'")
        if self.export_dir is not None and self.runtime == "torch":
            raise ConfigError("export_dir holds exported graphs: it needs runtime='onnxruntime' or 'openvino'")
        if self.calibration and not self.int8:
            raise ConfigError("calibration images are for int8=True")
        bad = [g for g in self.int8_graphs if g not in INT8_GRAPHS]
        if bad or not self.int8_graphs:
            chosen = list(self.int8_graphs)
            raise ConfigError(f"int8 graphs must be a non-empty selection of {INT8_GRAPHS}, got {chosen}")
        if set(self.int8_graphs) != set(INT8_GRAPHS) and not self.int8:
            raise ConfigError("int8_graphs chooses what int8=True quantises: it needs int8=True")
        object.__setattr__(self, "int8_graphs", tuple(g for g in INT8_GRAPHS if g in self.int8_graphs))
        object.__setattr__(self, "compile_scopes", tuple(self.compile_scopes))
        object.__setattr__(self, "calibration", tuple(str(p) for p in self.calibration))
        if self.export_dir is not None:
            object.__setattr__(self, "export_dir", str(self.export_dir))

    def to_dict(self) -> dict:
        return asdict(self)
