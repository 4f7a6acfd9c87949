"""`ModelBenchConfig`: what `epng bench` measures, and the inference options of its paths: plain,
fast, and one per exported runtime (``"onnxruntime"``, ``"openvino"``; ``"<runtime>-int8"`` with int8)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from epng.device import Precision
from epng.inference import COMPILE_SCOPES, InferenceOptions
from epng.inference.options import INT8_GRAPHS

PATHS = ("plain", "fast")
TEXT_MODES = ("text", "cached")  # text: the text encoder runs every call; cached: its features are reused
INT8_SUFFIX = "-int8"
_TUPLE_FIELDS = ("orig_size", "compile_scopes", "runtimes", "int8_graphs")


@dataclass
class ModelBenchConfig:
    """What `epng bench` measures (the rules are in `epng.bench.model_bench`)."""

    preset: str = "epng_r101_bert"
    image_size: int = 640
    orig_size: tuple[int, int] = (480, 640)
    batch: int = 1
    throughput_batch: int = 8
    device: str = "cpu"
    repeats: int = 5
    warmup: int = 1
    max_case_seconds: float = 60.0
    phrases: int = 8
    tokens: int = 96
    fast: bool = False  # compare plain and fast side by side
    fast_only: bool = False  # only the fast path (e.g. a GPU run where the plain one is known)
    precision: Precision = "auto"  # the fast path's; the plain path is always fp32
    channels_last: bool = True
    fold_bn: bool = True
    text_bf16: bool = False  # fast path in bf16: also the text encoder
    compile: bool = False
    compile_mode: str | None = None
    compile_scopes: tuple[str, ...] = COMPILE_SCOPES
    runtimes: tuple[str, ...] = ()  # exported runtimes measured beside plain (and fast)
    int8: bool = False  # each runtime also with int8
    int8_graphs: tuple[str, ...] = INT8_GRAPHS  # the graphs int8 applies to
    export_dir: str | None = None  # where the runtime paths keep their exported graphs
    train: bool = False
    train_batch: int | None = None  # default: batch
    train_repeats: int = 3
    stages: bool = True
    flops: bool = True
    memory: bool = True
    seed: int = 0
    train_only: bool = False  # skip every inference measurement
    deadline_seconds: float | None = None  # start no new phase after this many seconds
    overrides: dict = field(default_factory=dict)  # extra EPNGConfig fields

    @property
    def runtime_paths(self) -> tuple[str, ...]:
        """One path per exported runtime, and its int8 twin with ``int8``."""
        return tuple(p for rt in self.runtimes for p in ((rt, rt + INT8_SUFFIX) if self.int8 else (rt,)))

    @property
    def paths(self) -> tuple[str, ...]:
        """The inference paths to run: plain, fast or both (``fast``/``compile`` compare them),
        then the runtime paths."""
        if self.fast_only:
            return ("fast",)
        return (PATHS if (self.fast or self.compile) else ("plain",)) + self.runtime_paths

    def options(self, path: str) -> InferenceOptions:
        """The `InferenceOptions` of ``path``: plain = the model's own forward in fp32; a runtime
        path runs the exported graphs in the fast path's precision."""
        if path == "plain":
            return InferenceOptions(precision="fp32")
        if path in self.runtime_paths:
            runtime = path.removesuffix(INT8_SUFFIX)
            int8 = path.endswith(INT8_SUFFIX)
            return InferenceOptions(
                precision=self.precision,
                runtime=runtime,
                int8=int8,
                int8_graphs=self.int8_graphs if int8 else INT8_GRAPHS,
                export_dir=self.export_dir,
            )
        return InferenceOptions(
            precision=self.precision,
            fast=True,
            channels_last=self.channels_last,
            fold_bn=self.fold_bn,
            text_bf16=self.text_bf16,
            compile=self.compile,
            compile_scopes=self.compile_scopes,
            compile_mode=self.compile_mode,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelBenchConfig:
        """The inverse of `to_dict` after a JSON round trip (lists back to tuples)."""
        return cls(**{k: tuple(v) if k in _TUPLE_FIELDS else v for k, v in data.items()})
