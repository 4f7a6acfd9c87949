"""Markdown report of a `BenchResults`: a header with the machine and its CPU's ISA flags, the
path x case table (with plain / fast speed-ups when both paths ran), mask agreement,
compile times, the per-stage table and the training-step table."""

from __future__ import annotations

from epng.bench.config import PATHS
from epng.bench.harness import fmt_ms, fmt_ratio, markdown_table
from epng.bench.machine import isa_line
from epng.bench.results import BenchResults, CaseResult, LatencyResult, StageResult, TrainResult

MODES = (("text", "text encoder run"), ("cached", "cached text features"))
STAGE_ROWS = (
    ("visual", "backbone + FPN + fusion"),
    ("text", "text encoder (cold cache)"),
    ("communicator", "communicator (S layers)"),
    ("communicator.lpa", "  of which LPA"),
    ("communicator.cross", "  of which cross-attention"),
    ("communicator.ffn", "  of which FFN"),
    ("head", "dense head"),
    ("postprocess", "masks at original size"),
)
TRAIN_VARIANTS = ("fp32", "bf16_autocast")


def _lat_cell(case: CaseResult | None) -> str:
    if case is None:
        return "—"
    return f"{fmt_ms(case.stats.median)} / {fmt_ms(case.stats.p90)}"


def _header(r: BenchResults, names: list[str]) -> list[str]:
    cfg, m = r.config, r.machine
    lines = [
        f"**{cfg.preset}** (random weights), input {cfg.image_size}², original {cfg.orig_size[0]}×{cfg.orig_size[1]}, "
        f"{cfg.phrases} phrases / {cfg.tokens} word pieces — {m['device_name']} "
        f"({m['cpu_cores_usable']} usable cores, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"{m['date_utc']}; load average {m.get('load_avg_1m') or 0:.1f} at start, {r.load_avg_end or 0:.1f} at end)",
        isa_line(m),
    ]
    lines += [f"- {n}: {r.labels.get(n, n)}" for n in names]
    return lines + [""]


def _is_pair(names: list[str]) -> bool:
    """Exactly plain and fast: the table gets a speed-up column; otherwise ratios sit in the cells."""
    return list(names) == list(PATHS)


def _cells(lat: LatencyResult, names: list[str], mode: str, values: list[str], stat: str) -> list[str]:
    """``values`` of each path, with plain / path (``stat`` of the `SpeedUp`) beside every
    non-plain path's value when more than plain and fast are compared."""
    if _is_pair(names):
        return values
    out = []
    for name, value in zip(names, values):
        ratio = lat.ratio(name, mode) if name != "plain" else None
        out.append(f"{value} ({fmt_ratio(getattr(ratio, stat))})" if ratio is not None else value)
    return out


def _latency_rows(lat: LatencyResult, names: list[str], cpu: bool) -> list[list[str]]:
    rows = []
    for mode, what in MODES:
        if not all(mode in lat.cases.get(n, {}) for n in names):
            continue
        cases = [lat.cases[n][mode] for n in names]
        ratio = lat.speedup.get(mode) if _is_pair(names) else None
        cells = _cells(lat, names, mode, [_lat_cell(c) for c in cases], "median")
        rows.append([f"latency, batch {cases[0].batch}, {what} (ms, median / p90)"] + cells)
        rows[-1] += [fmt_ratio(ratio.median)] if ratio else []
        cells = _cells(lat, names, mode, [fmt_ms(c.stats.min) for c in cases], "min")
        rows.append([f"  best of {cases[0].stats.n} (ms, min)"] + cells + ([fmt_ratio(ratio.min)] if ratio else []))
        if cpu and cases[0].cpu_median is not None:
            cells = _cells(lat, names, mode, [fmt_ms(c.cpu_median) for c in cases], "cpu_median")
            row = ["  process CPU time per call (ms, median)"] + cells
            rows.append(row + ([fmt_ratio(ratio.cpu_median)] if ratio else []))
    return rows


