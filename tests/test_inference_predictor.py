"""`Predictor`: the plain path against the model's own forward, the fast path against the plain fp32 path.

Small model (ResNet-18 body, MiniLM-shaped random text encoder), 128² inputs: the fp32
fast path must match the plain path within 1e-5 on probabilities; the bf16 path must
give identical binary masks on >= 99.5 % of the pixels at original size.  Nothing is
timed here.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from epng.data.inputs import model_inputs
from epng.device import bf16_supported, resolve_precision
from epng.errors import ConfigError
from epng.inference import InferenceOptions, Predictor
from epng.inference.fold_bn import fold_conv_bn
from epng.model import EPNG, EPNGConfig

SMALL = dict(
    backbone="resnet18",
    backbone_weights="none",
    text_weights="random",
    fpn_channels=32,
    num_heads=4,
    ffn_dim=128,
    num_layers=2,
    text_encoder="minilm",
    image_size=128,
)

SIZE = 128
ORIG = (96, 120)  # masks at a non-square original size


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> EPNG:
    """BatchNorms with trained-looking statistics and affine weights, so that folding has work to do."""
    torch.manual_seed(0)
    m = EPNG(EPNGConfig(**SMALL)).eval()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(3)
        for mod in m.visual_encoder.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)
    return m


@pytest.fixture(scope="module")
def fresh_model() -> EPNG:
    """As built (timm's initialisation), with the last LayerNorm's bias centring the pixel
    features (calibrated on one batch), so that masks cover part of each image: a random
    model's pixel features otherwise share a large per-channel offset and every logit sits
    on one side of 0."""
    torch.manual_seed(0)
    m = EPNG(EPNGConfig(**SMALL)).eval()
    calib = make_batch(m, seed=100)
    with torch.no_grad():
        out = m(*(calib[k] for k in ("images", "input_ids", "attention_mask", "phrase_token_mask", "phrase_mask")))
        m.communicator.layers[-1].norm3.bias.sub_(out.pixel_embed.mean((0, 2, 3)))
    m.text_encoder.clear_cache()
    return m


def block_images(seed: int, batch_size: int) -> torch.Tensor:
    """Images of 4x4 flat-coloured regions plus noise (regions, like a photo's objects)."""
    gen = torch.Generator().manual_seed(seed)
    colours = torch.randn(batch_size, 3, 4, 4, generator=gen) * 1.5
    images = colours.repeat_interleave(SIZE // 4, -2).repeat_interleave(SIZE // 4, -1)
    return images + 0.3 * torch.randn(batch_size, 3, SIZE, SIZE, generator=gen)


def make_batch(model: EPNG, seed: int = 1, batch_size: int = 2) -> dict:
    texts = ["a man rides a brown horse on the beach near the sea", "two dogs play with a red ball on green grass"]
    enc = model.tokenizer(texts[:batch_size], padding=True, return_tensors="pt")
    ids, am = enc["input_ids"], enc["attention_mask"]
    p = 3
    ptm = torch.zeros(batch_size, p, ids.shape[1], dtype=torch.bool)
    ptm[0, 0, 1:3] = ptm[0, 1, 4:7] = ptm[0, 2, 8:10] = True
    pm = torch.zeros(batch_size, p, dtype=torch.bool)
    pm[0] = True
    if batch_size > 1:
        ptm[1, 0, 1:3] = ptm[1, 1, 5:8] = True
        pm[1, :2] = True  # second sample: 2 real phrases + 1 padding phrase
    images = block_images(seed, batch_size)
    meta = [
        {"phrase_indices": list(range(int(pm[i].sum()))), "orig_size": ORIG, "valid_size": (SIZE, SIZE)}
        for i in range(batch_size)
    ]
    return {
        "images": images,
        "input_ids": ids,
        "attention_mask": am,
        "phrase_token_mask": ptm,
        "phrase_mask": pm,
        "meta": meta,
    }


def plain_forward(model: EPNG, batch: dict) -> torch.Tensor:
    """The reference: the model's own forward in fp32 without gradients."""
    with torch.no_grad():
        return model(*model_inputs(batch)).mask_logits


def fast(model: EPNG, precision: str = "fp32", **kwargs) -> Predictor:
    return Predictor(model, fast=True, precision=precision, **kwargs)


def run(predictor: Predictor, batch: dict) -> torch.Tensor:
    return predictor.mask_logits(*model_inputs(batch))


def probs_at_orig(logits: torch.Tensor, batch: dict) -> list[torch.Tensor]:
    return [
        EPNG.postprocess_logits(logits[i, : len(m["phrase_indices"])], (SIZE, SIZE), m["valid_size"], m["orig_size"])
        for i, m in enumerate(batch["meta"])
    ]


# --------------------------------------------------------------------------- exactness


def test_fp32_fast_path_matches_plain_within_1e5(model):
    batch = make_batch(model)
    ref = plain_forward(model, batch)
    predictor = fast(model)  # channels-last, BN folded, inference mode, stride-16 head, no compile
    rep = predictor.report
    assert rep.dtype == "fp32" and rep.channels_last and rep.folded_bn > 0 and rep.stride16_head
    out = run(predictor, batch)
    assert out.shape == ref.shape and out.dtype == torch.float32
    for a, b in zip(probs_at_orig(out, batch), probs_at_orig(ref, batch)):
        assert a.shape == (a.shape[0], *ORIG)
        assert (a - b).abs().max().item() < 1e-5
    # masks: same post-processing, identical result
    masks_fast = predictor.postprocess(out, batch["images"].shape[-2:], batch["meta"])
    masks_ref = EPNG.postprocess_masks(ref, (SIZE, SIZE), batch["meta"])
    assert [m.shape for m in masks_fast] == [(3, *ORIG), (2, *ORIG)]
    for a, b in zip(masks_fast, masks_ref):
        assert a.dtype == torch.bool
        assert (a != b).float().mean().item() < 1e-3  # only pixels sitting on 0.5 within 1e-5 may flip


def test_each_fp32_option_alone_matches(model):
    batch = make_batch(model, seed=2, batch_size=1)
    ref = plain_forward(model, batch).sigmoid()
    for kwargs in ({"channels_last": True, "fold_bn": False}, {"channels_last": False, "fold_bn": True}):
        out = run(fast(model, **kwargs), batch).sigmoid()
        assert (out - ref).abs().max().item() < 1e-5, kwargs


def test_fp32_fast_path_matches_plain_with_the_fpn_head():
    torch.manual_seed(0)
    model = EPNG(EPNGConfig(**SMALL, mask_head="fpn")).eval()
    batch = make_batch(model)
    predictor = fast(model)
    assert not predictor.report.stride16_head
    v = predictor.encode_image(batch["images"])
    assert [f.shape[-1] for f in v.fine] == [SIZE // 8, SIZE // 4]  # P3, P2
    out, ref = run(predictor, batch), plain_forward(model, batch)
    assert out.shape == ref.shape == (2, 3, SIZE // 4, SIZE // 4)
    assert (out.sigmoid() - ref.sigmoid()).abs().max().item() < 1e-5


@pytest.mark.parametrize("seed", [1, 3])
def test_bf16_masks_agree_on_995_percent_of_pixels(fresh_model, seed):
    model = fresh_model
    batch = make_batch(model, seed=seed)
    ref = EPNG.postprocess_masks(plain_forward(model, batch), (SIZE, SIZE), batch["meta"])
    predictor = fast(model, "bf16")
    predictor.clear_text_cache()
    assert predictor.report.dtype == "bf16" and predictor.report.text_dtype == "fp32"
    masks = predictor.predict_torch(batch)
    same = sum((a == b).sum().item() for a, b in zip(masks, ref))
    total = sum(a.numel() for a in ref)
    assert same / total >= 0.995
    assert sum(b.sum().item() for b in ref) > 0.05 * total  # the masks are not trivially empty
    assert sum((~b).sum().item() for b in ref) > 0.05 * total


def test_stages_compose_to_the_call(model):
    batch = make_batch(model, batch_size=1)
    predictor = fast(model)
    v = predictor.encode_image(batch["images"])
    assert v.fused.shape == (1, model.config.d_model, SIZE // 16, SIZE // 16) and v.fine == ()
    ph = predictor.encode_text(*model_inputs(batch)[1:])
    c = predictor.communicate(v.fused, ph, batch["phrase_mask"])
    logits = predictor.head(c, ph)
    assert torch.equal(logits, run(predictor, batch))
    assert logits.shape == (1, 3, SIZE // 4, SIZE // 4)


def test_original_model_is_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    fast(model, "bf16")
    after = model.state_dict()
    assert set(before) == set(after)
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert [type(m) for m in model.modules()] == types
    assert model.visual_encoder.body.conv1.weight.dtype == torch.float32


def test_no_autograd_state(model):
    batch = make_batch(model, batch_size=1)
    for predictor in (fast(model), Predictor(model, precision="fp32")):
        out = run(predictor, batch)
        assert not out.requires_grad and out.is_inference()


def test_plain_predictor_is_the_models_own_forward(model):
    """fast=False in fp32: the stages compose to exactly what `EPNG.forward` computes."""
    batch = make_batch(model)
    predictor = Predictor(model, precision="fp32")
    assert predictor.model is model and not predictor.report.fast
    assert torch.equal(run(predictor, batch), plain_forward(model, batch))
    masks = predictor.predict_torch(batch)
    ref = EPNG.postprocess_masks(plain_forward(model, batch), (SIZE, SIZE), batch["meta"])
    assert all(torch.equal(a, b) for a, b in zip(masks, ref))


def test_set_image_once_then_many_narratives(model):
    """Image features are computed once by set_image; each narrative gives what a fresh
    predictor computes for that (image, narrative) pair from scratch."""
    gen = torch.Generator().manual_seed(5)
    image = (torch.rand(3, 90, 150, generator=gen) * 255).to(torch.uint8)
    captions = ["a [brown horse] near the [sea]", "two [dogs] play with a [red ball]"]
    predictor = Predictor(model, precision="fp32")
    predictor.set_image(image)
    calls = []
    original = predictor.encode_image
    predictor.encode_image = lambda images: calls.append(1) or original(images)
    results = [predictor.predict(c) for c in captions]
    assert calls == []  # no image work after set_image
    for caption, result in zip(captions, results):
        alone = Predictor(model, precision="fp32").predict(caption, image=image)
        assert result.phrases == alone.phrases and result.phrase_source == "brackets"
        assert result.masks.shape == (2, 90, 150) and np.array_equal(result.masks, alone.masks)
        np.testing.assert_allclose(result.probabilities, alone.probabilities, atol=1e-6)
        assert np.array_equal(result.masks, result.probabilities > 0.5)


def test_predict_without_an_image_is_refused(model):
    with pytest.raises(ConfigError, match="set_image"):
        Predictor(model, precision="fp32").predict("a [dog]")


# --------------------------------------------------------------------------- pieces


def test_fold_conv_bn_exact_and_counts():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 1),
        nn.BatchNorm2d(8),
    )
    for m in net:
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    net.eval()
    x = torch.randn(2, 3, 9, 9)
    folded, n = fold_conv_bn(copy.deepcopy(net))
    assert n == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)


def test_fold_skips_shared_conv_outputs():
    class Branchy(nn.Module):  # the conv output feeds the BN *and* a residual: cannot fold
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    net = Branchy().eval()
    net.bn.running_mean.fill_(0.5)
    x = torch.randn(1, 4, 5, 5)
    folded, n = fold_conv_bn(net)
    assert n == 0
    torch.testing.assert_close(folded(x), net(x))


def test_fold_untraceable_module_is_returned_as_is():
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                x = -x
            return self.bn(self.conv(x))

    net = Dynamic().eval()
    out, n = fold_conv_bn(net)
    assert out is net and n == 0


def test_resolve_precision_and_options():
    assert resolve_precision("fp32", "cpu") == torch.float32
    assert resolve_precision("bf16", "cpu") == torch.bfloat16
    assert resolve_precision("auto", "cpu") == (torch.bfloat16 if bf16_supported("cpu") else torch.float32)
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ConfigError, match="none"):
        InferenceOptions(precision="none")  # the old vocabulary is gone
    with pytest.raises(ConfigError, match="compile scopes"):
        InferenceOptions(fast=True, compile=True, compile_scopes=("backbone",))
    with pytest.raises(ConfigError, match="fast=True"):
        InferenceOptions(compile=True)


def test_compile_failure_falls_back_to_eager(model, monkeypatch):
    """A compile that raises (here: a fake torch.compile) warns once and the stage runs eagerly."""
    import epng.inference.predictor as predictor_module

    def broken_compiler(mode):
        def compile_module(module):
            def run(*args, **kwargs):
                raise RuntimeError("no C++ compiler in this test")

            return run

        return compile_module

    monkeypatch.setattr(predictor_module, "compiler", broken_compiler)
    batch = make_batch(model, batch_size=1)
    predictor = fast(model, compile=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run(predictor, batch)
    assert sum("torch.compile" in str(w.message) for w in caught) == 2  # once per stage (visual, communicator)
    assert predictor._visual.compiled is None and predictor._communicator.compiled is None  # eager from now on
    rep = predictor.report
    assert set(rep.compile_errors) == {"visual encoder", "communicator"}
    ref = plain_forward(model, batch)
    assert (out.sigmoid() - ref.sigmoid()).abs().max().item() < 1e-5
