"""`Predictor`: the one way to run a trained EPNG -- your own picture and narrative, or a whole batch.

    predictor = Predictor.from_pretrained("runs/demo/best", fast=True)
    predictor.set_image("photo.jpg")                      # image features once ...
    result = predictor.predict("a [red ball] on the [grass]")   # ... any number of narratives
    result.masks                                          # (P, h, w) bool at the image's resolution

    masks = predictor.predict_torch(batch)                # a collated batch -> per sample (P_b, h, w) bool

Phrases are marked in the caption with square brackets, or given as a list (each must
occur in the caption; the first occurrence is used); a plain caption grounds the noun
phrases `epng.data.phrases.extract_phrases` finds. Every caller -- `epng predict`,
`evaluate`, `res-eval`, `bench` and training's validation -- runs through these stages:
``encode_image`` -> ``encode_text`` -> ``communicate`` -> ``head`` -> ``postprocess``, with
the precision and fast-path preparation of one `InferenceOptions`. With an exported runtime
(``runtime="onnxruntime"`` | ``"openvino"``) the visual encoder, communicator, head and text
transformer run as ONNX graphs (`ExportedModel`); the stages keep their signatures.
"""

from __future__ import annotations

import copy as copy_module
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from epng.data.captions import locate_phrases, parse_bracketed
from epng.data.inputs import batch_text_inputs, model_inputs
from epng.data.tokenization import align_phrases
from epng.device import default_device, resolve_precision
from epng.errors import ConfigError
from epng.inference.compiled import CompiledStage, compiler
from epng.inference.exported import ExportedModel, runtime_model
from epng.inference.options import InferenceOptions
from epng.inference.prepare import PreparationReport, prepare_model
from epng.io.images import ImageInput, load_image
from epng.io.limits import check_caption_chars, check_size
from epng.model import EPNG, load_model
from epng.model.visual_encoder import VisualFeatures

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class Prediction:
    """What `Predictor.predict` returns (numpy, at the image's own resolution)."""

    caption: str
    phrases: list[str]
    spans: list[tuple[int, int]]  # character spans in ``caption``
    phrase_source: str  # "brackets" | "list" | "extracted": where the phrases came from
    probabilities: np.ndarray  # (P, h, w) float32
    masks: np.ndarray  # (P, h, w) bool: probabilities > threshold
    image: np.ndarray  # (h, w, 3) uint8, the image the masks belong to
    seconds: float  # wall time of the call (text, communicator, head, post-processing)


@dataclass
class _ImageState:
    """The image `set_image` was given, preprocessed and encoded once."""

    pixels: Tensor  # (3, h, w) uint8
    input_size: tuple[int, int]
    valid_size: tuple[int, int]
    features: VisualFeatures  # batch of 1