def _throughput_rows(thr: LatencyResult, names: list[str]) -> list[list[str]]:
    rows = []
    for mode, what in MODES:
        if not all(mode in thr.cases.get(n, {}) for n in names):
            continue
        cases = [thr.cases[n][mode] for n in names]
        ratio = thr.speedup.get(mode) if _is_pair(names) else None
        cells = _cells(thr, names, mode, [f"{c.images_per_s:.2f}" for c in cases], "median")
        row = [f"throughput, batch {cases[0].batch}, {what} (images/s)"] + cells
        rows.append(row + ([fmt_ratio(ratio.median)] if ratio else []))
    return rows


def _flops_rows(r: BenchResults, names: list[str], pad: list[str]) -> list[list[str]]:
    rows = [["GFLOPs / image (text encoder run)"] + [f"{r.flops[n].total_text / 1e9:.1f}" for n in names] + pad]
    src = "throughput" if r.throughput else "latency"
    achieved = r.achieved(src)
    if achieved:
        peak = r.machine.get("bf16_peak_tflops")
        cells = []
        for n in names:
            a = achieved.get(n, {}).get("cached")
            if a is None:
                cells.append("—")
            else:
                frac = a.fraction_of_peak
                cells.append(f"{a.tflops:.2f}" + (f" ({100 * frac:.1f}% of {peak:.0f})" if frac else ""))
        rows.append([f"achieved TFLOP/s ({src}, cached text)"] + cells + pad)
    return rows


def _memory_rows(r: BenchResults, names: list[str], pad: list[str]) -> list[list[str]]:
    rows = []
    if r.cpu_memory:
        cells = []
        for n in names:
            m = r.cpu_memory.get(n)
            if m is None or m.error:
                cells.append("error" if m else "—")
            else:
                cells.append(f"{m.process_peak_mib or '—'} / {m.peak_rss_mib} / {m.extra_mib}")
        label = f"peak RSS, batch {r.config.batch} (MiB: whole process / the call / extra during the call)"
        rows.append([label] + cells + pad)
    lat, thr = r.latency, r.throughput
    if all(lat.cases[n]["text"].peak_memory_mib is not None for n in names):
        rows.append(
            ["peak CUDA memory, latency case (MiB)"] + [str(lat.cases[n]["text"].peak_memory_mib) for n in names] + pad
        )
        if thr:
            batch = thr.cases[names[0]]["text"].batch
            cells = [str(thr.cases[n]["text"].peak_memory_mib) for n in names]
            rows.append([f"peak CUDA memory, batch {batch} (MiB)"] + cells + pad)
    return rows


def _main_table(r: BenchResults, names: list[str]) -> list[str]:
    compare = _is_pair(names)
    pad = [""] if compare else []
    rows = _latency_rows(r.latency, names, str(r.machine.get("device")) == "cpu")
    if r.throughput:
        rows += _throughput_rows(r.throughput, names)
    if r.flops:
        rows += _flops_rows(r, names, pad)
    rows += _memory_rows(r, names, pad)
    headers = ["case", *names] + (["speed-up (plain/fast)"] if compare else [])
    return [markdown_table(headers, rows)] if rows else []


