#!/usr/bin/env bash
# One-shot GPU benchmark of EPNG's paper preset (epng_r101_bert, random weights, 640x640)
# for BENCHMARKS.md.  Whole run, torch.compile included, fits in BUDGET seconds (default 140,
# for a ~150 s slot): every phase gets a deadline from what is left, and every phase writes
# its JSON after each measurement, so a phase cut short keeps what it measured.
#
#   bash scripts/gpu_bench.sh                  # on the GPU machine; results in $OUT (default ./gpu_out)
#   bash scripts/gpu_bench.sh --device cpu     # dry run of the script's logic: tiny preset, 64x64, seconds
#
# Phases (in order of importance):
#   A  eager, plain fp32 vs fast (bf16 autocast + bf16 weights, channels-last, BN folded,
#      FlexAttention LPA, stride-16 head): latency at batch 1 and throughput at batch 32
#      (text encoder run / cached text), mask agreement, FLOPs, achieved TFLOP/s vs the
#      bf16 dense peak, per-stage breakdown, peak CUDA memory       -> $OUT/gpu_a_compare.json
#   B  fast + torch.compile of the visual encoder (backbone + FPN, inductor with weight
#      freezing; the LPA attention is FlexAttention, compiled in every phase), one compiled
#      shape: batch 32 (images/s = 32 / time per call)               -> $OUT/gpu_b_compile.json
#   C  training step, batch 8: fp32 vs bf16 autocast, if time is left -> $OUT/gpu_c_train.json
# Then a compact table of all three on stdout (and $OUT/summary.md).
set -u
START=$(date +%s)
BUDGET=${BUDGET:-140}
DEVICE=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    *) echo "usage: $0 [--device cuda|cpu] [--budget SECONDS]" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ] && [ "$DEVICE" = cpu ]; then PY=.venv/bin/python; fi

# the GPU machine gets the project installed; the dry run uses the checkout's environment as it is
if [ "$DEVICE" = cuda ]; then python3 -m pip install -q --no-deps -e . 2>/dev/null || true; fi

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
log() { echo "[gpu_bench $(( $(date +%s) - START ))s] $*" >&2; }

# ---- environment check: say clearly what is missing
$PY - "$DEVICE" <<'EOF' | tee "$OUT/env.txt"
import importlib, sys
device = sys.argv[1]
missing = []
for name in ("torch", "torchvision", "transformers", "timm", "safetensors", "huggingface_hub", "epng"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '')}")
    except Exception as err:  # noqa: BLE001
        missing.append(f"{name} ({type(err).__name__}: {err})")
try:
    import triton
    print(f"triton {triton.__version__}")
except Exception as err:  # noqa: BLE001
    print(f"triton MISSING ({err}): FlexAttention and torch.compile cannot run on the GPU")
if missing:
    print("MISSING PACKAGES: " + "; ".join(missing) + " -- install the project's dependencies (pip install -e .)")
    sys.exit(3)
import torch
if device == "cuda":
    if not torch.cuda.is_available():
        print("NO CUDA DEVICE visible to torch"); sys.exit(3)
    print(f"device {torch.cuda.get_device_name()} cuda {torch.version.cuda} bf16 {torch.cuda.is_bf16_supported()}")
EOF
if [ "${PIPESTATUS[0]}" -ne 0 ]; then log "environment check failed (see above / $OUT/env.txt)"; exit 3; fi

if [ "$DEVICE" = cuda ]; then
  COMMON=(--preset epng_r101_bert --image-size 640 --orig-size 480x640 --device cuda --phrases 8 --tokens 96)
  A=(--fast --batch 1 --throughput-batch 32 --repeats 30 --warmup 3 --max-case-seconds 4)
  # one compiled shape only (batch 32: the throughput target; the eager batch-1 latency is in A)
  B=(--fast-only --compile --compile-scope visual --batch 32 --throughput-batch 0 --repeats 20 --warmup 2 --max-case-seconds 4 --no-stages)
  C=(--fast --train-only --train-batch 8 --train-repeats 5 --max-case-seconds 6)
  RESERVE_B=50; RESERVE_C=0; MIN_B=35; MIN_C=20  # C (training) only runs if time is left
else  # dry run: the same phases on the smallest preset
  COMMON=(--preset epng_lite0_minilm --image-size 64 --orig-size 48x64 --device cpu --phrases 2 --tokens 12 --no-memory --threads 1)
  A=(--fast --batch 1 --throughput-batch 2 --repeats 2 --warmup 1 --max-case-seconds 2)
  B=(--fast-only --batch 2 --throughput-batch 0 --repeats 2 --warmup 1 --max-case-seconds 2 --no-stages)
  C=(--fast --train-only --train-batch 2 --train-repeats 2 --max-case-seconds 2)
  RESERVE_B=0; RESERVE_C=0; MIN_B=5; MIN_C=5
fi

run_phase() {  # name, wall seconds for the process, bench args...
  local name=$1 secs=$2; shift 2
  local phase_deadline=$(( secs > 12 ? secs - 12 : 1 ))  # stop starting new measurements ~12 s before the kill
  log "phase $name: ${secs}s"
  timeout -s INT -k 5 "$secs" $PY -m epng.cli.main bench "${COMMON[@]}" "$@" --deadline "$phase_deadline" \
    --json "$OUT/gpu_$name.json" > "$OUT/gpu_$name.md" 2> "$OUT/gpu_$name.log"
  local rc=$?
  if [ $rc -ne 0 ]; then log "phase $name ended with rc=$rc (124/130: cut at its deadline; partial JSON kept)"; tail -3 "$OUT/gpu_$name.log" >&2; fi
  return 0
}

