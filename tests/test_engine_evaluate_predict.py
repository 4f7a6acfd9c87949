"""`epng evaluate` against `epng score`, and `epng predict` / `Predictor` on good and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from epng.cli.main import main
from epng.data.dataset import PNGDataset
from epng.data.panoptic import phrase_masks
from epng.engine.evaluator import evaluate_checkpoint
from epng.inference import Predictor
from epng.metrics.scorer import score_predictions
from epng.model import build_epng, load_model


class OraclePredictor(Predictor):
    """A predictor whose logits are +-10 where the ground truth of the sample it is given is
    (looked up by its image and word pieces), at input resolution."""

    def __init__(self, model, dataset: PNGDataset):
        super().__init__(model, precision="fp32")
        self.truth = {}
        for i in range(len(dataset)):
            s = dataset[i]
            key = (s.image.numpy().tobytes(), tuple(s.input_ids.tolist()))
            self.truth[key] = torch.from_numpy(phrase_masks(s.id_map.numpy(), s.phrase_segments))

    def mask_logits(self, images, input_ids, attention_mask, phrase_token_mask, phrase_mask):
        b, p = phrase_mask.shape
        logits = torch.full((b, p, *images.shape[-2:]), -10.0)
        for i in range(b):
            key = (images[i].numpy().tobytes(), tuple(input_ids[i][attention_mask[i].bool()].tolist()))
            gt = self.truth[key]
            logits[i, : gt.shape[0]] = torch.where(gt, 10.0, -10.0)
        return logits


@pytest.fixture(scope="module")
def tiny_model():
    return build_epng("epng_lite0_minilm", image_size=64, backbone_weights="none").eval()


def test_evaluate_on_an_oracle_reproduces_score(synth_dataset, tmp_path, tiny_model):
    dataset = PNGDataset(synth_dataset, "val2017", tiny_model.input_format())
    oracle = OraclePredictor(tiny_model, dataset)
    result = evaluate_checkpoint(oracle, synth_dataset, "val2017", tmp_path, batch_size=3, num_workers=0, n_overlays=2)
    metrics = result["metrics"]
    assert metrics["ar"] > 99.99 and metrics["n_missing"] == 0  # the synthetic images are 64 px: no resize
    assert metrics == json.loads((tmp_path / "metrics.json").read_text())
    assert score_predictions(synth_dataset, "val2017", tmp_path / "predictions.jsonl") == metrics
    assert (tmp_path / "recall_curve.png").stat().st_size > 0
    overlays = sorted(p.name for p in (tmp_path / "overlays").glob("*.png"))  # 2 narratives: overlay + panels each
    assert len(overlays) == 4 and sum(name.endswith("_phrases.png") for name in overlays) == 2


def test_evaluate_of_a_real_model_matches_score(synth_dataset, tmp_path, tiny_model):
    result = evaluate_checkpoint(
        Predictor(tiny_model, precision="fp32"),
        synth_dataset,
        "val2017",
        tmp_path,
        batch_size=2,
        num_workers=0,
        n_overlays=0,
    )
    assert score_predictions(synth_dataset, "val2017", tmp_path / "predictions.jsonl") == result["metrics"]
    assert 0.0 <= result["metrics"]["ar"] < 100.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model"
    tiny_model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pic") / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 90, 3), dtype=np.uint8)).save(path)
    return path


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def run_predict(capsys, checkpoint: Path, image: Path, *extra: str) -> tuple[int, str, str]:
    """`epng predict --checkpoint CHECKPOINT --image IMAGE EXTRA...`: exit code, stdout, stderr."""
    return run_cli(["predict", "--checkpoint", str(checkpoint), "--image", str(image), *extra], capsys)


def test_predict_writes_one_mask_per_phrase_at_image_size(checkpoint, picture, tmp_path, capsys):
    code, out, _ = run_predict(
        capsys, checkpoint, picture, "--caption", "A [red ball] lies on the [green grass].", "--output", str(tmp_path)
    )
    assert code == 0
    masks = sorted(tmp_path.glob("mask_*.png"))
    assert [m.name for m in masks] == ["mask_00_red_ball.png", "mask_01_green_grass.png"]
    for m in masks:
        assert np.asarray(Image.open(m)).shape == (50, 90)
    assert (tmp_path / "overlay.png").is_file()
    lines = [json.loads(line) for line in out.splitlines()]  # one JSON object per phrase, pipeable
    assert [(d["text"], d["start"], d["end"], d["source"]) for d in lines] == [
        ("red ball", 2, 10, "brackets"),
        ("green grass", 23, 34, "brackets"),
    ]
    for d, m in zip(lines, masks):
        assert d["file"] == str(m) and d["pixels"] == int((np.asarray(Image.open(m)) > 0).sum())


def test_a_plain_caption_grounds_the_extracted_noun_phrases(checkpoint, picture, capsys, tmp_path):
    from epng.data.phrases import extract_phrases

    caption = "In this picture we can see two dogs on the grass and a red ball."
    result = Predictor.from_pretrained(checkpoint, device="cpu", precision="fp32").predict(caption, image=picture)
    expected = extract_phrases(caption)
    assert result.phrase_source == "extracted" and result.caption == caption
    assert result.phrases == [p.text for p in expected] == ["picture", "two dogs", "grass", "red ball"]
    assert result.spans == [(p.start, p.end) for p in expected] and result.masks.shape == (4, 50, 90)
    code, out, _ = run_predict(capsys, checkpoint, picture, "--caption", caption, "--output", str(tmp_path))
    assert code == 0 and [json.loads(line)["source"] for line in out.splitlines()] == ["extracted"] * 4


def test_predict_has_a_default_output_folder_and_a_version(checkpoint, picture, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_predict(capsys, checkpoint, picture, "--caption", "a [dog]")
    assert code == 0 and (tmp_path / "predict_out" / "overlay.png").is_file()
    assert json.loads(out)["file"] == str(Path("predict_out") / "mask_00_dog.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("epng ")


def test_predictor_masks_equal_the_model_run_by_hand(checkpoint, picture, tiny_model):
    from epng.data.tokenization import align_phrases
    from epng.data.transforms import ResizeNormalize
    from epng.io.images import decode_image_file

    result = Predictor.from_pretrained(checkpoint, device="cpu", precision="fp32").predict(
        "a dog and a ball", ["dog", "ball"], image=str(picture)
    )
    assert result.phrases == ["dog", "ball"] and result.spans == [(2, 5), (12, 16)]
    image = decode_image_file(picture)
    x, _, _ = ResizeNormalize(64, "square", tiny_model.image_mean, tiny_model.image_std)(
        image, torch.zeros(50, 90, dtype=torch.int32)
    )
    al = align_phrases(tiny_model.tokenizer, "a dog and a ball", [(2, 5), (12, 16)])
    ptm = torch.zeros(1, 2, len(al.input_ids), dtype=torch.bool)
    for k, toks in enumerate(al.phrase_tokens):
        ptm[0, k, list(toks)] = True
    with torch.no_grad():
        logits = tiny_model(
            x[None],
            torch.tensor([al.input_ids]),
            torch.tensor([al.attention_mask]),
            ptm,
            torch.ones(1, 2, dtype=torch.bool),
        ).mask_logits
        probs = torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False).sigmoid()
        expected = torch.nn.functional.interpolate(probs, size=(50, 90), mode="bilinear", align_corners=False)[0] > 0.5
    agree = (torch.from_numpy(result.masks) == expected).float().mean().item()
    assert agree > 0.995  # one resize (stride 4 -> original) vs two (-> input -> original)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--caption", "   "], "the caption is empty"),
        (["--caption", "It is over there."], "no noun phrase found in the caption"),
        (["--caption", "a dog", "--phrase", "cat"], "phrase 'cat' does not occur in the caption"),
        (["--caption", "a [dog"], "unbalanced square brackets"),
        (["--caption", "word " * 600 + "[dog]"], "too long for the text encoder"),
    ],
)
def test_predict_bad_text(checkpoint, picture, tmp_path, capsys, extra, message):
    code, _, err = run_predict(capsys, checkpoint, picture, "--output", str(tmp_path), *extra)
    assert code == 2 and message in err and "Traceback" not in err


def test_predict_bad_files(checkpoint, tmp_path, capsys):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a picture")
    code, _, err = run_predict(capsys, checkpoint, not_image, "--caption", "a [dog]", "--output", str(tmp_path))
    assert code == 2 and str(not_image) in err and "corrupt or unsupported image" in err
    code, _, err = run_predict(
        capsys, checkpoint, tmp_path / "missing.jpg", "--caption", "a [dog]", "--output", str(tmp_path)
    )
    assert code == 2 and "missing.jpg: image file not found" in err
    code, _, err = run_predict(capsys, tmp_path, not_image, "--caption", "a [dog]", "--output", str(tmp_path))
    assert code == 2 and "not an EPNG checkpoint" in err


def test_fast_path_through_evaluate_and_predict(synth_dataset, checkpoint, picture, tmp_path, capsys):
    result = evaluate_checkpoint(
        Predictor(load_model(checkpoint), fast=True),
        synth_dataset,
        "val2017",
        tmp_path / "eval",
        batch_size=2,
        num_workers=0,
        n_overlays=0,
    )
    assert score_predictions(synth_dataset, "val2017", tmp_path / "eval" / "predictions.jsonl") == result["metrics"]
    code, _, _ = run_predict(
        capsys,
        checkpoint,
        picture,
        "--fast",
        "--caption",
        "A [red ball] on the grass.",
        "--output",
        str(tmp_path / "pred"),
    )
    assert code == 0 and np.asarray(Image.open(tmp_path / "pred" / "mask_00_red_ball.png")).shape == (50, 90)
