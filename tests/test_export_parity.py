"""ONNX export and the exported-graph runtimes against the plain torch path.

Small model (ResNet-18 body, MiniLM-shaped random text encoder), 128² inputs. The graphs
are exported once per head type into one ``export_dir`` that every predictor here reuses.
fp32 graphs: mask logits within 1e-3 of the model's own forward, masks identical on
>= 99.9 % of the pixels, at other batch sizes and phrase counts than the export's example.
int8: runs, and its agreement is reported with a loose floor only. Nothing is timed.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from test_inference_predictor import ORIG, SIZE, SMALL, make_batch, plain_forward

from epng.data.inputs import model_inputs
from epng.errors import ConfigError
from epng.inference import InferenceOptions, Predictor
from epng.inference.export_cache import _load
from epng.inference.exported import GRAPHS, graph_runtime
from epng.inference.onnx_export import OPSET, write_model_files
from epng.inference.runtimes import GraphSession, missing_packages
from epng.model import EPNG, EPNGConfig

RUNTIMES = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(bool(missing_packages(name)), reason=f"{name}: {missing_packages(name)} missing"),
    )
    for name in ("onnxruntime", "openvino")
]
needs_ort = pytest.mark.skipif(bool(missing_packages("onnxruntime")), reason="onnx/onnxruntime not installed")
pytestmark = pytest.mark.usefixtures("one_thread")


def centred(model: EPNG) -> EPNG:
    """Masks that cover part of each image: the last LayerNorm's bias centres the pixel features."""
    with torch.no_grad():
        out = model(*model_inputs(make_batch(model, seed=100)))
        model.communicator.layers[-1].norm3.bias.sub_(out.pixel_embed.mean((0, 2, 3)))
    model.text_encoder.clear_cache()
    return model


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory) -> str:
    """A two-layer BERT (random weights) with MiniLM's tokenizer: a text graph that exports fast."""
    from transformers import AutoTokenizer, BertConfig

    from epng.model.text_encoder import minilm_path

    folder = tmp_path_factory.mktemp("tiny-text")
    BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128).save_pretrained(
        folder
    )
    AutoTokenizer.from_pretrained(minilm_path(), use_fast=True).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", params=["bilinear", "fpn"])
def exported(request, tiny_text, tmp_path_factory):
    """(model, export_dir) for each mask head, the graphs already exported there."""
    torch.manual_seed(0)
    config = EPNGConfig(**{**SMALL, "text_encoder": tiny_text, "mask_head": request.param})
    model = centred(EPNG(config).eval())
    folder = tmp_path_factory.mktemp(f"onnx-{request.param}")
    if not missing_packages("onnxruntime"):
        Predictor(model, runtime="onnxruntime", precision="fp32", export_dir=str(folder))
    return model, folder


