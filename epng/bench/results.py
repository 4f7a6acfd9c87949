"""What `epng bench` measured, as dataclasses; ``to_dict`` gives the JSON the command writes.

Times are seconds. A "case" is one inference path ("plain" | "fast") in one text mode
("text": the text encoder runs every call; "cached": its features are reused); speed-ups
are plain / fast.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

from epng.bench.config import ModelBenchConfig
from epng.bench.harness import Stats, Timed, paired_ratio
from epng.inference import PreparationReport

STAGES = ("visual", "text", "communicator", "head", "postprocess")
SUBLAYERS = ("lpa", "cross", "ffn")  # the communicator's, timed inside its calls


@dataclass
class CaseResult:
    """One case timed at one batch; images/s = batch / median time per call."""

    timed: Timed
    batch: int
    peak_memory_mib: float | None = None  # CUDA only

    @property
    def stats(self) -> Stats:
        return self.timed.stats

    @property
    def images_per_s(self) -> float:
        return self.batch / self.stats.median if self.timed.times else math.nan

    @property
    def cpu_median(self) -> float | None:
        """Median process CPU seconds per call (None where not recorded)."""
        return statistics.median(self.timed.cpu_times) if self.timed.cpu_times else None

    def to_dict(self) -> dict:
        out = {**self.timed.to_dict(), "batch": self.batch, "images_per_s": self.images_per_s}
        if self.peak_memory_mib is not None:
            out["peak_memory_mib"] = self.peak_memory_mib
        return out


@dataclass
class SpeedUp:
    """plain / fast of two interleaved timings: of their medians, minima, per-round ratios
    (median) and process CPU times (median; None without CPU times)."""

    median: float
    min: float
    paired_median: float
    cpu_median: float | None

    @classmethod
    def of(cls, plain: Timed, fast: Timed) -> SpeedUp:
        p, f = plain.stats, fast.stats
        cpu = None
        if plain.cpu_times and fast.cpu_times:
            cpu = statistics.median(plain.cpu_times) / statistics.median(fast.cpu_times)
        return cls(p.median / f.median, p.min / f.min, paired_ratio(plain.times, fast.times), cpu)


@dataclass
class LatencyResult:
    """Every path x text mode at one batch (the latency or the throughput phase)."""

    cases: dict[str, dict[str, CaseResult]]  # path -> text mode -> case
    speedup: dict[str, SpeedUp] = field(default_factory=dict)  # text mode -> plain / fast (both paths run)
    vs_plain: dict[str, dict[str, SpeedUp]] = field(default_factory=dict)  # path -> text mode -> plain / path

    def ratio(self, path: str, mode: str) -> SpeedUp | None:
        """plain / ``path`` in text mode ``mode`` (None where plain or the path did not run)."""
        return self.vs_plain.get(path, {}).get(mode) or (self.speedup.get(mode) if path == "fast" else None)

    def to_dict(self) -> dict:
        out: dict = {name: {mode: c.to_dict() for mode, c in modes.items()} for name, modes in self.cases.items()}
        if self.speedup:
            out["ratio"] = {mode: asdict(r) for mode, r in self.speedup.items()}
        if self.vs_plain:
            out["ratio_vs_plain"] = {
                name: {mode: asdict(r) for mode, r in modes.items()} for name, modes in self.vs_plain.items()
            }
        return out


@dataclass
class AgreementResult:
    """How far the fast path's output is from the plain one on the same batch."""

    mask_pixels_equal: float  # share of equal mask pixels at original size
    mask_pixels_on_plain: float  # share of the plain path's mask pixels that are on
    max_prob_diff_stride4: float  # largest probability difference of the stride-4 logits
    note: str = "random weights: logits pile up near 0, so this is a pessimistic figure for a trained model"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StageResult:
    """Per path: each stage's timed calls, and the communicator's sub-layer totals per call."""

    timed: dict[str, dict[str, Timed]]  # path -> stage -> timings
    sublayers: dict[str, dict[str, Stats]]  # path -> "communicator.lpa" | ... -> per-call totals

    def median(self, path: str, stage: str) -> float | None:
        """Median seconds of ``stage`` (a `STAGES` name or "communicator.<sub-layer>"); None if not measured."""
        if stage in self.timed.get(path, {}):
            return self.timed[path][stage].stats.median
        if stage in self.sublayers.get(path, {}):
            return self.sublayers[path][stage].median
        return None

    def to_dict(self) -> dict:
        out = {name: {stage: t.to_dict() for stage, t in stages.items()} for name, stages in self.timed.items()}
        for name, subs in self.sublayers.items():
            out.setdefault(name, {}).update({key: s.to_dict() for key, s in subs.items()})
        return out


