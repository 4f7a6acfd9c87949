"""`InferenceOptions`: how a `Predictor` runs a trained model -- one set of names for every caller."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

from epng.device import PRECISIONS, Precision
from epng.errors import ConfigError

CompileScope = Literal["visual", "communicator"]
COMPILE_SCOPES: tuple[str, ...] = get_args(CompileScope)


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
    """

    precision: Precision = "auto"
    fast: bool = False
    channels_last: bool = True
    fold_bn: bool = True
    text_bf16: bool = False
    compile: bool = False
    compile_scopes: tuple[CompileScope, ...] = COMPILE_SCOPES
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        bad = [s for s in self.compile_scopes if s not in COMPILE_SCOPES]
        if bad:
            raise ConfigError(f"compile scopes must be among {COMPILE_SCOPES}, got {bad}")
        if self.compile and not self.fast:
            raise ConfigError("compile=True needs fast=True (compiling prepares the model for inference)")
        object.__setattr__(self, "compile_scopes", tuple(self.compile_scopes))

    def to_dict(self) -> dict:
        return asdict(self)