class Predictor:
    """Runs an :class:`EPNG` without gradients as one `InferenceOptions` says.

    Args:
        model: the trained model (any device).
        options: an `InferenceOptions`; or give its fields as keyword arguments
            (``Predictor(model, fast=True, precision="bf16")``).
        device: where to run (default: the model's device).
        threshold: probability above which a pixel is in a mask.
        copy: with ``fast``, prepare a copy and leave ``model`` usable for training (default);
            ``False`` prepares ``model`` itself in place (saves its memory).
    """

    def __init__(
        self,
        model: EPNG,
        options: InferenceOptions | None = None,
        *,
        device: str | torch.device | None = None,
        threshold: float = 0.5,
        copy: bool = True,
        **option_fields,
    ) -> None:
        if options is not None and option_fields:
            raise ConfigError("give either options or option keyword arguments, not both")
        self.options = options or InferenceOptions(**option_fields)
        if not 0.0 <= threshold < 1.0:
            raise ConfigError(f"threshold must lie in [0, 1), got {threshold}")
        self.threshold = threshold
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = resolve_precision(self.options.precision, self.device)
        self._backend: ExportedModel | None = None
        if self.options.runtime != "torch":
            self._init_runtime(model)
            return
        if self.options.fast and copy:
            model = copy_module.deepcopy(model)
        self.model = model.to(self.device).eval()
        self._report = prepare_model(self.model, self.options, self.dtype, self.device)
        compile_fn = compiler(self.options.compile_mode) if self.options.compile else None
        scopes = self.options.compile_scopes if self.options.compile else ()
        self._visual = self._stage("visual encoder", self.model.visual_encoder, compile_fn, "visual" in scopes)
        self._communicator = self._stage("communicator", self.model.communicator, compile_fn, "communicator" in scopes)
        if compile_fn is not None:
            self._report.compile_scopes = list(scopes)
            self._report.compile_mode = self.options.compile_mode or "default+freezing"
        self._image: _ImageState | None = None

    def _init_runtime(self, model: EPNG) -> None:
        """Export ``model`` and load its graphs on the runtime; keep only what torch still runs."""
        opts = self.options
        if self.device.type != "cpu":
            raise ConfigError(f"runtime {opts.runtime!r} runs on the CPU, not on {self.device}")
        model = model.eval()
        self._backend = ExportedModel(
            model,
            opts.runtime,
            int8=opts.int8,
            int8_graphs=opts.int8_graphs,
            bf16=self.dtype == torch.bfloat16,
            calibration=opts.calibration,
            export_dir=opts.export_dir,
        )
        self.model = runtime_model(model, self._backend)
        self.dtype = torch.bfloat16 if self._backend.precision == "bf16" else torch.float32
        self._report = PreparationReport(
            device=str(self.device),
            dtype=self._backend.precision,
            text_dtype="fp32",
            fast=opts.fast,
            runtime=opts.runtime,
            int8=opts.int8,
            int8_graphs=list(self._backend.int8_graphs),
            export_seconds=round(self._backend.build_seconds, 2),
            graph_runtimes=dict(self._backend.graph_runtimes),
        )
        self._visual = self._communicator = None
        self._image = None

    @staticmethod
    def _stage(
        name: str, module: torch.nn.Module, compile_fn: Callable[[torch.nn.Module], Callable] | None, wanted: bool
    ) -> CompiledStage:
        return CompiledStage(name, module, compile_fn(module) if compile_fn is not None and wanted else None)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, **kwargs) -> Predictor:
        """A predictor on a saved model folder (the model is prepared in place: nobody else holds it)."""
        return cls(load_model(path, device or default_device()), copy=False, **kwargs)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.model.tokenizer

    @property
    def report(self) -> PreparationReport:
        """What was applied, with compile times/errors and the LPA routes as they stand now."""
        rep = self._report
        if self._backend is not None:
            return rep
        for stage in (self._visual, self._communicator):
            if stage.first_call_seconds is not None:
                rep.compile_seconds[stage.name] = round(stage.first_call_seconds, 3)
            if stage.error:
                rep.compile_errors[stage.name] = stage.error
        routes = {lpa.route(self.device, False, self.dtype) for lpa in self.model.communicator.lpa_layers()}
        rep.lpa_routes = sorted(routes)
        return rep

    def _autocast(self, enabled: bool = True) -> AbstractContextManager[None]:
        if not enabled or self.dtype != torch.bfloat16:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # ------------------------------------------------------------------ stages (batched tensors)

    def clear_text_cache(self) -> None:
        """Forget the text encoder's cached features (the next narrative runs the transformer)."""
        self.model.text_encoder.clear_cache()

    def encode_image(self, images: Tensor) -> VisualFeatures:
        """(B, 3, H, W) normalised images -> fused map (B, C, H/16, W/16) [+ finer FPN maps]."""
        if self._backend is not None:
            return self._backend.encode_image(images)
        fmt = torch.channels_last if self._report.channels_last else torch.contiguous_format
        dtype = self.dtype if self.options.fast else torch.float32  # fast bf16: the weights are bf16
        with torch.inference_mode(), self._autocast():
            return self._visual(images.to(self.device, dtype=dtype, memory_format=fmt, non_blocking=True))

    def encode_text(
        self, input_ids: Tensor, attention_mask: Tensor, phrase_token_mask: Tensor, phrase_mask: Tensor
    ) -> Tensor:
        """Word pieces (B, T) + phrase spans (B, P, T) -> phrase features (B, P, C)."""
        inputs = (t.to(self.device, non_blocking=True) for t in (input_ids, attention_mask, phrase_token_mask))
        with torch.inference_mode(), self._autocast(self._report.text_dtype == "bf16"):
            return self.model.encode_text(*inputs, phrase_mask.to(self.device, non_blocking=True))

    def communicate(self, fused: Tensor, phrases: Tensor, phrase_mask: Tensor) -> Tensor:
        """(B, C, h, w) fused map + (B, P, C) phrases -> communicated map (B, C, h, w)."""
        if self._backend is not None:
            return self._backend.communicate(fused, phrases, phrase_mask)
        with torch.inference_mode(), self._autocast():
            return self._communicator(fused, phrases, phrase_mask.to(self.device, non_blocking=True).bool())

    def head(self, fused: Tensor, phrases: Tensor, fine: tuple[Tensor, ...] = ()) -> Tensor:
        """Phrase mask logits (B, P, H/4, W/4) in fp32: the fast path's stride-16 head
        (`DenseHead.mask_logits`, also what an exported runtime runs), or the head as trained
        (fp32) on the plain path."""
        if self._backend is not None:
            return self._backend.head(fused, phrases, fine)
        with torch.inference_mode():
            if self.options.fast:
                with self._autocast():
                    return self.model.head.mask_logits(fused, phrases, fine)
            return self.model.head(fused.float(), phrases.float(), tuple(f.float() for f in fine)).mask_logits

    @torch.inference_mode()
    def mask_logits(
        self, images: Tensor, input_ids: Tensor, attention_mask: Tensor, phrase_token_mask: Tensor, phrase_mask: Tensor
    ) -> Tensor:
        """The `EPNG.forward` inputs -> phrase mask logits (B, P, H/4, W/4), fp32, on the device."""
        visual = self.encode_image(images)
        phrases = self.encode_text(input_ids, attention_mask, phrase_token_mask, phrase_mask)
        fused = self.communicate(visual.fused, phrases, phrase_mask)
        return self.head(fused, phrases, visual.fine)

    def postprocess(
        self, mask_logits: Tensor, input_size: Sequence[int], meta: list[dict], threshold: float | None = None
    ) -> list[Tensor]:
        """(B, P, h4, w4) logits -> per sample (P_b, h, w) bool masks at its original size, on the device."""
        thr = self.threshold if threshold is None else threshold
        with torch.inference_mode():
            return self.model.postprocess_masks(mask_logits, tuple(input_size), meta, thr)

    @torch.inference_mode()
    def predict_torch(self, batch: dict, threshold: float | None = None) -> list[Tensor]:
        """A collated batch (``images``, ``input_ids``, ``attention_mask``, ``phrase_token_mask``,
        ``phrase_mask``, ``meta``) -> per sample the (P_b, h, w) bool masks of its real phrases."""
        logits = self.mask_logits(*model_inputs(batch))
        return self.postprocess(logits, batch["images"].shape[-2:], batch["meta"], threshold)

    # ------------------------------------------------------------------ one image, many narratives

    def set_image(self, image: ImageInput) -> None:
        """Decode, preprocess and encode ``image`` once; `predict` then grounds narratives in it."""
        pixels = load_image(image)
        x, valid = self.model.preprocess(pixels)  # (3, H, W)
        features = self.encode_image(x[None])
        self._image = _ImageState(pixels, tuple(x.shape[-2:]), valid, features)

    def reset_image(self) -> None:
        self._image = None

    def _phrase_spans(self, caption: str, phrases: Sequence[str] | None) -> tuple[str, list[tuple[int, int]], str]:
        """(caption without brackets, phrase spans, where they came from): the given list, the
        [bracketed] phrases, or else the noun phrases `extract_phrases` finds."""
        if not isinstance(caption, str) or not caption.strip():
            raise ConfigError("the caption is empty")
        check_caption_chars(caption)
        if phrases:
            return caption, locate_phrases(caption, phrases), "list"
        caption, spans = parse_bracketed(caption)
        if spans:
            return caption, spans, "brackets"
        from epng.data.phrases import extract_phrases  # spaCy loads on first use only

        spans = [(p.start, p.end) for p in extract_phrases(caption)]
        if not spans:
            raise ConfigError(
                'no noun phrase found in the caption: mark phrases with [brackets] or give --phrase "..."'
            )
        return caption, spans, "extracted"

    def predict(
        self,
        caption: str,
        phrases: Sequence[str] | None = None,
        *,
        image: ImageInput | None = None,
        threshold: float | None = None,
    ) -> Prediction:
        """Ground the phrases of ``caption`` in the image of `set_image` (or ``image``, set first).

        A caption over ``max_caption_chars`` characters is refused before it is tokenized, one
        over ``max_caption_word_pieces`` word pieces after (:mod:`epng.io.limits`)."""
        if image is not None:
            self.set_image(image)
        if self._image is None:
            raise ConfigError("no image: call set_image(image) first or pass image=...")
        start = time.perf_counter()
        caption, spans, source = self._phrase_spans(caption, phrases)
        n_pieces = len(self.tokenizer(caption, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])
        check_size(None, "the caption's length in word pieces", n_pieces, "max_caption_word_pieces")
        max_length = self.model.config.max_text_length
        alignment = align_phrases(self.tokenizer, caption, spans, max_length)
        if alignment.truncated:
            lost = [caption[slice(*spans[k])] for k in alignment.truncated]
            raise ConfigError(
                f"the caption is too long for the text encoder ({max_length} word pieces): "
                f"phrases {lost} fall beyond it"
            )
        if alignment.empty:
            lost = [caption[slice(*spans[k])] for k in alignment.empty]
            raise ConfigError(f"phrases {lost} hold no word the tokenizer keeps")
        text = batch_text_inputs([alignment.input_ids], [alignment.phrase_tokens], self.tokenizer.pad_token_id or 0)
        state = self._image
        phrase_features = self.encode_text(*text)
        fused = self.communicate(state.features.fused, phrase_features, text.phrase_mask)
        logits = self.head(fused, phrase_features, state.features.fine)
        orig_size = (int(state.pixels.shape[1]), int(state.pixels.shape[2]))
        with torch.inference_mode():
            probs = self.model.postprocess_logits(logits[0], state.input_size, state.valid_size, orig_size)
        probs = probs.cpu().numpy()
        thr = self.threshold if threshold is None else threshold
        return Prediction(
            caption=caption,
            phrases=[caption[s:e] for s, e in spans],
            spans=list(spans),
            phrase_source=source,
            probabilities=probs,
            masks=probs > thr,
            image=state.pixels.permute(1, 2, 0).numpy(),
            seconds=time.perf_counter() - start,
        )
