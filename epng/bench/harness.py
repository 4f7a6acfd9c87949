"""Timing, FLOP, memory and output utilities shared by the benchmarks (machine info: `epng.bench.machine`).

* Timings are wall-clock seconds of whole calls (``time.perf_counter``), with
  ``torch.cuda.synchronize`` before and after each call on CUDA; several callables are
  timed *interleaved* (round-robin, one call of each per repeat) so that a busy machine
  slows them all alike -- ratios of side-by-side cases are what to read on a shared CPU.
  Each timed call also records the process CPU time it used (``time.process_time``,
  all threads): on a CPU shared with other jobs, wall time includes waiting for a core,
  CPU time does not (it does include OpenMP threads spinning at barriers).
* Summaries: median, p90 (linear interpolation), min, mean, n.
* FLOPs: `torch.utils.flop_counter.FlopCounterMode` (matmul/conv/attention FLOPs, one
  multiply-add = 2 FLOPs; element-wise work is not counted).
* Peak memory: CUDA -- ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``; CPU -- the process's resident-set high-water mark
  (``VmHWM`` in /proc/self/status, reset through ``/proc/self/clear_refs``; where that
  is not possible, ``getrusage(RUSAGE_SELF).ru_maxrss``), measured in a fresh
  subprocess per case by `epng.bench.memory`.
"""

from __future__ import annotations

import math
import re
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

# --------------------------------------------------------------------------- timing


def sync(device: torch.device | str | None) -> None:
    """Wait for queued CUDA work (no-op elsewhere)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile (0..100) with linear interpolation between order statistics."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Stats:
    """Summary of repeated timings (seconds)."""

    median: float
    p90: float
    min: float
    mean: float
    n: int

    @classmethod
    def of(cls, times: Sequence[float]) -> Stats:
        if not times:
            return cls(math.nan, math.nan, math.nan, math.nan, 0)
        return cls(statistics.median(times), percentile(times, 90), min(times), statistics.fmean(times), len(times))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Timed:
    """Timings of one callable: the warm-up calls (the first includes any compile) and the timed ones."""

    first_call: float | None
    warmup: list[float]
    times: list[float]
    cpu_times: list[float] | None = None  # process CPU seconds (all threads) of each timed call

    @property
    def stats(self) -> Stats:
        return Stats.of(self.times)

    def to_dict(self) -> dict:
        out = {"first_call_s": self.first_call, "warmup_s": self.warmup, "times_s": self.times, **self.stats.to_dict()}
        if self.cpu_times:
            out["cpu_s"] = self.cpu_times
            out["cpu_s_median"] = statistics.median(self.cpu_times)
        return out


def _call(fn: Callable[[], object], device: torch.device | str | None, cpu_times: list[float] | None = None) -> float:
    sync(device)
    cpu0 = time.process_time()
    start = time.perf_counter()
    fn()
    sync(device)
    wall = time.perf_counter() - start
    if cpu_times is not None:
        cpu_times.append(time.process_time() - cpu0)
    return wall


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 1,
    device: torch.device | str | None = None,
    max_seconds: float | None = None,
    min_repeats: int = 1,
    setup: dict[str, Callable[[], object]] | None = None,
) -> dict[str, Timed]:
    """Time several callables side by side: ``warmup`` untimed-for-stats calls of each, then
    ``repeats`` rounds of one call of each (round-robin).  Stops early once ``max_seconds``
    have passed in the timed rounds (after ``min_repeats`` rounds).  ``setup[name]`` (if
    given) runs before each call of ``name``, outside the timed region."""
    setup = setup or {}
    result = {name: Timed(None, [], [], []) for name in fns}
    for _ in range(max(0, warmup)):
        for name, fn in fns.items():
            if name in setup:
                setup[name]()
            t = _call(fn, device)
            if result[name].first_call is None:
                result[name].first_call = t
            result[name].warmup.append(t)
    start = time.perf_counter()
    for r in range(max(1, repeats)):
        for name, fn in fns.items():
            if name in setup:
                setup[name]()
            result[name].times.append(_call(fn, device, result[name].cpu_times))
        if max_seconds is not None and r + 1 >= min_repeats and time.perf_counter() - start > max_seconds:
            break
    return result


def paired_ratio(numer: Sequence[float], denom: Sequence[float]) -> float:
    """Median of the per-round ratios numer[i] / denom[i] of two interleaved timings."""
    pairs = [a / b for a, b in zip(numer, denom) if b > 0]
    return statistics.median(pairs) if pairs else math.nan


class ModuleTimer:
    """Accumulates the forward time of groups of modules through forward hooks.

    ``ModuleTimer({"lpa": [m1, m2], "ffn": [...]}, device)`` -- use as a context manager
    around the calls, then :meth:`seconds` gives the total per group.  CPU: perf_counter
    in the hooks; CUDA: CUDA events (no synchronisation inside the forward), read after a
    final synchronize.  Modules whose forward is compiled may not fire hooks; their group
    then reads 0 calls (``calls``).
    """

    def __init__(self, groups: dict[str, Sequence[torch.nn.Module]], device: torch.device | str) -> None:
        self.groups = {k: list(v) for k, v in groups.items()}
        self.cuda = torch.device(device).type == "cuda"
        self._handles: list = []
        self._open: dict[int, object] = {}
        self._records: dict[str, list] = {k: [] for k in self.groups}

    def _pre(self, group: str) -> Callable[[torch.nn.Module, tuple[Any, ...]], None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            if self.cuda:
                ev = torch.cuda.Event(enable_timing=True)
                ev.record()
                self._open[id(module)] = ev
            else:
                self._open[id(module)] = time.perf_counter()

        return hook

    def _post(self, group: str) -> Callable[[torch.nn.Module, tuple[Any, ...], object], None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: object) -> None:
            start = self._open.pop(id(module), None)
            if start is None:
                return
            if self.cuda:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                self._records[group].append((start, end))
            else:
                self._records[group].append(time.perf_counter() - start)

        return hook

    def __enter__(self) -> ModuleTimer:
        for group, modules in self.groups.items():
            for m in modules:
                self._handles.append(m.register_forward_pre_hook(self._pre(group)))
                self._handles.append(m.register_forward_hook(self._post(group)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def reset(self) -> None:
        self._records = {k: [] for k in self.groups}

    def calls(self) -> dict[str, int]:
        return {k: len(v) for k, v in self._records.items()}

    def seconds(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
            return {k: sum(s.elapsed_time(e) for s, e in v) / 1000.0 for k, v in self._records.items()}
        return {k: float(sum(v)) for k, v in self._records.items()}


# --------------------------------------------------------------------------- FLOPs


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as `FlopCounterMode` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- memory


def proc_status_kib(key: str) -> int | None:
    """Field ``key`` (e.g. ``VmRSS``, ``VmHWM``) of ``/proc/self/status`` in KiB; None without procfs."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


