#!/usr/bin/env bash
# Side by side on one GPU, in one run: vitrine's `bench_gpu` (carried in
# BUNDLE as bench_gpu or bench_gpu.xz) and the PyTorch/transformers baseline
# (scripts/torch_baseline.py, HF RadioModel / InternVLVisionModel with SDPA).
#
#   # here: source .toolchains/cuda/env.sh && cargo build --release --features cuda --example bench_gpu
#   #       mkdir -p .dev/bench && cp target/release/examples/bench_gpu .dev/bench/ && xz -f .dev/bench/bench_gpu
#   # there: scripts/bench-vs-torch.sh .dev/bench
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUNDLE=$(cd "${1:?usage: bench-vs-torch.sh BUNDLE}" && pwd)
LOGS=${OUT:-/tmp/vitrine-bench-logs}
mkdir -p "$LOGS"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
BIN=/tmp/vitrine-bench-gpu
if [[ -f $BUNDLE/bench_gpu.xz ]]; then
  python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' "$BUNDLE/bench_gpu.xz" "$BIN"
else
  cp "$BUNDLE/bench_gpu" "$BIN"
fi
chmod +x "$BIN"
"$BIN" --device cuda:0 --dtype f16 | tee "$LOGS/vitrine_bench.jsonl"
# bf16 where the baseline has bf16 figures: SDPA at the fp16 cases' batch and
# torch.compile at 512² batch 16.
{
  "$BIN" --device cuda:0 --dtype bf16 --filter radio_h_512x512
  "$BIN" --device cuda:0 --dtype bf16 --filter radio_h_512x512 --batch 16
  "$BIN" --device cuda:0 --dtype bf16 --filter internvit
} | tee "$LOGS/vitrine_bench_bf16.jsonl"
BASELINE_OUT=$LOGS python3 "$REPO/scripts/torch_baseline.py" > "$LOGS/torch.log" 2>&1
# End-to-end calls (host pixels in, f32 outputs on the host): PyTorch's
# counterpart of bench_gpu's e2e_ms.
python3 "$REPO/scripts/torch_e2e.py" > "$LOGS/torch_e2e.jsonl" 2>"$LOGS/torch_e2e.log" || true
python3 - "$LOGS" <<'PY'
import json, sys
logs = sys.argv[1]
ours = {r["case"]: r for r in map(json.loads, open(f"{logs}/vitrine_bench.jsonl"))}
torch = [json.loads(l) for l in open(f"{logs}/torch_baseline.jsonl")]
def t(kind, **kw):
    for r in torch:
        if r.get("kind") == kind and r.get("dtype") == "torch.float16" and r.get("attn", "sdpa") == "sdpa" and all(r.get(k) == v for k, v in kw.items()):
            return r
print("| case (fp16) | vitrine | PyTorch (HF SDPA) | ratio |\n|---|---|---|---|")
rows = [("radio_h_224x224_b1", "latency ms", t("radio", batch=1, h=224, w=224), "ms"),
        ("radio_h_512x512_b32", "images/s", t("radio", batch=32, h=512, w=512), "img_s"),
        ("radio_h_432x640_b8", "images/s", t("radio", batch=8, h=432, w=640), "img_s"),
        ("radio_h_1024x1024_b4", "images/s", t("radio", batch=4, h=1024, w=1024), "img_s"),
        ("internvit_300m_448x448_b32", "images/s", t("internvl", batch=32, size=448), "img_s")]
for case, unit, ref, key in rows:
    o = ours.get(case)
    if not o or not ref:
        print(f"| {case} | missing | missing | |"); continue
    mine = o["ms_p50"] if key == "ms" else o["img_s"]
    theirs = ref[key]
    ratio = theirs / mine if key == "ms" else mine / theirs
    print(f"| {case} ({unit}) | {mine:.1f} | {theirs:.1f} | {ratio:.3f}× |")

e2e = [json.loads(l) for l in open(f"{logs}/torch_e2e.jsonl") if l.startswith("{")]
def te(kind, batch, h, w):
    return next((r for r in e2e if r["kind"] == kind and (r["batch"], r["h"], r["w"]) == (batch, h, w)), None)
print("\n| end to end, fp16 (host pixels in, f32 outputs on the host; ms) | vitrine | PyTorch | ratio |\n|---|---|---|---|")
for case, ref in [("radio_h_224x224_b1", te("radio_e2e", 1, 224, 224)),
                  ("radio_h_512x512_b32", te("radio_e2e", 32, 512, 512)),
                  ("radio_h_432x640_b8", te("radio_e2e", 8, 432, 640)),
                  ("radio_h_1024x1024_b4", te("radio_e2e", 4, 1024, 1024)),
                  ("internvit_300m_448x448_b32", te("internvl_e2e", 32, 448, 448))]:
    o = ours.get(case)
    if not o or not ref:
        print(f"| {case} | missing | missing | |"); continue
    print(f"| {case} | {o['e2e_ms']:.1f} | {ref['e2e_ms']:.1f} | {ref['e2e_ms'] / o['e2e_ms']:.3f}× |")

bf16 = {r["case"]: r for r in map(json.loads, open(f"{logs}/vitrine_bench_bf16.jsonl"))}
def b(kind, compiled=False, **kw):
    for r in torch:
        if compiled and r.get("kind") == "radio_compiled" and r.get("dtype") == "bf16" and all(r.get(k) == v for k, v in kw.items()):
            return r
        if not compiled and r.get("kind") == kind and r.get("dtype") == "torch.bfloat16" and r.get("attn", "sdpa") == "sdpa" and all(r.get(k) == v for k, v in kw.items()):
            return r
print("\n| case (bf16, images/s) | vitrine | PyTorch | ratio |\n|---|---|---|---|")
for case, label, ref in [("radio_h_512x512_b32", "HF SDPA", b("radio", batch=32, h=512, w=512)),
                         ("radio_h_512x512_b16", "torch.compile", b("radio", compiled=True, batch=16, h=512, w=512)),
                         ("internvit_300m_448x448_b32", "HF SDPA", b("internvl", batch=32, size=448))]:
    o = bf16.get(case)
    if not o or not ref:
        print(f"| {case} vs {label} | missing | missing | |"); continue
    print(f"| {case} vs {label} | {o['img_s']:.1f} | {ref['img_s']:.1f} | {o['img_s'] / ref['img_s']:.3f}× |")
PY