def _notes(r: BenchResults) -> list[str]:
    lines = []
    if r.skipped:
        lines.append(f"\nskipped (deadline): {', '.join(r.skipped)}")
    a = r.agreement
    if a:
        lines += [
            "",
            f"fast vs plain: {100 * a.mask_pixels_equal:.3f}% of mask pixels identical at original size "
            f"({100 * a.mask_pixels_on_plain:.1f}% on), largest probability difference {a.max_prob_diff_stride4:.2e}",
        ]
    for name, a in r.runtime_agreement.items():
        lines.append(
            f"{name} vs plain: {100 * a.mask_pixels_equal:.3f}% of mask pixels identical at original size, "
            f"largest probability difference {a.max_prob_diff_stride4:.2e}"
        )
    if r.runtime_prepare_seconds:
        secs = ", ".join(f"{k}: {v:.1f} s" for k, v in r.runtime_prepare_seconds.items())
        lines += ["", f"exported runtimes, export (+ int8 calibration) and loading: {secs}"]
    rep = r.fast_report
    if rep and rep.compile_scopes:
        secs = ", ".join(f"{k}: {v:.1f} s" for k, v in rep.compile_seconds.items()) or "—"
        errs = "; ".join(f"{k}: {v}" for k, v in rep.compile_errors.items())
        failed = f"; FAILED, eager fallback: {errs}" if errs else ""
        lines += ["", f"torch.compile ({rep.compile_mode}): first call (compile + run) {secs}{failed}"]
    return lines


def _stage_table(st: StageResult, names: list[str], batch: int) -> list[str]:
    compare = _is_pair(names)
    rows = []
    for stage, what in STAGE_ROWS:
        medians = [st.median(n, stage) for n in names]
        if all(m is None for m in medians):
            continue
        row = [what] + [fmt_ms(m) for m in medians]
        if compare:
            plain, fast = medians
            row.append(fmt_ratio(plain / fast) if plain is not None and fast else "—")
        rows.append(row)
    headers = [f"stage (batch {batch}, ms median)", *names] + (["speed-up"] if compare else [])
    return ["", markdown_table(headers, rows)]


def _train_table(tr: TrainResult) -> list[str]:
    rows = []
    for name in TRAIN_VARIANTS:
        if name in tr.steps:
            c = tr.steps[name]
            mem = str(c.peak_memory_mib) if c.peak_memory_mib is not None else "—"
            rows.append([name.replace("_", " "), tr.batch, _lat_cell(c), f"{c.images_per_s:.2f}", mem])
    headers = ["training step", "batch", "step ms (median / p90)", "images/s", "peak CUDA MiB"]
    return ["", markdown_table(headers, rows)]


def _arithmetic_table(r: BenchResults, names: list[str]) -> list[str]:
    """Per stage: GFLOP per image and, per path, achieved GFLOP/s (its stage median at the latency
    batch) with its share of the CPU's fp32 peak estimate."""
    peak = r.machine.get("cpu_fp32_peak_gflops") if str(r.machine.get("device")) == "cpu" else None
    batch = r.config.batch
    rows = []
    for stage in ("visual", "text", "communicator", "head"):
        counts = [getattr(r.flops[n], stage) / 1e9 for n in names]
        cells = []
        for n, gflop in zip(names, counts):
            seconds = r.stages.median(n, stage)
            if not seconds or not gflop:
                cells.append("—")
                continue
            rate = gflop * batch / seconds
            cells.append(f"{rate:.0f}" + (f" ({100 * rate / peak:.0f}%)" if peak else ""))
        distinct = sorted({round(c, 1) for c in counts})
        rows.append([stage, " / ".join(f"{c:.1f}" for c in distinct)] + cells)
    what = f"achieved GFLOP/s (share of the {peak:.0f} GFLOP/s fp32 peak estimate)" if peak else "achieved GFLOP/s"
    return ["", f"Arithmetic per stage (batch {batch}): GFLOP per image; {what} per path", ""] + [
        markdown_table(["stage", "GFLOP", *names], rows)
    ]


def format_results(r: BenchResults) -> str:
    """Markdown tables of a `run_model_bench` result."""
    names = list(r.latency.cases) if r.latency else []
    lines = _header(r, names)
    if names:
        lines += _main_table(r, names)
    lines += _notes(r)
    if r.stages:
        lines += _stage_table(r.stages, names, r.config.batch)
        if r.flops and all(n in r.flops for n in names):
            lines += _arithmetic_table(r, names)
    if r.train:
        lines += _train_table(r.train)
    return "\n".join(lines)
