#!/usr/bin/env bash
# Runs vitrine's suites on an NVIDIA machine that has no Rust toolchain (the
# H100 test machine): test binaries and `embed` are built elsewhere with
# `scripts/build-gpu-bundle.sh` and carried in BUNDLE.
#
#   scripts/gpu-suite.sh BUNDLE [--full OUTDIR [gen_fixtures filters...]]
#
# 1. op-level and model-level suites on the committed tiny fixtures with
#    CUDA required (an absent or failing CUDA backend fails the run);
# 2. with --full: generates the full-size HF reference dumps into OUTDIR
#    (scripts/gen_fixtures.py --full, PyTorch + transformers on this GPU) and
#    runs the model-level parity suite on them with CUDA required.
# Logs go to $OUT when set (the device tool's output folder).
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUNDLE=$(cd "${1:?usage: gpu-suite.sh BUNDLE [--full OUTDIR [filters...]]}" && pwd) || exit 2
[[ -x $BUNDLE/ops || -f $BUNDLE/ops.xz ]] || { echo "gpu-suite: no test binaries in $BUNDLE (carried?)" >&2; exit 2; }
shift
LOGS=${OUT:-/tmp/vitrine-gpu-logs}
mkdir -p "$LOGS"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export VITRINE_REQUIRE_BACKENDS=cpu,cuda
export VITRINE_EMBED_BIN=$BUNDLE/embed
cd "$REPO"
for f in "$BUNDLE"/*.xz; do [[ -e $f ]] && python3 -c 'import lzma, sys; open(sys.argv[1][:-3], "wb").write(lzma.open(sys.argv[1]).read())' "$f" && rm -f "$f"; done
chmod +x "$BUNDLE"/* 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOGS/gpu.txt"

status=0
# wide: the fused kernel's 128-row tiles; hopper: the warpgroup-MMA kernel
# (H100) even for the small cases, which the default leaves to the fused one.
for mode in wide hopper; do
  echo "==== ops with VITRINE_GPU_ATTENTION=$mode"
  VITRINE_GPU_ATTENTION=$mode "$BUNDLE/ops" --nocapture --test-threads 1 2>&1 | tee "$LOGS/ops_$mode.log" | grep -E "^\| .*FAIL|test result|panicked|checks" | tail -n 50
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
done
for suite in ops parity embed_cli; do
  echo "==== $suite (tiny fixtures, CUDA required)"
  "$BUNDLE/$suite" --nocapture --test-threads 1 2>&1 | tee "$LOGS/$suite.log" | grep -E "^\| .*(FAIL|cuda)|test result|panicked|SKIPPED|checks" | tail -n 400
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
done

if [[ ${1:-} == --full ]]; then
  FULL=${2:?--full needs an output folder}
  shift 2
  echo "==== generating full-size reference dumps in $FULL ($*)"
  PYTHONUNBUFFERED=1 python3 scripts/gen_fixtures.py --full --out "$FULL" "$@" 2>&1 | tail -n 60 | tee "$LOGS/gen_full.log"
  echo "==== parity on full-size dumps (CUDA required)"
  VITRINE_FIXTURES=$FULL VITRINE_ONLY_BACKENDS=cuda "$BUNDLE/parity" parity_against_hf_reference --nocapture --test-threads 1 2>&1 \
    | tee "$LOGS/parity_full.log" | grep -E "^\|  *[a-z]|test result|panicked|failures" | tail -n 200
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
fi
exit $status