class PeakRSS:
    """CPU peak resident memory of this process over a region, in MiB.

    ``start()`` resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``)
    and notes the current RSS; ``stop()`` returns ``{"peak_rss_mib", "start_rss_mib",
    "extra_mib", "method"}`` where ``extra`` = peak during the region - RSS at its start.
    Without a writable clear_refs it falls back to ``ru_maxrss`` (whose high-water mark
    cannot be reset: ``extra`` is then only right in a fresh process)."""

    def start(self) -> None:
        self.method = "VmHWM (clear_refs reset)"
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.method = "ru_maxrss (no reset)"
        rss = proc_status_kib("VmRSS")
        self._start_kib = rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if self.method.startswith("ru_maxrss"):
            self._start_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def stop(self) -> dict:
        peak = proc_status_kib("VmHWM") if self.method.startswith("VmHWM") else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return {
            "peak_rss_mib": round(peak / 1024, 1),
            "start_rss_mib": round(self._start_kib / 1024, 1),
            "extra_mib": round(max(0, peak - self._start_kib) / 1024, 1),
            "method": self.method,
        }


# --------------------------------------------------------------------------- output


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table (cells via ``str``)."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join("" if c is None else str(c) for c in row) + " |")
    return "\n".join(lines)


def fmt_ms(seconds: float | None, digits: int | None = None) -> str:
    """Seconds -> a readable millisecond string ("—" when missing)."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    ms = seconds * 1000.0
    if digits is None:
        digits = 0 if ms >= 100 else 1 if ms >= 10 else 2
    return f"{ms:,.{digits}f}"


def fmt_ratio(x: float | None) -> str:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return "—"
    return f"{x:.2f}×"