def agreement(masks: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    return sum(int((a == b).sum()) for a, b in zip(masks, ref)) / sum(a.numel() for a in ref)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_predictor_matches_the_plain_path(exported, runtime):
    model, folder = exported
    predictor = Predictor(model, runtime=runtime, precision="fp32", export_dir=str(folder))
    assert predictor.report.runtime == runtime and predictor.report.label().startswith(runtime)
    for seed, batch_size in ((1, 2), (2, 1)):  # the export's example had batch 2, 3 phrases
        batch = make_batch(model, seed=seed, batch_size=batch_size)
        ref = plain_forward(model, batch)
        predictor.clear_text_cache()
        out = predictor.mask_logits(*model_inputs(batch))
        assert out.shape == ref.shape and out.dtype == torch.float32
        assert (out - ref).abs().max().item() < 1e-3
        masks = predictor.predict_torch(batch)
        ref_masks = EPNG.postprocess_masks(ref, (SIZE, SIZE), batch["meta"])
        assert [m.shape for m in masks] == [m.shape for m in ref_masks]
        assert agreement(masks, ref_masks) >= 0.999
        on = sum(int(m.sum()) for m in ref_masks) / sum(m.numel() for m in ref_masks)
        assert 0.02 < on < 0.98  # the masks are not trivially empty or full


@needs_ort
def test_more_phrases_and_one_image_many_narratives(exported):
    model, folder = exported
    predictor = Predictor(model, runtime="onnxruntime", precision="fp32", export_dir=str(folder))
    reference = Predictor(model, precision="fp32")
    image = (np.random.default_rng(0).random((ORIG[0], ORIG[1], 3)) * 255).astype(np.uint8)
    caption = "a [man] rides a [brown horse] on the [beach] near the [sea] under a [blue sky] with [two dogs]"
    for p in (predictor, reference):
        p.set_image(image)
    got, want = predictor.predict(caption), reference.predict(caption)
    assert got.phrases == want.phrases and len(got.phrases) == 6  # more phrases than the export's example
    assert np.abs(got.probabilities - want.probabilities).max() < 1e-3
    assert (got.masks == want.masks).mean() >= 0.999


@needs_ort
def test_graphs_have_dynamic_batch_and_phrases_and_the_text_graph_matches(exported):
    import onnx

    model, folder = exported
    if model.config.mask_head != "bilinear":
        pytest.skip("the graphs' signatures do not depend on the head")
    (graphs,) = [_load(f) for f in folder.iterdir()]  # the fixture's export
    comm = onnx.load(str(graphs.communicator))
    assert max(o.version for o in comm.opset_import if o.domain in ("", "ai.onnx")) == OPSET >= 17
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in comm.graph.input}
    assert isinstance(dims["phrases"][0], str) and isinstance(dims["phrases"][1], str)  # batch, phrases
    assert dims["fused"][1:] == [model.config.d_model, SIZE // 16, SIZE // 16]
    text = GraphSession(graphs.text, "onnxruntime")
    ids = torch.randint(1000, 2000, (3, 21))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    with torch.no_grad():
        want = model.text_encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
    (got,) = text({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    assert (got - want).abs().max().item() < 1e-4


@needs_ort
def test_model_files_hold_one_image_graph_and_the_text_graph(exported, tmp_path):
    model, folder = exported
    (graphs,) = [_load(f) for f in folder.iterdir()]  # the fixture's export
    paths = write_model_files(graphs, tmp_path / "model.onnx")
    assert [p.name for p in paths] == ["model.onnx", "model.text.onnx"]
    batch = make_batch(model, seed=4, batch_size=2)
    with torch.no_grad():
        phrases = model.encode_text(*model_inputs(batch)[1:])
    (got,) = GraphSession(paths[0], "onnxruntime")(
        {"images": batch["images"].numpy(), "phrases": phrases.numpy(), "phrase_mask": batch["phrase_mask"].numpy()}
    )
    assert (got - plain_forward(model, batch)).abs().max().item() < 1e-3


@pytest.fixture(scope="module")
def int8_everywhere(exported):
    """(model, export_dir, a Predictor with int8 of every graph) for the "fpn" head (its head
    graph has convolutions to quantise too); one head is enough for the int8 checks."""
    model, folder = exported
    if missing_packages("onnxruntime"):
        pytest.skip("onnx/onnxruntime not installed")
    if model.config.mask_head != "fpn":
        pytest.skip("one head is enough for the int8 checks")
    return model, folder, Predictor(model, runtime="onnxruntime", int8=True, precision="fp32", export_dir=str(folder))


def test_int8_runs_and_roughly_agrees(int8_everywhere):
    model, _, predictor = int8_everywhere
    assert predictor.report.int8 and "int8" in predictor.report.label()
    batch = make_batch(model, seed=5)
    ref = EPNG.postprocess_masks(plain_forward(model, batch), (SIZE, SIZE), batch["meta"])
    share = agreement(predictor.predict_torch(batch), ref)
    print(f"int8 (onnxruntime, synthetic calibration, random weights): {100 * share:.2f} % mask pixels agree")
    assert share >= 0.8  # a loose floor: random weights are the worst case for int8


@needs_ort
def test_export_command_writes_a_graph_that_matches(exported, tmp_path, capsys):
    from epng.cli.main import main

    model, _ = exported
    if model.config.mask_head != "bilinear":
        pytest.skip("one head is enough for the command")
    model.save_pretrained(tmp_path / "ckpt")
    assert (
        main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--output", str(tmp_path / "m.onnx"), "--no-text"]) == 0
    )
    assert f"(opset {OPSET}, input {SIZE}x{SIZE})" in capsys.readouterr().out
    assert not (tmp_path / "m.text.onnx").exists()
    batch = make_batch(model, seed=6, batch_size=1)
    with torch.no_grad():
        phrases = model.encode_text(*model_inputs(batch)[1:])
    (got,) = GraphSession(tmp_path / "m.onnx", "onnxruntime")(
        {"images": batch["images"].numpy(), "phrases": phrases.numpy(), "phrase_mask": batch["phrase_mask"].numpy()}
    )
    assert (got - plain_forward(model, batch)).abs().max().item() < 1e-3


def test_openvino_int8_hands_the_dynamic_graphs_to_onnxruntime():
    assert [graph_runtime("openvino", g, True) for g in GRAPHS] == [
        "openvino",
        "onnxruntime",
        "openvino",
        "onnxruntime",
    ]
    assert all(graph_runtime("onnxruntime", g, True) == "onnxruntime" for g in GRAPHS)
    assert all(graph_runtime("openvino", g, False) == "openvino" for g in GRAPHS)


def test_option_rules():
    with pytest.raises(ConfigError, match="runtime must be one of"):
        InferenceOptions(runtime="tensorrt")
    with pytest.raises(ConfigError, match="int8=True needs an exported runtime"):
        InferenceOptions(int8=True)
    with pytest.raises(ConfigError, match="compile=True runs torch.compile"):
        InferenceOptions(runtime="onnxruntime", fast=True, compile=True)
    with pytest.raises(ConfigError, match="calibration images are for int8"):
        InferenceOptions(runtime="onnxruntime", calibration=("a.png",))
    with pytest.raises(ConfigError, match="export_dir"):
        InferenceOptions(export_dir="x")


def test_int8_of_chosen_graphs_leaves_the_others_in_fp32(int8_everywhere):
    model, folder, every = int8_everywhere
    visual = Predictor(
        model, runtime="onnxruntime", int8=True, int8_graphs=("visual",), precision="fp32", export_dir=str(folder)
    )
    fp32 = Predictor(model, runtime="onnxruntime", precision="fp32", export_dir=str(folder))
    assert visual.report.int8_graphs == ["visual"] and "int8 (visual) + fp32" in visual.report.label()
    assert "int8 + fp32" in every.report.label()
    backend, full = visual._backend, every._backend
    assert backend.visual.path.name == full.visual.path.name == "visual.int8.onnx"
    for name in ("communicator", "head_graph"):  # the fp32 files
        assert getattr(backend, name).path == getattr(fp32._backend, name).path != getattr(full, name).path
    assert backend.text.session.path == fp32._backend.text.session.path
    batch = make_batch(model, seed=7)
    side = SIZE // 16
    fused, phrases = torch.randn(2, model.config.d_model, side, side), torch.randn(2, 3, model.config.d_model)
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert torch.equal(backend.communicate(fused, phrases, mask), fp32._backend.communicate(fused, phrases, mask))
    share = agreement(visual.predict_torch(batch), fp32.predict_torch(batch))
    assert share >= 0.8  # the int8 backbone only: a loose floor, as above


def test_int8_graph_choice_rules():
    from epng.cli.inference_args import add_inference_arguments, inference_options
    from epng.inference.export_cache import calibration_key

    with pytest.raises(ConfigError, match="non-empty selection"):
        InferenceOptions(runtime="onnxruntime", int8=True, int8_graphs=("backbone",))
    with pytest.raises(ConfigError, match="non-empty selection"):
        InferenceOptions(runtime="onnxruntime", int8=True, int8_graphs=())
    with pytest.raises(ConfigError, match="needs int8=True"):
        InferenceOptions(runtime="onnxruntime", int8_graphs=("visual",))
    chosen = InferenceOptions(runtime="openvino", int8=True, int8_graphs=("text", "visual"))
    assert chosen.int8_graphs == ("visual", "text")  # in graph order
    parser = argparse.ArgumentParser()
    add_inference_arguments(parser)
    base = ["--runtime", "onnxruntime"]
    assert not inference_options(parser.parse_args(base)).int8
    every = inference_options(parser.parse_args([*base, "--int8"]))
    assert every.int8 and every.int8_graphs == ("visual", "communicator", "head", "text")
    some = inference_options(parser.parse_args([*base, "--int8", "communicator", "visual"]))
    assert some.int8 and some.int8_graphs == ("visual", "communicator")
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--int8", "backbone"])
    key = calibration_key("onnxruntime", (), True)  # every graph: the key of before the choice existed
    assert key == calibration_key("onnxruntime", (), True, None)
    assert key != calibration_key("onnxruntime", (), True, ("visual",))
