"""What the benchmark figures were measured on: machine info, the CPU's vector-ISA flags, an
fp32 peak estimate of the CPU and the bf16 dense peak of known GPUs (for achieved-FLOP/s shares)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

import torch

from epng.device import ISA_FLAGS, bf16_supported, isa_summary

# bf16 dense (no sparsity) tensor-core peaks in TFLOP/s, first match on the device name wins.
BF16_PEAK_TFLOPS: list[tuple[str, float, str]] = [
    ("H200", 989.0, "H200 (same GH100 chip as H100 SXM): 989 TFLOP/s bf16 dense"),
    ("H100 PCIe", 756.0, "H100 PCIe: 756 TFLOP/s bf16 dense"),
    ("H100 NVL", 835.0, "H100 NVL: 835 TFLOP/s bf16 dense"),
    ("H100", 989.0, "H100 SXM: 989 TFLOP/s bf16 dense"),
    ("GH200", 989.0, "GH200: 989 TFLOP/s bf16 dense"),
    ("A100", 312.0, "A100: 312 TFLOP/s bf16 dense"),
    ("L40S", 362.0, "L40S: 362 TFLOP/s bf16 dense"),
]


def bf16_peak(device_name: str | None) -> tuple[float | None, str]:
    """(bf16 dense peak in TFLOP/s, description) for a CUDA device name; (None, why) if unknown."""
    if not device_name:
        return None, "no GPU: no peak"
    for key, tflops, label in BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops, label
    return None, f"unknown peak for {device_name!r}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_clock_mhz() -> float | None:
    """The first processor's clock in MHz as /proc/cpuinfo reports it (None where unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def cpu_fp32_peak(cores: int) -> tuple[float | None, str]:
    """(fp32 peak estimate in GFLOP/s, how it was estimated): cores x clock x FLOPs per cycle, with
    two FMA units per core -- 32 FLOPs per cycle with AVX2 + FMA, 64 with AVX-512."""
    mhz, flags = cpu_clock_mhz(), set(isa_summary())
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else None
    if mhz is None or per_cycle is None:
        return None, "unknown clock or vector ISA"
    peak = cores * mhz / 1000 * per_cycle
    return round(peak, 1), f"{cores} cores x {mhz / 1000:.2f} GHz x {per_cycle} fp32 FLOPs/cycle (2 FMA units)"


def machine_info(device: torch.device | str = "cpu") -> dict:
    """What the figures were measured on."""
    device = torch.device(device)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        usable = os.cpu_count()
    info = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "cpu_isa": isa_summary(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": cpu_model(),
        "bf16_native": bf16_supported(device),
    }
    info["cpu_fp32_peak_gflops"], info["cpu_fp32_peak_source"] = cpu_fp32_peak(usable)
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=torch.cuda.get_device_name(device),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            # the plain fp32 path's convolutions use TF32 when cuDNN allows it (PyTorch's default)
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
    peak, label = bf16_peak(info["device_name"] if device.type == "cuda" else None)
    info["bf16_peak_tflops"] = peak
    info["bf16_peak_source"] = label
    return info


def isa_line(machine: dict) -> str:
    """The line every benchmark report prints under its header: the CPU's vector-ISA flags."""
    isa = machine.get("cpu_isa") or []
    return "CPU ISA: " + (", ".join(isa) if isa else f"none of {', '.join(ISA_FLAGS)}")
