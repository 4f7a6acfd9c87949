"""The fast inference path: a trained `EPNG`, prepared once, run without autograd.

    fast = FastEPNG(model)                        # a prepared copy; ``model`` is left untouched
    logits = fast(images, input_ids, attention_mask, phrase_token_mask, phrase_mask)
    masks = fast.masks(logits, images.shape[-2:], meta)   # (P_b, h, w) bool per sample, on the device

What `FastEPNG` does (each step optional, each one exact or measured against the plain
fp32 path by ``tests/test_fast_inference.py``):

* **no autograd**: every stage runs under ``torch.inference_mode()``.
* **Conv-BN folding** (``fold_bn``): eval-mode BatchNorms that directly follow a
  convolution in the backbone are folded into its weights (``torch.fx`` graph of the
  backbone; timm's ``BatchNormAct2d`` keeps its activation).  Exact up to float
  rounding; a backbone that cannot be traced is left as it is (``report.folded_bn == 0``).
* **channels-last** (``channels_last``) backbone and FPN, input images converted on the
  way in.  The fused stride-16 map then comes out token-major, so the communicator's
  ``flatten(2).transpose(1, 2)`` is free.
* **bf16** (``dtype="auto"``: wherever the device has native bf16 -- CUDA with
  ``is_bf16_supported()``, or a CPU with AVX512-BF16 / AMX; ``"bf16"`` / ``"fp32"``
  force it): the backbone + FPN and the communicator's linear layers get bf16 weights
  once (no per-call weight casts), and the visual encoder, text-feature projection and
  communicator run under bf16 autocast (LayerNorm, softmax and the LPA softmax stay
  fp32).  The text encoder (run once per narrative, then cached by the model) and the
  dense head stay fp32: bf16 phrase kernels cost the most mask agreement for the least
  time (``text_bf16=True`` gives the transformer bf16 weights and runs the projection
  under autocast).
* **attention**: the LPA module picks its own route (FlexAttention on CUDA in bf16, the
  query-chunked eager route on a CPU in bf16; its grid geometry is cached per grid and
  built here ahead of the first call); the phrase cross-attention is already
  ``scaled_dot_product_attention``.
* **dense head at stride 16** (paper head): a 1x1 phrase kernel commutes with bilinear
  upsampling, so the phrase logits are computed on the (h/16, w/16) map and only the
  (B, P) logit maps are upsampled x4 -- never the (B, C, h/4, w/4) pixel features.  Same
  numbers as `DenseHead` up to float rounding.  (A ``"fpn"`` head needs its stride-4
  features: its upsampler runs under autocast, the phrase kernels in fp32.)
* **post-processing on the device** (:meth:`FastEPNG.masks`): one bilinear resize of the
  stride-4 logits straight to the original size, sigmoid, threshold -- the code of
  `epng.engine.postprocess.binary_masks`, so masks are the plain path's.
* **torch.compile** (``compile=True``; scopes ``"visual"`` and/or ``"communicator"``):
  inductor with weight freezing (``options={"freezing": True}``) unless a ``compile_mode``
  is named.  Compiling is lazy; the first call of each compiled stage is timed
  (``report.compile_seconds``: compile + one run).  If compiling or running a compiled
  stage fails, the stage warns once and goes back to its eager module for good.

On a CPU the wins are bf16 (where the CPU has it), channels-last and Conv-BN folding in
the backbone, the stride-16 head and (optionally) inductor; on CUDA they are bf16 +
FlexAttention, cuDNN autotuning (``torch.backends.cudnn.benchmark`` is switched on) and
compile.
"""

from __future__ import annotations

import copy as copy_module
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from epng.data.dataset import model_inputs
from epng.engine.postprocess import binary_masks
from epng.errors import ConfigError
from epng.model.visual_encoder import VisualFeatures

__all__ = ["FastEPNG", "FastReport", "bf16_supported", "fold_conv_bn", "resolve_dtype", "COMPILE_SCOPES"]

DTYPES = ("auto", "bf16", "fp32")
COMPILE_SCOPES = ("visual", "communicator")