T=$(( $(left) - RESERVE_B - RESERVE_C )); [ "$T" -gt 80 ] && T=80
run_phase a_compare "$T" "${A[@]}"
T=$(( $(left) - RESERVE_C ))
if [ "$T" -ge "$MIN_B" ]; then run_phase b_compile "$T" "${B[@]}"; else log "skip phase B (only ${T}s left)"; fi
T=$(left)
if [ "$T" -ge "$MIN_C" ]; then run_phase c_train "$T" "${C[@]}"; else log "skip phase C (only ${T}s left)"; fi

$PY - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    p = out / f"gpu_{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None
a, b, c = load("a_compare"), load("b_compile"), load("c_train")
rows = []
def ms(e): return f"{e['median'] * 1e3:.2f} / {e['p90'] * 1e3:.2f}" if e else "—"
def ips(e): return f"{e['images_per_s']:.0f}" if e else "—"
def get(r, *keys):
    for k in keys:
        if not isinstance(r, dict) or k not in r: return None
        r = r[k]
    return r
m = (a or b or c or {}).get("machine", {})
cfg = (a or b or c or {}).get("config", {})
print(f"EPNG {cfg.get('preset')} at {cfg.get('image_size')}x{cfg.get('image_size')}, random weights -- "
      f"{m.get('device_name', '?')}, torch {m.get('torch', '?')}, {m.get('date_utc', '?')}")
print(f"CPU ISA: {', '.join(m.get('cpu_isa') or []) or '—'}")
print(f"bf16 dense peak used: {m.get('bf16_peak_source')}\n")
print("| case | plain fp32 | fast bf16 eager | fast bf16 + compile |")
print("|---|---|---|---|")
for kind, mode, label in (("latency", "text", "latency b1, text encoder run (ms med / p90)"),
                          ("latency", "cached", "latency b1, cached text (ms med / p90)")):
    print(f"| {label} | {ms(get(a, kind, 'plain', mode))} | {ms(get(a, kind, 'fast', mode))} | (B runs batch {get(b, 'config', 'batch')}) |")
for mode, label in (("text", "text encoder run"), ("cached", "cached text")):
    bt = get(a, "throughput", "fast", mode, "batch") or get(b, "latency", "fast", mode, "batch")
    print(f"| throughput b{bt}, {label} (images/s) | {ips(get(a, 'throughput', 'plain', mode))} | "
          f"{ips(get(a, 'throughput', 'fast', mode))} | {ips(get(b, 'latency', 'fast', mode))} |")
fl = get(a, "flops", "fast", "total_cached") or get(b, "flops", "fast", "total_cached")
peak = m.get("bf16_peak_tflops")
def ach(r, path):  # largest batch measured: A's throughput case, B's (batch-32) latency case
    e = get(r, "throughput", path, "cached") or get(r, "latency", path, "cached")
    f = get(r, "flops", path, "total_cached") or fl
    if not e or not f: return "—"
    t = f * e["images_per_s"] / 1e12
    return f"{t:.1f}" + (f" ({100 * t / peak:.1f}%)" if peak else "")
print(f"| achieved TFLOP/s, cached text, largest batch (% of bf16 peak) | {ach(a, 'plain')} | {ach(a, 'fast')} | {ach(b, 'fast')} |")
if fl: print(f"| GFLOPs / image (cached text) | | {fl / 1e9:.1f} | |")
mem = lambda r, p, k: get(r, k, p, "text", "peak_memory_mib")
print(f"| peak CUDA MiB, b1 / b32 | {mem(a,'plain','latency')} / {mem(a,'plain','throughput')} | "
      f"{mem(a,'fast','latency')} / {mem(a,'fast','throughput')} | — / {mem(b,'fast','latency')} |")
agr = get(a, "agreement")
if agr: print(f"\nfast vs plain masks: {100 * agr['mask_pixels_equal']:.3f}% identical pixels")
rep = get(b, "fast_report")
if rep: print(f"compile: first calls {rep.get('compile_seconds')} errors {rep.get('compile_errors') or 'none'}; LPA routes {rep.get('lpa_routes')}")
rep_a = get(a, "fast_report")
if rep_a: print(f"fast path: {rep_a.get('dtype')}, LPA routes {rep_a.get('lpa_routes')}, BN folded {rep_a.get('folded_bn')}")
if c and c.get("train"):
    t = c["train"]
    for k in ("fp32", "bf16_autocast"):
        if k in t:
            print(f"train step b{t['batch']} {k}: {t[k]['median'] * 1e3:.1f} ms, {t[k]['images_per_s']:.1f} images/s, peak {t[k].get('peak_memory_mib')} MiB")
for name, r in (("A", a), ("B", b), ("C", c)):
    if r is None: print(f"phase {name}: no result")
    elif r.get("partial") or r.get("skipped"): print(f"phase {name}: partial (skipped: {r.get('skipped', 'cut short')})")
st = get(a, "stages")
if st:
    print("\n| stage b1 (ms median) | plain | fast |\n|---|---|---|")
    cell = lambda v: f"{v * 1e3:.2f}" if v is not None else "—"
    for s in ("visual", "text", "communicator", "communicator.lpa", "communicator.cross", "communicator.ffn", "head", "postprocess"):
        print(f"| {s} | {cell(get(st, 'plain', s, 'median'))} | {cell(get(st, 'fast', s, 'median'))} |")
EOF
log "done in $(( $(date +%s) - START ))s; results in $OUT"
