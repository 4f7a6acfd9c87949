"""`epng bench` and its harness: structure and arithmetic only -- nothing here asserts a timing."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from epng.bench import harness
from epng.bench.harness import (
    ModuleTimer,
    PeakRSS,
    Stats,
    bf16_peak,
    count_flops,
    markdown_table,
    paired_ratio,
    percentile,
    time_interleaved,
)
from epng.cli.main import build_parser, main

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
    info = harness.machine_info("cpu")
    for key in ("date_utc", "cpu_model", "cpu_cores", "torch", "device_name", "bf16_native"):
        assert key in info
    table = markdown_table(["a", "b"], [[1, None], ["x", 2.5]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 |  |", "| x | 2.5 |"]


# --------------------------------------------------------------------------- the command


def test_cli_registered():
    parser = build_parser()
    args = parser.parse_args(["bench", "--fast", "--device", "cpu", "--orig-size", "240x320"])
    assert args.fast and args.orig_size == (240, 320) and args.preset == "epng_r101_bert" and not args.text_bf16
    assert parser.parse_args(["bench", "--fast", "--text-bf16"]).text_bf16


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
    """The CPU peak-memory case (normally run in a fresh subprocess) returns its fields."""
    from dataclasses import asdict

    from epng.bench.model_bench import ModelBenchConfig, _memory_child

    cfg = ModelBenchConfig(preset="epng_lite0_minilm", image_size=64, phrases=2, tokens=12)
    res = _memory_child({"cfg": json.loads(json.dumps(asdict(cfg))), "path": "fast", "batch": 1, "mode": "text"})
    assert res["peak_rss_mib"] > 0 and "extra_mib" in res


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
    assert "images/s" in capsys.readouterr().out


def test_bad_arguments_exit_2(capsys):
    assert main(["bench", "--preset", "nope"]) == 2
    assert main(["bench", "--compile-scope", "backbone"]) == 2
    assert "error" in capsys.readouterr().err
