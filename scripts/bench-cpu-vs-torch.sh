#!/usr/bin/env bash
# CPU side by side on one machine, in one run, at one thread count: vitrine's
# CPU model (a CPU-only build of examples/bench_gpu, carried in BUNDLE as
# bench_cpu or bench_cpu.xz) and the PyTorch/transformers baseline
# (scripts/torch_baseline.py --device cpu: HF RadioModel configured as
# ViT-B/16, SDPA, fp32), both on case radio_b_224x224_b8 (224², batch 8).
#
#   # here (no --features cuda: the binary must run without CUDA libraries;
#   # avx512 adds AVX-512 GEMM and elementwise kernels, picked at run time only
#   # on CPUs that have them, and needs Rust >= 1.89):
#   #   cargo build --release --features avx512 --example bench_gpu
#   #   mkdir -p .dev/bench-cpu && cp target/release/examples/bench_gpu .dev/bench-cpu/bench_cpu \
#   #     && strip .dev/bench-cpu/bench_cpu && xz -f .dev/bench-cpu/bench_cpu
#   # there (PyTorch + transformers installed, no Rust, no network needed):
#   #   scripts/bench-cpu-vs-torch.sh .dev/bench-cpu 16
#
# THREADS defaults to every logical CPU. Both sides get exactly THREADS
# threads (bench_cpu --threads, torch.set_num_threads; OMP/MKL pinned too);
# they run one after the other, never at once. ROUNDS (default 3) alternates
# ours and PyTorch that many times, so a drifting machine shows in the table;
# REPEATS (default 7) timed passes per run after 2 warm-ups. Logs go to $OUT
# (or /tmp/vitrine-bench-cpu-logs).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUNDLE=$(cd "${1:?usage: bench-cpu-vs-torch.sh BUNDLE [THREADS]}" && pwd)
THREADS=${2:-$(nproc)}
ROUNDS=${ROUNDS:-3}
REPEATS=${REPEATS:-7}
PYTHON=${PYTHON:-python3}
LOGS=${OUT:-/tmp/vitrine-bench-cpu-logs}
mkdir -p "$LOGS"
BIN=/tmp/vitrine-bench-cpu
if [[ -f $BUNDLE/bench_cpu.xz ]]; then
  "$PYTHON" -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' "$BUNDLE/bench_cpu.xz" "$BIN"
else
  cp "$BUNDLE/bench_cpu" "$BIN"
fi
chmod +x "$BIN"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
rm -f "$LOGS/vitrine_cpu.jsonl" "$LOGS/torch_baseline.jsonl"
{
  echo "host: $(uname -n), $(nproc) logical CPUs, threads $THREADS"
  grep -m1 'model name' /proc/cpuinfo || true
} | tee "$LOGS/machine.txt"
for round in $(seq "$ROUNDS"); do
  "$BIN" --device cpu --dtype f32 --threads "$THREADS" --repeats "$REPEATS" --dir /tmp/vitrine-bench-cpu-ckpt \
    | tee -a "$LOGS/vitrine_cpu.jsonl"
  BASELINE_OUT=$LOGS "$PYTHON" "$REPO/scripts/torch_baseline.py" --device cpu --threads "$THREADS" --repeats "$REPEATS" \
    2>>"$LOGS/torch.log" | tee -a "$LOGS/torch.log"
done
"$PYTHON" - "$LOGS" <<'PY'
import json, sys
logs = sys.argv[1]
ours = [r for r in map(json.loads, open(f"{logs}/vitrine_cpu.jsonl")) if r.get("case") == "radio_b_224x224_b8"]
torch = [r for r in map(json.loads, open(f"{logs}/torch_baseline.jsonl")) if r.get("kind") == "radio_cpu"]
env = next((r for r in map(json.loads, open(f"{logs}/torch_baseline.jsonl")) if r.get("kind") == "env"), {})
errors = [r for r in map(json.loads, open(f"{logs}/torch_baseline.jsonl")) if r.get("kind") == "error"]
for e in errors:
    print("torch error:", e.get("what"), e.get("err"))
print(f"\ntorch {env.get('torch')}, transformers {env.get('transformers')}, capability {env.get('cpu_capability')}; "
      f"threads: ours {[r['threads'] for r in ours]}, torch {[r['threads'] for r in torch]}\n")
print("| ViT-B/16 fp32 224², batch 8 | round | vitrine img/s (p50 ms, p10–p90) | PyTorch img/s (p50 ms, p10–p90) | ratio |")
print("|---|---|---|---|---|")
for i in range(max(len(ours), len(torch))):
    o = ours[i] if i < len(ours) else None
    t = torch[i] if i < len(torch) else None
    cell = lambda r: f"{r['img_s']:.2f} ({r['ms_p50']:.0f}, {r['ms_p10']:.0f}–{r['ms_p90']:.0f})" if r else "missing"
    ratio = f"{o['img_s'] / t['img_s']:.3f}×" if o and t else ""
    print(f"| radio_b_224x224_b8 | {i + 1} | {cell(o)} | {cell(t)} | {ratio} |")
if ours and torch:
    med = lambda v: sorted(v)[len(v) // 2]
    med_o, med_t = med([r["img_s"] for r in ours]), med([r["img_s"] for r in torch])
    print(f"| radio_b_224x224_b8 | median of rounds | {med_o:.2f} | {med_t:.2f} | {med_o / med_t:.3f}× |")
    best_o = max(r["img_s"] for r in ours)
    best_t = max(r["img_s"] for r in torch)
    print(f"| radio_b_224x224_b8 | best round | {best_o:.2f} | {best_t:.2f} | {best_o / best_t:.3f}× |")
PY
