#!/usr/bin/env python
"""Benchmark the LPA layer (epng.model.lpa) against the materialised reference formula.

Cases: grids (default 40x40 = 640^2 input, 76x76 = 1216^2 input at stride 16) x batches
(default 1, 8) x passes (forward, forward+backward), C=768, 8 heads, float32 (``--amp``:
bf16 autocast).  Each case: ``--warmup`` calls (the first one's latency is reported: it
includes any compile and the grid-geometry build), then the median of ``--repeats`` timed
calls.

Peak memory:
* CPU -- every (implementation, case) runs in its own subprocess.  After the layer and its
  input are built, `epng.bench.harness.PeakRSS` resets the process's RSS high-water mark;
  the reported peak is the high-water mark after the warm-up and timed calls minus the
  RSS at the reset: the extra resident memory the calls need (allocator caching included).
  The machine may be shared: the table header prints the load average, the JSON also
  holds each call's process CPU time (``median_cpu_s``), and the children run with
  ``OMP_WAIT_POLICY=PASSIVE`` unless it is set (spinning OpenMP workers distort timings
  when other processes compete for the cores).
* CUDA -- in one process; ``torch.cuda.max_memory_allocated`` during the timed calls
  minus ``memory_allocated`` before them.

A reference case whose estimated footprint (3 (forward) / 6 (forward+backward) tensors of
B * heads * N^2 elements) exceeds ``--max-ref-gib`` (default: half the available memory)
is skipped and reported as such.

    python scripts/bench_lpa.py                       # CPU, markdown table
    python scripts/bench_lpa.py --device cuda --json bench_lpa_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from epng.bench.harness import PeakRSS  # noqa: E402
from epng.model.lpa import LPA_DISTANCES, LocalityPerceptiveAttention, lpa_layer_reference  # noqa: E402

IMPLS = ("module", "reference")


def parse_grid(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(
    impl: str,
    grid: tuple[int, int],
    batch: int,
    mode: str,
    args: argparse.Namespace,
    layer: LocalityPerceptiveAttention | None = None,
) -> dict:
    """Time and measure one case in this process."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    if layer is None:
        layer = LocalityPerceptiveAttention(args.dim, args.heads, distance=args.distance).to(device)
    n = grid[0] * grid[1]
    x = torch.randn(batch, n, args.dim, device=device)
    grad = torch.randn(batch, n, args.dim, device=device)

    def call() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            if mode == "fwd":
                with torch.no_grad():
                    out = layer(x, grid) if impl == "module" else lpa_layer_reference(layer, x, grid)
            else:
                out = layer(x, grid) if impl == "module" else lpa_layer_reference(layer, x, grid)
        if mode == "fwd+bwd":
            out.backward(grad.to(out.dtype))
            layer.zero_grad(set_to_none=True)
        del out
        _sync(device)

    rss = PeakRSS()
    if device.type == "cpu":  # peak RSS from here on, over warm-up and timed calls
        rss.start()
    first = None
    for i in range(args.warmup):
        t0 = time.perf_counter()
        call()
        if i == 0:
            first = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times, cpu_times = [], []
    for _ in range(args.repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = rss.stop()["extra_mib"] * 2**20
    attn_dtype = torch.bfloat16 if args.amp else torch.float32
    route = layer.route(device, mode == "fwd+bwd", attn_dtype) if impl == "module" else "materialised"
    return {
        "impl": impl,
        "grid": list(grid),
        "batch": batch,
        "mode": mode,
        "route": route,
        "median_s": statistics.median(times),
        "times_s": times,
        "first_call_s": first,
        "median_cpu_s": statistics.median(cpu_times),
        "peak_bytes": round(peak),
    }


def ref_estimate_bytes(grid: tuple[int, int], batch: int, mode: str, args: argparse.Namespace) -> int:
    n = grid[0] * grid[1]
    per = batch * args.heads * n * n * (2 if args.amp else 4)
    return per * (3 if mode == "fwd" else 6)


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    text = Path("/proc/meminfo").read_text()
    return int(re.search(r"MemAvailable:\s+(\d+)", text).group(1)) * 1024


def run_in_subprocess(impl: str, grid, batch: int, mode: str, args: argparse.Namespace) -> dict:
    spec = json.dumps({"impl": impl, "grid": list(grid), "batch": batch, "mode": mode})
    cmd = [sys.executable, __file__, "--_case", spec] + forwarded_args(args)
    # Spinning OpenMP workers distort timings on a shared machine (seen here: 2x on one
    # route); both implementations run with passive waiting unless the caller chose.
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {
            "impl": impl,
            "grid": list(grid),
            "batch": batch,
            "mode": mode,
            "error": (proc.stderr.strip().splitlines() or ["failed"])[-1],
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def forwarded_args(args: argparse.Namespace) -> list[str]:
    out = [
        "--device",
        args.device,
        "--dim",
        str(args.dim),
        "--heads",
        str(args.heads),
        "--warmup",
        str(args.warmup),
        "--repeats",
        str(args.repeats),
        "--distance",
        args.distance,
    ]
    return out + (["--amp"] if args.amp else []) + (["--threads", str(args.threads)] if args.threads else [])


def fmt_time(r: dict | None) -> str:
    if r is None:
        return "-"
    if "skipped" in r:
        return "skipped"
    if "error" in r:
        return "error"
    return f"{r['median_s'] * 1e3:.1f} ms"


def fmt_mem(r: dict | None) -> str:
    if r is None or "median_s" not in r:
        return "-"
    return f"{r['peak_bytes'] / 2**20:.0f} MiB"


def markdown(results: list[dict], args: argparse.Namespace, device: str | None = None) -> str:
    rows = {}
    for r in results:
        rows.setdefault((tuple(r["grid"]), r["batch"], r["mode"]), {})[r["impl"]] = r
    lines = [
        f"LPA layer, C={args.dim}, {args.heads} heads, {args.distance}, "
        f"{'bf16 autocast' if args.amp else 'float32'}, device={device or describe_device(args.device)}; "
        f"median of {args.repeats} after {args.warmup} warm-up",
        "",
        "| grid | B | pass | route | module time | reference time | speed-up | speed-up (CPU time) "
        "| module peak | reference peak | memory ratio | module 1st call |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (grid, batch, mode), d in rows.items():
        m, ref = d.get("module"), d.get("reference")
        ok = m and ref and "median_s" in m and "median_s" in ref
        speed = f"{ref['median_s'] / m['median_s']:.2f}x" if ok else "-"
        cpu_ok = ok and m.get("median_cpu_s") and ref.get("median_cpu_s")
        cpu_speed = f"{ref['median_cpu_s'] / m['median_cpu_s']:.2f}x" if cpu_ok else "-"
        mem = f"{m['peak_bytes'] / max(ref['peak_bytes'], 1):.3f}" if ok else "-"
        first = f"{m['first_call_s']:.2f} s" if m and m.get("first_call_s") is not None else "-"
        route = m.get("route", "-") if m else "-"
        lines.append(
            f"| {grid[0]}x{grid[1]} | {batch} | {mode} | {route} | {fmt_time(m)} | {fmt_time(ref)} | {speed} "
            f"| {cpu_speed} | {fmt_mem(m)} | {fmt_mem(ref)} | {mem} | {first} |"
        )
    skipped = [r for r in results if "skipped" in r]
    for r in skipped:
        lines.append(
            f"\n- skipped {r['impl']} {r['grid'][0]}x{r['grid'][1]} B={r['batch']} {r['mode']}: {r['skipped']}"
        )
    return "\n".join(lines)


def describe_device(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    load += f", OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE (children)')}"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads{load})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--grids", default="40x40,76x76")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--modes", default="fwd,fwd+bwd")
    p.add_argument("--impls", default="module,reference")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--distance", default="euclidean", choices=LPA_DISTANCES)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument(
        "--max-ref-gib",
        type=float,
        default=None,
        help="skip reference cases estimated above this (default: half the available memory)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        help="print one table from earlier --json files (same settings) instead of running",
    )
    p.add_argument("--_case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.from_json:
        runs = [json.loads(f.read_text()) for f in args.from_json]
        merged = [r for run in runs for r in run["results"]]
        args = p.parse_args(runs[0]["meta"]["args"])
        print(markdown(merged, args, runs[0]["meta"]["device"]))
        return 0

    if args.threads:
        torch.set_num_threads(args.threads)
    if args._case is not None:  # child process: one CPU case
        spec = json.loads(args._case)
        print(json.dumps(run_case(spec["impl"], tuple(spec["grid"]), spec["batch"], spec["mode"], args)))
        return 0

    device = torch.device(args.device)
    if device.type == "cuda":
        import torch._dynamo.config as dynamo_config

        # every (batch, grid, grad-mode) compiles once; allow all of this benchmark's shapes
        dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, 64)
    limit = (args.max_ref_gib * 2**30) if args.max_ref_gib is not None else available_bytes(device) // 2
    results: list[dict] = []
    layers: dict = {}
    for grid in [parse_grid(g) for g in args.grids.split(",")]:
        for batch in [int(b) for b in args.batches.split(",")]:
            for mode in args.modes.split(","):
                for impl in args.impls.split(","):
                    if impl == "reference" and ref_estimate_bytes(grid, batch, mode, args) > limit:
                        est = ref_estimate_bytes(grid, batch, mode, args) / 2**30
                        r = {
                            "impl": impl,
                            "grid": list(grid),
                            "batch": batch,
                            "mode": mode,
                            "skipped": f"estimated {est:.1f} GiB > limit {limit / 2**30:.1f} GiB",
                        }
                    elif device.type == "cpu":
                        r = run_in_subprocess(impl, grid, batch, mode, args)
                    else:
                        if "layer" not in layers:  # one layer: compiled kernels are reused
                            torch.manual_seed(0)
                            layers["layer"] = LocalityPerceptiveAttention(
                                args.dim, args.heads, distance=args.distance
                            ).to(device)
                        try:
                            r = run_case(impl, grid, batch, mode, args, layers["layer"])
                        except torch.OutOfMemoryError as err:
                            r = {
                                "impl": impl,
                                "grid": list(grid),
                                "batch": batch,
                                "mode": mode,
                                "skipped": f"out of memory ({str(err).splitlines()[0]})",
                            }
                        torch.cuda.empty_cache()
                    results.append(r)
                    print(json.dumps(r), file=sys.stderr, flush=True)
    table = markdown(results, args)
    print(table)
    if args.json is not None:
        meta = {"device": describe_device(args.device), "torch": torch.__version__, "args": forwarded_args(args)}
        args.json.write_text(json.dumps({"meta": meta, "results": results, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
