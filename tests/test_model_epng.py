"""The whole EPNG model: contract, padding invariance, gradients, save/load, paper shapes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_inference_predictor import SMALL

from epng.errors import CheckpointError
from epng.losses import EPNGCriterion
from epng.model import EPNG, EPNGConfig, build_epng, visual_encoder

# the predictor tests' small model, narrower, with the packaged MiniLM weights and the default input size
TINY = {**SMALL, "fpn_channels": 16, "ffn_dim": 64, "text_weights": "pretrained", "image_size": 640}


@pytest.fixture(scope="module", params=["bilinear", "fpn"])
def tiny(request) -> EPNG:
    """A tiny model with the paper's mask head and with the "fpn" one."""
    torch.manual_seed(0)
    return EPNG(EPNGConfig(**TINY, mask_head=request.param))


def make_batch(model: EPNG, extra_phrases: int = 0, extra_tokens: int = 0, size: int = 64) -> dict:
    """Two narratives: 3 real phrases in the first, 1 in the second (+ optional padding)."""
    enc = model.tokenizer(["a man rides a brown horse on the beach", "two dogs"], padding=True, return_tensors="pt")
    ids, mask = F.pad(enc["input_ids"], (0, extra_tokens)), F.pad(enc["attention_mask"], (0, extra_tokens))
    p = 3 + extra_phrases
    ptm = torch.zeros(2, p, ids.shape[1], dtype=torch.bool)
    ptm[0, 0, 1:3] = ptm[0, 1, 4:7] = ptm[0, 2, 8:10] = ptm[1, 0, 1:3] = True
    ptm[1, 1:, 1:3] = True  # padding phrases may even point at real word pieces
    pm = torch.zeros(2, p, dtype=torch.bool)
    pm[0, :3] = pm[1, 0] = True
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, size, size, generator=gen)
    gt = (torch.rand(2, p, size, size, generator=gen) > 0.7).float() * pm[..., None, None]
    return dict(images=images, input_ids=ids, attention_mask=mask, phrase_token_mask=ptm, phrase_mask=pm, gt_masks=gt)


def run(model, b):
    return model(b["images"], b["input_ids"], b["attention_mask"], b["phrase_token_mask"], b["phrase_mask"])


def test_output_contract(tiny):
    b = make_batch(tiny)
    with torch.no_grad():
        out = run(tiny.eval(), b)
    assert out.mask_logits.shape == (2, 3, 16, 16)
    assert out.pixel_embed.shape == (2, 48, 16, 16) and out.phrase_embed.shape == (2, 3, 48)
    meta = [{"phrase_indices": [0, 1, 2], "valid_size": (64, 64), "orig_size": (40, 70)}] * 2
    masks = tiny.postprocess_masks(out.mask_logits, (64, 64), meta)
    assert [m.shape for m in masks] == [(3, 40, 70)] * 2 and masks[0].dtype == torch.bool


def test_padding_phrases_and_tokens_change_no_real_output(tiny):
    tiny.eval()
    with torch.no_grad():
        ref = run(tiny, make_batch(tiny))
        out = run(tiny, make_batch(tiny, extra_phrases=2, extra_tokens=5))
    real = make_batch(tiny)["phrase_mask"]
    assert torch.allclose(out.mask_logits[:, :3][real], ref.mask_logits[real], atol=1e-4)
    assert torch.allclose(out.pixel_embed, ref.pixel_embed, atol=1e-4)


def test_frozen_parts_get_no_gradient_trainable_parts_do(tiny):
    tiny.train()
    tiny.zero_grad(set_to_none=True)
    b = make_batch(tiny)
    losses = EPNGCriterion()(run(tiny, b), b["gt_masks"], b["phrase_mask"])
    losses["loss"].backward()
    grads = {n: p.grad for n, p in tiny.named_parameters()}
    frozen = [n for n, p in tiny.named_parameters() if not p.requires_grad]
    assert any(n.startswith("visual_encoder.body.layer1") for n in frozen)
    assert all(n.startswith(("visual_encoder.body.", "text_encoder.model.")) for n in frozen)
    assert all(grads[n] is None for n in frozen)
    heads = ("head.upsampler.lateral.1", "head.upsampler.refine.1", "head.upsampler.out") if tiny.head.upsampler else ()
    for prefix in (
        "visual_encoder.body.layer4",
        "visual_encoder.fpn",
        "text_encoder.proj",
        "communicator",
        "head",
        *heads,
    ):
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix)), prefix
    assert not tiny.text_encoder.model.training
    tiny.zero_grad(set_to_none=True)


