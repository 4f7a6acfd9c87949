"""`epng bench` and its harness: structure and arithmetic only -- nothing here asserts a timing."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from epng.bench.config import TEXT_MODES, ModelBenchConfig
from epng.bench.harness import (
    ModuleTimer,
    PeakRSS,
    Stats,
    Timed,
    count_flops,
    markdown_table,
    paired_ratio,
    percentile,
    time_interleaved,
)
from epng.bench.inputs import make_batch
from epng.bench.machine import bf16_peak, isa_line, machine_info
from epng.bench.memory import measure_cpu_memory, memory_child
from epng.bench.report import format_results
from epng.bench.results import BenchResults, CaseResult, FlopsResult, LatencyResult, SpeedUp, StageResult
from epng.cli.main import build_parser, main
from epng.data.inputs import batch_text_inputs
from epng.device import ISA_FLAGS, cpu_flags
from epng.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_percentile_and_stats():
    values = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 90) == pytest.approx(4.6)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 5.0
    s = Stats.of(values)
    assert (s.median, s.min, s.mean, s.n) == (3.0, 1.0, 3.0, 5)
    assert math.isnan(Stats.of([]).median)
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == 3.0


def test_time_interleaved_order_and_counts():
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    setups = {"b": lambda: order.append("setup-b")}
    res = time_interleaved(fns, repeats=3, warmup=1, setup=setups)
    assert order == ["a", "setup-b", "b"] * 4  # warm-up round, then 3 round-robin rounds
    for name in fns:
        assert len(res[name].times) == 3 and len(res[name].warmup) == 1
        assert res[name].first_call == res[name].warmup[0]
        d = res[name].to_dict()
        assert {"median", "p90", "min", "mean", "n", "first_call_s", "times_s"} <= set(d)


def test_time_interleaved_stops_at_the_time_budget():
    res = time_interleaved({"x": lambda: None}, repeats=1000, warmup=0, max_seconds=0.0, min_repeats=2)
    assert len(res["x"].times) == 2


def test_count_flops_linear_and_conv():
    lin = nn.Linear(16, 8)
    assert count_flops(lambda: lin(torch.randn(4, 16))) == 2 * 4 * 16 * 8
    conv = nn.Conv2d(3, 5, 3, padding=1)
    assert count_flops(lambda: conv(torch.randn(1, 3, 6, 6))) == 2 * 5 * 36 * 3 * 9


def test_bf16_peaks():
    assert bf16_peak("NVIDIA H100 80GB HBM3")[0] == 989.0
    assert bf16_peak("NVIDIA H200")[0] == 989.0
    assert bf16_peak("NVIDIA H100 PCIe")[0] == 756.0
    assert bf16_peak(None)[0] is None
    assert bf16_peak("Some Future GPU")[0] is None


def test_module_timer_counts_calls():
    a, b = nn.Linear(4, 4), nn.ReLU()
    net = nn.Sequential(a, b, a)
    timer = ModuleTimer({"lin": [a], "act": [b]}, "cpu")
    with timer:
        net(torch.randn(2, 4))
    assert timer.calls() == {"lin": 2, "act": 1}
    assert set(timer.seconds()) == {"lin", "act"}
    net(torch.randn(2, 4))  # hooks removed on exit
    assert timer.calls() == {"lin": 2, "act": 1}


def test_peak_rss_fields():
    meter = PeakRSS()
    meter.start()
    block = torch.ones(4 * 2**20 // 4)  # 4 MiB touched
    out = meter.stop()
    del block
    assert {"peak_rss_mib", "start_rss_mib", "extra_mib", "method"} <= set(out)
    assert out["peak_rss_mib"] >= out["start_rss_mib"] > 0


def test_machine_info_and_table():
    info = machine_info("cpu")
    for key in ("date_utc", "cpu_model", "cpu_cores", "torch", "device_name", "bf16_native", "cpu_isa"):
        assert key in info
    assert info["cpu_isa"] == [f for f in ISA_FLAGS if f in cpu_flags()]
    table = markdown_table(["a", "b"], [[1, None], ["x", 2.5]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 |  |", "| x | 2.5 |"]


# --------------------------------------------------------------------------- inputs, results, report


def test_make_batch_text_tensors():
    """Narratives of 8 word pieces, 2 phrases of 3: [CLS] w w w w w w [SEP], phrases at 1-3 and 4-6."""
    cfg = ModelBenchConfig(image_size=32, orig_size=(24, 40), phrases=2, tokens=8)
    b = make_batch(cfg, 2, "cpu")
    ids = b["input_ids"]
    assert ids.dtype == torch.long and ids.shape == (2, 8)
    assert (ids[:, 0] == 101).all() and (ids[:, -1] == 102).all()
    assert ((ids[:, 1:-1] >= 1000) & (ids[:, 1:-1] < 29000)).all() and not torch.equal(ids[0], ids[1])
    spans = torch.zeros(2, 2, 8, dtype=torch.bool)
    spans[:, 0, 1:4] = True
    spans[:, 1, 4:7] = True
    assert torch.equal(b["phrase_token_mask"], spans)
    assert torch.equal(b["attention_mask"], torch.ones(2, 8, dtype=torch.long))
    assert torch.equal(b["phrase_mask"], torch.ones(2, 2, dtype=torch.bool))
    text = batch_text_inputs([ids[0].tolist(), ids[1].tolist()], [[[1, 2, 3], [4, 5, 6]]] * 2, 0)
    for key, value in text._asdict().items():
        assert b[key].dtype == value.dtype and torch.equal(b[key], value)
    assert b["images"].shape == (2, 3, 32, 32) and b["gt_masks"].shape == (2, 2, 32, 32)
    assert b["meta"][1] == {"phrase_indices": [0, 1], "orig_size": (24, 40), "valid_size": (32, 32)}
    assert torch.equal(make_batch(cfg, 2, "cpu")["input_ids"], ids)  # seeded
    with pytest.raises(ConfigError, match="too short"):
        make_batch(ModelBenchConfig(phrases=3, tokens=10), 1, "cpu")


def _timed(times: list[float], cpu: list[float] | None = None) -> Timed:
    return Timed(None, [], times, cpu or [])


def _hand_results() -> BenchResults:
    machine = {
        "device": "cpu",
        "device_name": "Test CPU",
        "cpu_cores_usable": 2,
        "torch_threads": 1,
        "torch": "2.x",
        "date_utc": "2026-01-01T00:00:00Z",
        "load_avg_1m": 0.5,
        "cpu_isa": ["avx2", "fma"],
        "bf16_peak_tflops": None,
    }
    cfg = ModelBenchConfig(preset="tiny", image_size=64, orig_size=(48, 64), batch=2, fast=True, phrases=2, tokens=12)
    plain = {
        "text": CaseResult(_timed([0.4, 0.2, 0.3], [0.8, 0.4, 0.6]), 2),
        "cached": CaseResult(_timed([0.2, 0.2, 0.2]), 2),
    }
    fast = {
        "text": CaseResult(_timed([0.1, 0.1, 0.2], [0.2, 0.2, 0.3]), 2),
        "cached": CaseResult(_timed([0.1, 0.1, 0.1]), 2),
    }
    speedup = {mode: SpeedUp.of(plain[mode].timed, fast[mode].timed) for mode in TEXT_MODES}
    flops = FlopsResult(visual=6 * 10**9, text=2 * 10**9, communicator=10**9, head=10**9)
    stages = StageResult(
        {"plain": {"visual": _timed([0.2])}, "fast": {"visual": _timed([0.1])}},
        {"fast": {"communicator.lpa": Stats.of([0.05])}},
    )
    return BenchResults(
        machine,
        cfg,
        params=10,
        build_seconds=1.0,
        labels={"plain": "plain fp32 eager", "fast": "fast (fp32)"},
        latency=LatencyResult({"plain": plain, "fast": fast}, speedup),
        flops={"plain": flops, "fast": flops},
        stages=stages,
    )


def test_results_arithmetic_and_json():
    d = _hand_results().to_dict()
    ratio = d["latency"]["ratio"]["text"]
    assert ratio["median"] == pytest.approx(0.3 / 0.1) and ratio["min"] == pytest.approx(0.2 / 0.1)
    assert ratio["paired_median"] == pytest.approx(2.0)  # median of 4, 2, 1.5
    assert ratio["cpu_median"] == pytest.approx(0.6 / 0.2)
    assert d["latency"]["ratio"]["cached"]["cpu_median"] is None
    case = d["latency"]["plain"]["text"]
    assert case["batch"] == 2 and case["images_per_s"] == pytest.approx(2 / 0.3) and case["n"] == 3
    assert "peak_memory_mib" not in case
    assert d["flops"]["fast"] == {
        "visual": 6e9,
        "text": 2e9,
        "communicator": 1e9,
        "head": 1e9,
        "total_text": 10e9,
        "total_cached": 8e9,
    }
    achieved = d["achieved"]["latency"]["fast"]["cached"]  # 8 GFLOPs x 20 images/s
    assert achieved == {"tflops": pytest.approx(0.16), "fraction_of_peak": None}
    assert d["stages"]["fast"]["communicator.lpa"]["median"] == 0.05 and "communicator.lpa" not in d["stages"]["plain"]
    assert d["config"]["precision"] == "auto" and "throughput" not in d and "train" not in d
    assert ModelBenchConfig.from_dict(json.loads(json.dumps(d["config"]))) == _hand_results().config


def test_report_tables_and_isa_line():
    results = _hand_results()
    lines = format_results(results).splitlines()
    assert lines[0].startswith("**tiny** (random weights), input 64², original 48×64")
    assert lines[1] == "CPU ISA: avx2, fma"
    assert lines[2:4] == ["- plain: plain fp32 eager", "- fast: fast (fp32)"]
    assert "| latency, batch 2, text encoder run (ms, median / p90) | 300 / 380 | 100 / 180 | 3.00× |" in lines
    assert "|   process CPU time per call (ms, median) | 600 | 200 | 3.00× |" in lines
    assert "| GFLOPs / image (text encoder run) | 10.0 | 10.0 |  |" in lines
    assert "| achieved TFLOP/s (latency, cached text) | 0.08 | 0.16 |  |" in lines
    assert "| backbone + FPN + fusion | 200 | 100 | 2.00× |" in lines
    assert "|   of which LPA | — | 50.0 | — |" in lines
    results.machine["cpu_isa"] = []
    assert format_results(results).splitlines()[1] == "CPU ISA: none of " + ", ".join(ISA_FLAGS)


# --------------------------------------------------------------------------- the command


def test_cli_registered():
    parser = build_parser()
    args = parser.parse_args(["bench", "--fast", "--device", "cpu", "--orig-size", "240x320"])
    assert args.fast and args.orig_size == (240, 320) and args.preset == "epng_r101_bert" and not args.text_bf16
    assert parser.parse_args(["bench", "--fast", "--text-bf16"]).text_bf16
    assert args.precision == "auto" and parser.parse_args(["bench", "--precision", "bf16"]).precision == "bf16"


def test_bench_end_to_end_tiny(tmp_path, capsys):
    """The whole comparison on the smallest preset at 64² (one repeat of every case)."""
    out = tmp_path / "bench.json"
    rc = main(
        [
            "bench",
            "--preset",
            "epng_lite0_minilm",
            "--image-size",
            "64",
            "--orig-size",
            "48x80",
            "--fast",
            "--text-bf16",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--throughput-batch",
            "2",
            "--phrases",
            "2",
            "--tokens",
            "12",
            "--train",
            "--no-memory",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "speed-up (plain/fast)" in text and "training step" in text and "masks at original size" in text
    assert text.splitlines()[1] == isa_line(json.loads(out.read_text())["machine"])
    res = json.loads(out.read_text())
    assert res["machine"]["cpu_model"] and res["config"]["preset"] == "epng_lite0_minilm"
    for kind in ("latency", "throughput"):
        for path in ("plain", "fast"):
            for mode in ("text", "cached"):
                assert res[kind][path][mode]["n"] == 1
        assert set(res[kind]["ratio"]) == {"text", "cached"}
    assert res["throughput"]["fast"]["cached"]["batch"] == 2
    stages = res["stages"]["fast"]
    assert {"visual", "text", "communicator", "head", "postprocess", "communicator.lpa", "communicator.ffn"} <= set(
        stages
    )
    fl = res["flops"]
    assert fl["plain"]["total_text"] > fl["plain"]["total_cached"] > 0
    rep = res["fast_report"]
    assert rep["text_dtype"] == rep["dtype"]  # --text-bf16: the text encoder follows the fast path's dtype
    assert not rep["stride16_head"]  # the compact preset's "fpn" head: the same work on both paths
    assert fl["fast"]["head"] == fl["plain"]["head"]
    assert fl["fast"]["visual"] == fl["plain"]["visual"]
    assert res["agreement"]["mask_pixels_equal"] >= 0.0
    assert "fp32" in res["train"] and res["train"]["batch"] == 1


def test_memory_child_in_process():
    """The CPU peak-memory case (normally run in a fresh subprocess) returns the `PeakRSS` fields."""
    cfg = ModelBenchConfig(preset="epng_lite0_minilm", image_size=64, phrases=2, tokens=12)
    res = memory_child({"cfg": json.loads(json.dumps(cfg.to_dict())), "path": "fast", "batch": 1, "mode": "text"})
    assert res["peak_rss_mib"] > 0 and res["peak_rss_mib"] >= res["start_rss_mib"] and "extra_mib" in res


@pytest.mark.parametrize("setup_peak_mib", [1.0, 10**6])
def test_memory_child_process_peak(monkeypatch, setup_peak_mib):
    """The whole-process peak is the larger of the peak before the measured call (read from
    VmHWM before the meter resets it) and the call's own peak."""
    from epng.bench import memory

    real = memory.proc_status_kib
    monkeypatch.setattr(memory, "proc_status_kib", lambda key: setup_peak_mib * 1024 if key == "VmHWM" else real(key))
    cfg = ModelBenchConfig(preset="epng_lite0_minilm", image_size=64, phrases=2, tokens=12)
    res = memory_child({"cfg": json.loads(json.dumps(cfg.to_dict())), "path": "fast", "batch": 1, "mode": "text"})
    assert res["process_peak_mib"] == max(setup_peak_mib, res["peak_rss_mib"])