@dataclass
class FlopsResult:
    """FLOPs per image of each stage of one path (`FlopCounterMode`: matmuls, convolutions, attention)."""

    visual: int
    text: int
    communicator: int
    head: int

    @property
    def total_text(self) -> int:
        """A call that runs the text encoder."""
        return self.visual + self.text + self.communicator + self.head

    @property
    def total_cached(self) -> int:
        """A call on cached text features."""
        return self.total_text - self.text

    def total(self, mode: str) -> int:
        return self.total_text if mode == "text" else self.total_cached

    def to_dict(self) -> dict:
        return {**asdict(self), "total_text": self.total_text, "total_cached": self.total_cached}


@dataclass
class Achieved:
    """Achieved TFLOP/s of a case (FLOPs per image x images/s) and its share of the bf16 peak."""

    tflops: float
    fraction_of_peak: float | None


@dataclass
class MemoryResult:
    """Peak RSS of one path's call in a fresh process (`PeakRSS` fields) and of that whole
    process, or why it failed."""

    peak_rss_mib: float | None = None
    start_rss_mib: float | None = None
    extra_mib: float | None = None  # peak during the call - RSS at its start
    process_peak_mib: float | None = None  # the whole process: build, preparation, warm-up and the call
    method: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class TrainResult:
    """Training steps (forward + loss + backward + Adam) per variant: "fp32" and/or "bf16_autocast"."""

    batch: int
    trainable_params: int
    steps: dict[str, CaseResult]

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "trainable_params": self.trainable_params,
            **{k: c.to_dict() for k, c in self.steps.items()},
        }


@dataclass
class BenchResults:
    """Everything one `run_model_bench` measured; a phase not run (or past the deadline) is None."""

    machine: dict
    config: ModelBenchConfig
    params: int
    build_seconds: float
    labels: dict[str, str] = field(default_factory=dict)  # path -> what it runs
    fast_prepare_seconds: float | None = None
    fast_report: PreparationReport | None = None
    runtime_prepare_seconds: dict[str, float] = field(default_factory=dict)  # path -> export (+ int8) + loading
    latency: LatencyResult | None = None
    agreement: AgreementResult | None = None  # fast vs plain
    runtime_agreement: dict[str, AgreementResult] = field(default_factory=dict)  # runtime path vs plain
    throughput: LatencyResult | None = None
    flops: dict[str, FlopsResult] | None = None  # path -> FLOPs
    stages: StageResult | None = None
    cpu_memory: dict[str, MemoryResult] | None = None  # path -> peak RSS
    train: TrainResult | None = None
    skipped: list[str] = field(default_factory=list)  # phases past the deadline
    load_avg_end: float | None = None
    total_seconds: float | None = None

    def achieved(self, kind: str) -> dict[str, dict[str, Achieved]]:
        """Achieved TFLOP/s of every case of ``kind`` ("latency" | "throughput") that has a FLOP count."""
        timing = getattr(self, kind)
        if timing is None or not self.flops:
            return {}
        peak = self.machine.get("bf16_peak_tflops")
        out: dict[str, dict[str, Achieved]] = {}
        for name, modes in timing.cases.items():
            if name not in self.flops:
                continue
            for mode, case in modes.items():
                tflops = self.flops[name].total(mode) * case.images_per_s / 1e12
                out.setdefault(name, {})[mode] = Achieved(tflops, tflops / peak if peak else None)
        return out

    def to_dict(self) -> dict:
        out: dict = {
            "machine": self.machine,
            "config": self.config.to_dict(),
            "build_seconds": self.build_seconds,
            "params": self.params,
            "labels": self.labels,
        }
        if self.fast_prepare_seconds is not None:
            out["fast_prepare_seconds"] = self.fast_prepare_seconds
        if self.fast_report is not None:
            out["fast_report"] = self.fast_report.to_dict()
        if self.runtime_prepare_seconds:
            out["runtime_prepare_seconds"] = self.runtime_prepare_seconds
        if self.runtime_agreement:
            out["runtime_agreement"] = {name: a.to_dict() for name, a in self.runtime_agreement.items()}
        for key in ("latency", "agreement", "throughput", "stages", "train"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_dict()
        if self.flops is not None:
            out["flops"] = {name: f.to_dict() for name, f in self.flops.items()}
            out["achieved"] = {
                "peak_tflops": self.machine.get("bf16_peak_tflops"),
                "peak_source": self.machine.get("bf16_peak_source"),
            }
            for kind in ("latency", "throughput"):
                if achieved := self.achieved(kind):
                    out["achieved"][kind] = {
                        name: {mode: asdict(a) for mode, a in modes.items()} for name, modes in achieved.items()
                    }
        if self.cpu_memory is not None:
            out["cpu_memory"] = {name: m.to_dict() for name, m in self.cpu_memory.items()}
        if self.skipped:
            out["skipped"] = self.skipped
        out["load_avg_end"] = self.load_avg_end
        out["total_seconds"] = self.total_seconds
        return out