# --------------------------------------------------------------------------- device capabilities


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags of the first processor in /proc/cpuinfo (empty where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_supported(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively (so that bf16 is worth using there).

    CUDA: ``torch.cuda.is_bf16_supported()``; CPU: oneDNN available and the CPU has
    AVX512-BF16 or AMX-BF16 (without them oneDNN emulates bf16 and it is slower than fp32).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        if not torch.backends.mkldnn.is_available():
            return False
        return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | str) -> torch.dtype:
    """``"auto"`` | ``"bf16"`` | ``"fp32"`` (or a torch dtype) -> torch.bfloat16 / torch.float32."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.bfloat16, torch.float32):
            raise ConfigError(f"fast inference dtype must be bf16 or fp32, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"fast inference dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "auto":
        return torch.bfloat16 if bf16_supported(device) else torch.float32
    return torch.bfloat16 if dtype == "bf16" else torch.float32


# --------------------------------------------------------------------------- Conv-BN folding


def _fold_weights(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv2d:
    """A new conv computing ``bn(conv(x))`` with eval-mode BatchNorm statistics (fp64 arithmetic)."""
    fused = copy_module.deepcopy(conv)
    w = conv.weight.detach().double()
    b = (
        conv.bias.detach().double()
        if conv.bias is not None
        else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    )
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma * torch.rsqrt(var + bn.eps)
    dtype = conv.weight.dtype
    fused.weight = nn.Parameter((w * scale.view(-1, 1, 1, 1)).to(dtype), requires_grad=False)
    fused.bias = nn.Parameter(((b - mean) * scale + beta).to(dtype), requires_grad=False)
    return fused


class _AfterFoldedBN(nn.Module):
    """What is left of a timm ``BatchNormAct2d`` once its BatchNorm is folded: drop, then act."""

    def __init__(self, bn: nn.Module) -> None:
        super().__init__()
        self.drop = getattr(bn, "drop", nn.Identity())
        self.act = getattr(bn, "act", nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(x))


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def fold_conv_bn(module: nn.Module) -> tuple[nn.Module, int]:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d (whose output has no
    other user) into the conv.  Returns ``(module, folds)``; ``module`` is a
    ``torch.fx.GraphModule`` sharing the untouched weights with the input, or the input
    itself (``folds == 0``) when it cannot be traced.  Call on an eval-mode module."""
    import torch.fx as fx

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            # BatchNorms and convolutions (timm's "same"-padding Conv2dSame included) stay whole
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Conv2d)):
                return True
            return super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(module)
    except Exception:  # control flow fx cannot trace: leave the backbone as it is
        return module, 0
    gm = fx.GraphModule(module, graph)
    modules = dict(gm.named_modules())
    folds = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        bn = modules[node.target]
        src = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv = modules.get(src.target)
        # any Conv2d (subclasses pad their input first): bn(conv(x)) stays affine in the weights
        if not isinstance(conv, nn.Conv2d) or bn.training or bn.running_mean is None or bn.running_var is None:
            continue
        if conv.out_channels != bn.num_features:
            continue
        _set_submodule(gm, src.target, _fold_weights(conv, bn))
        if type(bn) is nn.BatchNorm2d:
            node.replace_all_uses_with(src)
            gm.graph.erase_node(node)
        else:  # BatchNormAct2d and friends: keep the activation (and drop) part
            _set_submodule(gm, node.target, _AfterFoldedBN(bn))
        folds += 1
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm, folds


# --------------------------------------------------------------------------- compiled stages