@pytest.mark.slow
def test_memory_child_subprocess():
    """The parent runs the case as ``python -m epng.bench.memory --memory-child SPEC`` and parses its line."""
    cfg = ModelBenchConfig(preset="epng_lite0_minilm", image_size=64, phrases=2, tokens=12, fast_only=True)
    res = measure_cpu_memory(cfg, 1)
    assert set(res) == {"fast"}
    assert res["fast"].error is None and res["fast"].peak_rss_mib > 0 and res["fast"].extra_mib is not None
    assert set(res["fast"].to_dict()) == {"peak_rss_mib", "start_rss_mib", "extra_mib", "method", "process_peak_mib"}


def test_loader_bench(tmp_path, capsys):
    from epng.data.synth import generate_benchmark

    root = tmp_path / "synth"
    generate_benchmark(root, 4, 2, 64, 0)
    out = tmp_path / "loader.json"
    rc = main(
        [
            "bench",
            "--loader",
            str(root),
            "--preset",
            "epng_lite0_minilm",
            "--image-size",
            "64",
            "--loader-workers",
            "0,1",
            "--loader-batch",
            "2",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["split"] == "train2017" and res["narratives"] >= 1
    assert set(res["workers"]) == {"0", "1"}
    assert res["workers"]["0"]["first_batch_images"] == 2
    text = capsys.readouterr().out
    assert "images/s" in text and text.splitlines()[1].startswith("CPU ISA: ")


def test_bad_arguments_exit_2(capsys):
    assert main(["bench", "--preset", "nope"]) == 2
    assert main(["bench", "--compile-scope", "backbone"]) == 2
    assert "error" in capsys.readouterr().err