def test_save_and_load_round_trip(tiny, tmp_path, monkeypatch):
    tiny.eval()
    tiny.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "text_encoder"} <= {p.name for p in tmp_path.iterdir()}
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt*"))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert EPNGConfig.from_dict(saved) == tiny.config
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("from_pretrained must not unpickle"))
    loaded = EPNG.from_pretrained(tmp_path)
    assert loaded.config == tiny.config and not loaded.training
    b = make_batch(tiny)
    with torch.no_grad():
        a, c = run(tiny, b), run(loaded, b)
    assert torch.equal(a.mask_logits, c.mask_logits)


def test_loading_needs_no_backbone_weight_file(tmp_path, monkeypatch):
    lite = EPNGConfig(**{**TINY, "backbone": "tf_efficientnet_lite0", "backbone_weights": "package", "num_layers": 1})
    model = EPNG(lite).eval()
    assert model.image_mean == (0.5, 0.5, 0.5)
    model.save_pretrained(tmp_path)
    monkeypatch.setattr(visual_encoder, "package_weights_path", lambda: pytest.fail("backbone file read"))
    loaded = EPNG.from_pretrained(tmp_path)
    assert loaded.config.backbone_weights == "package" and loaded.image_std == (0.5, 0.5, 0.5)
    sd, ld = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(sd[k], ld[k]) for k in sd)


def test_incompatible_checkpoint_is_a_checkpoint_error(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["ffn_dim"] = 32
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        EPNG.from_pretrained(tmp_path)


@pytest.mark.slow
def test_paper_preset_shapes_without_download():
    torch.manual_seed(0)
    model = build_epng("epng_r101_bert", backbone_weights="none", text_weights="random").eval()
    assert model.config.d_model == 768 and model.text_encoder.model.config.hidden_size == 768
    ids = torch.tensor([[101, 1037, 3899, 102]])
    ptm = torch.tensor([[[False, True, True, False]]])
    with torch.no_grad():
        images = torch.randn(1, 3, 640, 640)
        fused = model.visual_encoder(images).fused
        out = model(images, ids, torch.ones_like(ids), ptm, torch.ones(1, 1, dtype=torch.bool))
    assert fused.shape == (1, 768, 40, 40)
    assert out.mask_logits.shape == (1, 1, 160, 160) and out.pixel_embed.shape == (1, 768, 160, 160)
    assert torch.isfinite(out.mask_logits).all()


def test_input_format_is_the_models_own_and_caps_max_length(tiny):
    cfg = tiny.config
    fmt = tiny.input_format()
    assert fmt.tokenizer is tiny.tokenizer and fmt.max_length == cfg.max_text_length
    assert (fmt.transform.size, fmt.transform.mode) == ((cfg.image_size, cfg.image_size), cfg.resize)
    assert fmt.transform.mean == tuple(tiny.image_mean) and fmt.transform.std == tuple(tiny.image_std)
    assert fmt.pad_token_id == tiny.tokenizer.pad_token_id
    assert tiny.input_format(max_length=40).max_length == 40
    assert tiny.input_format(max_length=cfg.max_text_length + 100).max_length == cfg.max_text_length
    other = tiny.input_format((96, 128), "letterbox")
    assert (other.transform.size, other.transform.mode) == ((96, 128), "letterbox")


def test_input_format_refuses_bad_settings_at_construction(tiny):
    from types import SimpleNamespace

    from epng.data.input_format import InputFormat
    from epng.errors import ConfigError

    with pytest.raises(ConfigError, match="not a fast"):
        InputFormat(SimpleNamespace(is_fast=False, pad_token_id=0))
    with pytest.raises(ConfigError, match="max_length must be >= 2"):
        InputFormat(tiny.tokenizer, max_length=1)
    with pytest.raises(ConfigError, match="resize"):
        InputFormat(tiny.tokenizer, resize="stretch")
    with pytest.raises(ConfigError, match="std must be positive"):
        InputFormat(tiny.tokenizer, std=(0.2, 0.0, 0.2))