class _Stage:
    """An eager callable with an optional compiled twin that falls back to eager on failure."""

    def __init__(self, name: str, eager: Callable, compiled: Callable | None) -> None:
        self.name, self.eager, self.compiled = name, eager, compiled
        self.first_call_seconds: float | None = None
        self.error: str | None = None

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        start = time.perf_counter() if self.first_call_seconds is None else None
        try:
            out = self.compiled(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # no compiler, inductor/Triton failure, unsupported op, ...
            self.error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            warnings.warn(f"FastEPNG: torch.compile of the {self.name} failed ({self.error}); running it eagerly")
            self.compiled = None
            return self.eager(*args, **kwargs)
        if start is not None:
            if isinstance(out, Tensor) and out.is_cuda:
                torch.cuda.synchronize(out.device)
            self.first_call_seconds = time.perf_counter() - start
        return out


# --------------------------------------------------------------------------- the fast path


@dataclass
class FastReport:
    """What `FastEPNG` applied (JSON-friendly via :meth:`to_dict`)."""

    device: str
    dtype: str
    channels_last: bool
    folded_bn: int
    stride16_head: bool
    text_dtype: str = "fp32"
    compile_scopes: list[str] = field(default_factory=list)
    compile_mode: str | None = None
    compile_seconds: dict[str, float] = field(default_factory=dict)  # first call (compile + 1 run) per stage
    compile_errors: dict[str, str] = field(default_factory=dict)
    lpa_routes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class FastEPNG:
    """A trained `EPNG` prepared for fast inference (see the module docstring).

    Args:
        model: the trained model (any device).
        device: where to run (default: the model's device).
        dtype: ``"auto"`` (bf16 where the device has it natively), ``"bf16"`` or ``"fp32"``.
        channels_last: channels-last backbone + FPN.
        fold_bn: fold the backbone's BatchNorms into its convolutions.
        compile: ``torch.compile`` the stages in ``compile_scopes``.
        compile_scopes: any of ``"visual"`` (backbone + FPN + fusion) and ``"communicator"``.
        compile_mode: a ``torch.compile`` mode (e.g. ``"max-autotune-no-cudagraphs"``);
            ``None``: the default mode with inductor weight freezing.
        text_bf16: in bf16 mode, also run the text encoder in bf16 (transformer weights cast
            to bf16, projection under autocast).  Off by default: phrase features are tiny,
            the transformer runs once per narrative (then cached), and bf16 phrase kernels
            were the largest source of bf16 mask flips in our tests.
        copy: prepare a deep copy (default) so that ``model`` stays usable for training and
            the plain path; ``False`` changes ``model`` in place (saves its memory).
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device | str | None = None,
        *,
        dtype: str | torch.dtype = "auto",
        channels_last: bool = True,
        fold_bn: bool = True,
        compile: bool = False,
        compile_scopes: Sequence[str] = COMPILE_SCOPES,
        compile_mode: str | None = None,
        text_bf16: bool = False,
        copy: bool = True,
    ) -> None:
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = resolve_dtype(dtype, self.device)
        bad = [s for s in compile_scopes if s not in COMPILE_SCOPES]
        if bad:
            raise ConfigError(f"compile scopes must be among {COMPILE_SCOPES}, got {bad}")
        model = copy_module.deepcopy(model) if copy else model
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.channels_last = channels_last
        self.autocast_enabled = self.dtype == torch.bfloat16
        self.text_bf16 = text_bf16 and self.autocast_enabled
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        visual = self.model.visual_encoder
        folds = 0
        if fold_bn:
            visual.body, folds = fold_conv_bn(visual.body)
        if channels_last:
            visual.to(memory_format=torch.channels_last)
        if self.dtype == torch.bfloat16:
            visual.to(torch.bfloat16)
            for module in self.model.communicator.modules():
                if isinstance(module, nn.Linear):
                    module.to(torch.bfloat16)
            if text_bf16:  # the frozen transformer in bf16 (its cache keeps fp32 copies of bf16 results)
                self.model.text_encoder.model.to(torch.bfloat16)

        self._stride16_head = self.model.head.upsampler is None  # the paper's bilinear head
        self._warm_lpa_geometry()
        comp = _compiler(compile_mode, self.device) if compile else None
        scopes = list(compile_scopes) if compile else []
        self._visual = _Stage("visual encoder", visual, comp(visual) if comp and "visual" in scopes else None)
        comm = self.model.communicator
        self._comm = _Stage("communicator", comm, comp(comm) if comp and "communicator" in scopes else None)
        self._report = FastReport(
            device=str(self.device),
            dtype="bf16" if self.dtype == torch.bfloat16 else "fp32",
            channels_last=channels_last,
            folded_bn=folds,
            stride16_head=self._stride16_head,
            text_dtype="bf16" if self.dtype == torch.bfloat16 and text_bf16 else "fp32",
            compile_scopes=scopes,
            compile_mode=(compile_mode or "default+freezing") if compile else None,
        )

    # ------------------------------------------------------------------ bookkeeping

    def _warm_lpa_geometry(self) -> None:
        """Build every LPA layer's grid tables for the configured input size now."""
        side = self.config.image_size // 16
        for layer in getattr(self.model.communicator, "layers", []):
            lpa = getattr(layer, "lpa", None)
            if lpa is not None and hasattr(lpa, "geometry"):
                lpa.geometry((side, side), self.device)

    @property
    def report(self) -> FastReport:
        """What was applied, with compile times/errors and LPA routes as they stand now."""
        rep = self._report
        for stage in (self._visual, self._comm):
            if stage.first_call_seconds is not None:
                rep.compile_seconds[stage.name] = round(stage.first_call_seconds, 3)
            if stage.error:
                rep.compile_errors[stage.name] = stage.error
        routes = []
        for layer in getattr(self.model.communicator, "layers", []):
            lpa = getattr(layer, "lpa", None)
            if lpa is not None and hasattr(lpa, "route"):
                routes.append(lpa.route(self.device, False, self.dtype))
        rep.lpa_routes = sorted(set(routes))
        return rep

    def _autocast(self):
        if not self.autocast_enabled:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    # ------------------------------------------------------------------ stages

    def encode_visual(self, images: Tensor) -> VisualFeatures:
        """(B, 3, H, W) normalised float images -> `VisualFeatures`: fused map (B, C, H/16, W/16)
        [+ finer FPN maps for a ``"fpn"`` head] (bf16 in bf16 mode)."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.inference_mode(), self._autocast():
            images = images.to(self.device, non_blocking=True)
            images = images.to(dtype=self.dtype, memory_format=fmt)
            return self._visual(images)

    def encode_text(
        self, input_ids: Tensor, attention_mask: Tensor, phrase_token_mask: Tensor, phrase_mask: Tensor
    ) -> Tensor:
        """Phrase features (B, P, C), through the model's text encoder (and its frozen-feature cache)."""
        ctx = self._autocast() if self.text_bf16 else nullcontext()
        with torch.inference_mode(), ctx:
            return self.model.text_encoder(
                input_ids.to(self.device, non_blocking=True),
                attention_mask.to(self.device, non_blocking=True),
                phrase_token_mask.to(self.device, non_blocking=True).bool(),
                phrase_mask.to(self.device, non_blocking=True).bool(),
            )

    def communicate(self, visual: Tensor, phrases: Tensor, phrase_mask: Tensor) -> Tensor:
        """(B, C, h, w) map + (B, P, C) phrases -> communicated map (B, C, h, w)."""
        with torch.inference_mode(), self._autocast():
            return self._comm(visual, phrases, phrase_mask.to(self.device, non_blocking=True).bool())

    def head(self, visual: Tensor, phrases: Tensor, fine: tuple[Tensor, ...] = ()) -> Tensor:
        """Phrase mask logits (B, P, H/4, W/4) in fp32. Paper head: 1x1 phrase kernels on the
        stride-16 map, then x4 bilinear upsampling of the (B, P) logit maps only. ``"fpn"``
        head: its upsampler under autocast (bf16 mode), the phrase kernels in fp32."""
        head = self.model.head
        with torch.inference_mode():
            if self._stride16_head:
                logits = torch.einsum("bpc,bchw->bphw", phrases.float(), visual.float()) + head.bias.float()
                return F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
            with self._autocast():
                pixels = head.upsampler(visual, fine)  # (B, C, H/4, W/4)
            return torch.einsum("bpc,bchw->bphw", phrases.float(), pixels.float()) + head.bias.float()

    def __call__(
        self, images: Tensor, input_ids: Tensor, attention_mask: Tensor, phrase_token_mask: Tensor, phrase_mask: Tensor
    ) -> Tensor:
        """The `EPNG` inputs -> phrase mask logits (B, P, H/4, W/4), fp32, on the device."""
        visual = self.encode_visual(images)
        phrases = self.encode_text(input_ids, attention_mask, phrase_token_mask, phrase_mask)
        fused = self.communicate(visual.fused, phrases, phrase_mask)
        return self.head(fused, phrases, visual.fine)

    def run_batch(self, batch: dict) -> Tensor:
        """Mask logits of a `collate_png` batch."""
        return self(*model_inputs(batch))

    @staticmethod
    def masks(mask_logits: Tensor, input_size: Sequence[int], meta: list[dict], threshold: float = 0.5) -> list[Tensor]:
        """Per sample a (P_b, h, w) bool mask of its real phrases at its original size, on the device
        (`epng.engine.postprocess.binary_masks`: one resize from stride 4, threshold on the device)."""
        with torch.inference_mode():
            return binary_masks(mask_logits, tuple(input_size), meta, threshold)

    def predict_masks(self, batch: dict, threshold: float = 0.5) -> list[Tensor]:
        """A `collate_png` batch -> per sample (P_b, h, w) bool masks at original size (on the device)."""
        return self.masks(self.run_batch(batch), batch["images"].shape[-2:], batch["meta"], threshold)


def _compiler(mode: str | None, device: torch.device) -> Callable[[nn.Module], Callable]:
    """``torch.compile`` with ``mode``, or the default mode with inductor weight freezing."""
    if mode is not None:
        return lambda module: torch.compile(module, mode=mode)
    return lambda module: torch.compile(module, options={"freezing": True})


def plain_forward(model: nn.Module, batch: dict) -> Tensor:
    """The plain path the fast one is measured against: fp32, ``torch.no_grad``, the model's own head."""
    with torch.no_grad():
        out = model(*model_inputs(batch))
    return out.mask_logits
