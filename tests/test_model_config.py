"""EPNGConfig and the preset registry."""

from __future__ import annotations

import json

import pytest

from epng.errors import ConfigError
from epng.model import EPNGConfig, build_epng, list_presets, preset_config


def test_defaults_are_the_paper_model():
    cfg = EPNGConfig()
    assert (cfg.backbone, cfg.text_encoder, cfg.fpn_channels, cfg.d_model) == (
        "resnet101",
        "bert-base-uncased",
        256,
        768,
    )
    assert (cfg.num_heads, cfg.ffn_dim, cfg.num_layers, cfg.dropout, cfg.trainable_stages) == (8, 2048, 3, 0.1, 2)
    assert cfg.loss_weights == (2.0, 2.0, 1.0) and not cfg.text_trainable


def test_json_round_trip(tmp_path):
    cfg = preset_config("epng_lite0_minilm", image_mean=[0.1, 0.2, 0.3], image_std=(1, 1, 1))
    path = tmp_path / "config.json"
    cfg.to_json_file(path)
    assert isinstance(json.loads(path.read_text())["image_mean"], list)
    back = EPNGConfig.from_json_file(path)
    assert back == cfg and back.image_mean == (0.1, 0.2, 0.3) and back.loss_weights == (2.0, 2.0, 1.0)


@pytest.mark.parametrize(
    "field, value",
    [
        ("backbone_weights", "packge"),
        ("text_weights", "maybe"),
        ("text_layers", "first"),
        ("lpa_distance", "manhattan"),
        ("mask_head", "deconv"),
        ("num_heads", 7),  # 768 % 7 != 0
        ("dropout", 1.0),
        ("trainable_stages", -1),
        ("loss_weights", (1.0, 2.0)),
    ],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        EPNGConfig(**{field: value})


def test_unknown_fields_and_presets_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="fpn_chanels"):
        EPNGConfig.from_dict({"fpn_chanels": 3})
    with pytest.raises(ConfigError, match="fpn_chanels"):
        preset_config("epng_r18_minilm", fpn_chanels=3)
    with pytest.raises(ConfigError, match="epng_lite0_minilm"):
        build_epng("epng_nope")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="bad.json"):
        EPNGConfig.from_json_file(tmp_path / "bad.json")


def test_presets():
    assert list_presets() == ["epng_lite0_minilm", "epng_r101_bert", "epng_r18_minilm", "epng_r50_bert"]
    paper = preset_config("epng_r101_bert")
    assert (paper.backbone, paper.text_encoder, paper.d_model, paper.num_heads, paper.ffn_dim, paper.num_layers) == (
        "resnet101",
        "bert-base-uncased",
        768,
        8,
        2048,
        3,
    )
    lite = preset_config("epng_lite0_minilm")
    assert (lite.backbone_weights, lite.text_encoder, lite.d_model) == ("package", "minilm", 192)
    assert preset_config("epng_r50_bert", dropout=0.0).dropout == 0.0
