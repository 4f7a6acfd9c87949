"""Visual encoder: strides, fusion, freezing and the offline EfficientNet-Lite0 weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from epng.errors import ConfigError
from epng.model import EPNGConfig, image_stats
from epng.model.visual_encoder import VisualEncoder, load_backbone_weights, package_weights_path


def cfg(**kw) -> EPNGConfig:
    base = dict(backbone="resnet18", backbone_weights="none", fpn_channels=8, num_heads=4)
    return EPNGConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def package_state():
    return torch.load(package_weights_path(), map_location="cpu", weights_only=True)


@pytest.mark.parametrize("size, grid", [((64, 96), (4, 6)), ((72, 72), (5, 5))])
def test_fused_map_is_stride_16_with_three_fpn_levels(size, grid):
    enc = VisualEncoder(cfg()).eval()
    with torch.no_grad():
        out = enc(torch.randn(2, 3, *size))
    assert out.fused.shape == (2, 24, *grid) and out.fine == ()


def test_fusion_is_avgpool_p3_p4_bilinear_p5():
    enc = VisualEncoder(cfg()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = enc(x).fused
        p3, p4, p5 = enc.fpn(dict(zip("abc", enc.body(x)))).values()
    assert torch.allclose(out[:, :8], torch.nn.functional.avg_pool2d(p3, 2))
    assert torch.equal(out[:, 8:16], p4)
    up = torch.nn.functional.interpolate(p5, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(out[:, 16:], up)


def test_fpn_head_adds_stride_4_level_and_leaves_the_fused_map_alone():
    torch.manual_seed(0)
    paper, fine = VisualEncoder(cfg()).eval(), VisualEncoder(cfg(mask_head="fpn")).eval()
    assert fine.body.feature_info.reduction() == [4, 8, 16, 32]
    paper.body.load_state_dict(fine.body.state_dict())
    own = fine.fpn.state_dict()
    # the paper FPN's level i is level i + 1 of the four-level one (inner/layer blocks)
    paper.fpn.load_state_dict(
        {
            k: own[k.replace(f"blocks.{k.split('.')[1]}", f"blocks.{int(k.split('.')[1]) + 1}")]
            for k in paper.fpn.state_dict()
        }
    )
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = paper(x), fine(x)
        p2, p3 = list(fine.fpn(dict(zip("abcd", fine.body(x)))).values())[:2]
    assert torch.allclose(a.fused, b.fused, atol=1e-6)
    assert [t.shape for t in b.fine] == [(1, 8, 8, 12), (1, 8, 16, 24)]
    assert torch.equal(b.fine[0], p3) and torch.equal(b.fine[1], p2)


def test_resnet_last_two_stages_train_and_frozen_batchnorm_stays_in_eval():
    enc = VisualEncoder(cfg(trainable_stages=2)).train()
    frozen = [n for n, p in enc.body.named_parameters() if not p.requires_grad]
    trainable = [n for n, p in enc.body.named_parameters() if p.requires_grad]
    assert {n.split(".")[0] for n in frozen} == {"conv1", "bn1", "layer1", "layer2"}
    assert {n.split(".")[0] for n in trainable} == {"layer3", "layer4"}
    assert not enc.body.bn1.training and not enc.body.layer2[0].bn1.training
    assert enc.body.layer3[0].bn1.training
    stats = enc.body.layer1[0].bn1.running_mean.clone()
    enc(torch.randn(2, 3, 64, 64)).fused.square().mean().backward()
    assert torch.equal(stats, enc.body.layer1[0].bn1.running_mean)  # frozen BN: no statistics update
    assert all(p.grad is None for n, p in enc.body.named_parameters() if n in frozen)
    assert all(p.grad is not None for n, p in enc.body.named_parameters() if n in trainable)
    assert all(p.grad is not None for p in enc.fpn.parameters())


def test_efficientnet_stages_and_bounds():
    enc = VisualEncoder(cfg(backbone="tf_efficientnet_lite0", trainable_stages=2))
    trainable = {".".join(n.split(".")[:2]) for n, p in enc.body.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.3", "blocks.4", "blocks.5", "blocks.6"}
    assert all(p.requires_grad for p in VisualEncoder(cfg(trainable_stages=5)).parameters())
    assert not any(p.requires_grad for p in VisualEncoder(cfg(trainable_stages=0)).body.parameters())
    with pytest.raises(ConfigError, match="trainable_stages"):
        VisualEncoder(cfg(trainable_stages=6))


def test_package_weights_load_by_order(package_state):
    enc = VisualEncoder(cfg(backbone="tf_efficientnet_lite0", backbone_weights="package"))
    own = enc.body.state_dict()
    spot = {
        "conv_stem.weight": "_conv_stem.weight",
        "bn1.running_var": "_bn0.running_var",
        "blocks.0.0.conv_dw.weight": "_blocks.0._depthwise_conv.weight",
        "blocks.6.0.bn3.running_mean": "_blocks.15._bn2.running_mean",
    }
    for ours, theirs in spot.items():
        assert torch.equal(own[ours], package_state[theirs])
    source = list(package_state.values())
    assert all(torch.equal(v, source[i]) for i, v in enumerate(own.values()))  # features = leading tensors


def test_package_weight_mismatch_is_a_clear_error(package_state):
    enc = VisualEncoder(cfg(backbone="tf_efficientnet_lite0"))
    config = cfg(backbone="tf_efficientnet_lite0", backbone_weights="package")
    bad = dict(package_state)
    bad["_blocks.0._depthwise_conv.weight"] = torch.zeros(32, 1, 5, 5)
    with pytest.raises(ConfigError, match=r"_blocks\.0\._depthwise_conv\.weight.*blocks\.0\.0\.conv_dw\.weight"):
        load_backbone_weights(enc.body, config, bad)
    bad.pop("_fc.bias")
    with pytest.raises(ConfigError, match="295 tensors"):
        load_backbone_weights(enc.body, config, bad)
    with pytest.raises(ConfigError, match="EfficientNet-Lite0"):
        VisualEncoder(cfg(backbone_weights="package"))


def test_local_weights_file(tmp_path):
    src = VisualEncoder(cfg())
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in src.body.state_dict().items()}, str(path))
    enc = VisualEncoder(cfg(backbone_weights=str(path)))
    assert all(torch.equal(a, b) for a, b in zip(src.body.state_dict().values(), enc.body.state_dict().values()))
    with pytest.raises(ConfigError, match="does not exist"):
        VisualEncoder(cfg(backbone_weights=str(tmp_path / "missing.pth")))


def test_image_stats_follow_the_weights():
    assert image_stats(cfg(backbone="tf_efficientnet_lite0", backbone_weights="package")) == ((0.5,) * 3, (0.5,) * 3)
    assert image_stats(cfg()) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert image_stats(cfg(image_mean=(0, 0, 0), image_std=(1, 1, 1))) == ((0, 0, 0), (1, 1, 1))
