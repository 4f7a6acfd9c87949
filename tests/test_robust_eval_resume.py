"""Evaluation that loses nothing: `epng evaluate` killed and re-run continues, and ends with the files
of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from epng.engine.eval_resume import PROGRESS_FILE
from epng.engine.evaluator import evaluate_checkpoint
from epng.inference import Predictor
from epng.model import build_epng

SPLIT = "val2017"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(build_epng("epng_lite0_minilm", image_size=64, backbone_weights="none"), precision="fp32")


class CountingCalls:
    """Counts `Predictor.predict_torch` calls (one per batch); raises KeyboardInterrupt at call ``fail_at``."""

    def __init__(self, monkeypatch, fail_at: int | None = None):
        self.calls, self.fail_at = 0, fail_at
        real = Predictor.predict_torch

        def counted(predictor, batch, *args, **kwargs):
            self.calls += 1
            if self.calls == self.fail_at:
                raise KeyboardInterrupt
            return real(predictor, batch, *args, **kwargs)

        monkeypatch.setattr(Predictor, "predict_torch", counted)


def evaluate(predictor: Predictor, root: Path, out: Path, batch_size: int = 1, n_overlays: int = 3) -> dict:
    return evaluate_checkpoint(predictor, root, SPLIT, out, batch_size=batch_size, num_workers=0, n_overlays=n_overlays)


def output_files(out: Path) -> dict[str, bytes]:
    names = ["predictions.jsonl", "metrics.json", *(f"overlays/{p.name}" for p in (out / "overlays").glob("*.png"))]
    return {name: (out / name).read_bytes() for name in sorted(names)}


def test_a_killed_evaluation_continues_and_ends_with_identical_files(synth_dataset, tmp_path, predictor, monkeypatch):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    counter = CountingCalls(monkeypatch)
    expected = evaluate(predictor, synth_dataset, straight)
    n_batches = counter.calls
    assert n_batches >= 4

    CountingCalls(monkeypatch, fail_at=3)  # killed while predicting the third batch
    with pytest.raises(KeyboardInterrupt):
        evaluate(predictor, synth_dataset, broken)
    progress = json.loads((broken / PROGRESS_FILE).read_text())
    assert progress["batches_done"] == 2
    with open(broken / "predictions.jsonl", "a") as f:  # what a process killed mid-line leaves behind
        f.write('{"narrative": 9, "image_id": 10')

    counter = CountingCalls(monkeypatch)
    result = evaluate(predictor, synth_dataset, broken)
    assert counter.calls == n_batches - 2  # only the batches not done
    assert output_files(broken) == output_files(straight)
    assert result["metrics"] == json.loads((straight / "metrics.json").read_text())
    assert [Path(p).name for p in result["files"]["overlays"]] == [Path(p).name for p in expected["files"]["overlays"]]

    # a finished evaluation re-run: nothing left to predict, the same results
    counter = CountingCalls(monkeypatch)
    assert evaluate(predictor, synth_dataset, broken)["metrics"] == result["metrics"]
    assert counter.calls == 0 and output_files(broken) == output_files(straight)


def test_another_batch_size_or_a_shortened_file_starts_over(synth_dataset, tmp_path, predictor, monkeypatch, capsys):
    out = tmp_path / "eval"
    CountingCalls(monkeypatch, fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        evaluate(predictor, synth_dataset, out, n_overlays=0)
    counter = CountingCalls(monkeypatch)
    reference = evaluate(predictor, synth_dataset, out, batch_size=2, n_overlays=0)
    n_batches = counter.calls
    assert "from another evaluation (or damaged): starting over" in capsys.readouterr().out
    assert n_batches >= 2

    out = tmp_path / "eval2"
    CountingCalls(monkeypatch, fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate(predictor, synth_dataset, out, batch_size=2, n_overlays=0)
    assert json.loads((out / PROGRESS_FILE).read_text())["batches_done"] == 1
    (out / "predictions.jsonl").write_text("")  # the predictions are gone: the progress cannot be trusted
    counter = CountingCalls(monkeypatch)
    assert evaluate(predictor, synth_dataset, out, batch_size=2, n_overlays=0)["metrics"] == reference["metrics"]
    assert counter.calls == n_batches
    assert (out / "predictions.jsonl").read_bytes() == (tmp_path / "eval" / "predictions.jsonl").read_bytes()
