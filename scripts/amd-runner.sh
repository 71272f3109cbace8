#!/usr/bin/env bash
# The one command for an AMD GPU machine (ROCm 6.x or 7.x + Rust): builds
# vitrine with the HIP backend and runs the op-level and model-level parity
# suites with HIP *required*, so an absent or unusable GPU is a failure,
# never a skip. docs/amd.md explains what it checks and why.
#
#   scripts/amd-runner.sh [--kernels ci|rocm] [--full-dumps DIR [-- GEN_ARGS...]]
#
#   --kernels ci     (default) compile the kernels exactly as CI does: Debian's
#                    clang-19 + ROCm 5.2.3 headers/bitcode, installed into
#                    .toolchains/rocm by scripts/install-hip-toolchain.sh (apt).
#                    These are the objects a release embeds.
#   --kernels rocm   compile them with this machine's ROCm compiler and device
#                    libraries ($ROCM_PATH, default /opt/rocm) instead. If `ci`
#                    fails and `rocm` passes, the clang-19 route is wrong for
#                    this GPU: report it.
#   --full-dumps DIR afterwards, write the full-size reference dumps
#                    (C-RADIOv2-H, C-RADIOv4-H, InternViT-300M/6B, random
#                    weights) with PyTorch-ROCm: scripts/gen_fixtures.py --full
#                    --out DIR, plus any GEN_ARGS (e.g. --models ... --sizes ...).
#
# Environment: HIP_VISIBLE_DEVICES (default 0: the suites use device 0, and
# one test expects hip:1 to be absent), ROCM_PATH, VITRINE_HIP_LIBRARY /
# VITRINE_ROCBLAS_LIBRARY (exact library files, if the search misses them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KERNELS=ci
DUMPS=""
GEN_ARGS=()
usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --kernels) [[ $# -ge 2 ]] || usage; KERNELS=$2; shift 2 ;;
    --full-dumps) [[ $# -ge 2 ]] || usage; DUMPS=$2; shift 2 ;;
    --) shift; GEN_ARGS=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "amd-runner: unknown argument $1" >&2; usage ;;
  esac
done
[[ $KERNELS == ci || $KERNELS == rocm ]] || usage

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export HIP_VISIBLE_DEVICES=${HIP_VISIBLE_DEVICES:-0}
ROCM=${ROCM_PATH:-/opt/rocm}
log() { printf '\n==== amd-runner: %s\n' "$*"; }
die() { printf 'amd-runner: FAILED: %s\n' "$*" >&2; exit 1; }
T0=$SECONDS

log "machine"
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
rocm_bin() { for c in "$ROCM/bin/$1" "$(command -v "$1" || true)"; do [[ -n $c && -x $c ]] && { echo "$c"; return; }; done; }
ROCMINFO=$(rocm_bin rocminfo)
[[ -n $ROCMINFO ]] || die "rocminfo not found under $ROCM/bin or on PATH: is ROCm installed? (set ROCM_PATH)"
GFX=$("$ROCMINFO" 2>/dev/null | awk '$1 == "Name:" && $2 ~ /^gfx/ {print $2}' | sort -u | tr '\n' ' ')
[[ -n $GFX ]] || die "rocminfo lists no AMD GPU agent (driver loaded? access to /dev/kfd and /dev/dri?)"
echo "GPU architectures: $GFX(HIP_VISIBLE_DEVICES=$HIP_VISIBLE_DEVICES)"
echo "ROCm: $ROCM ($(cat "$ROCM/.info/version" 2>/dev/null || echo 'version unknown'))"
for g in $GFX; do
  case ${g%%:*} in
    gfx90a|gfx942|gfx1100|gfx1101|gfx1201) ;;
    *) echo "warning: ${g%%:*} is not one of vitrine's targets (gfx90a gfx942 gfx1100 gfx1101 gfx1201); tests on it will fail" ;;
  esac
done
cargo --version

log "kernels ($KERNELS route)"
KDIR=target/kernels-$KERNELS
if [[ $KERNELS == ci ]]; then
  bash scripts/install-hip-toolchain.sh ||
    die "the CI toolchain did not install (it needs apt and Debian/Ubuntu packages); try --kernels rocm"
else
  export VT_HIP_CLANG=$ROCM/llvm/bin/clang++
  export VT_HIP_READELF=$ROCM/llvm/bin/llvm-readelf
  export VT_ROCM_INCLUDE=$ROCM/include
  export VT_ROCM_DEVLIBS=$ROCM/amdgcn/bitcode
  [[ -d $VT_ROCM_DEVLIBS ]] || VT_ROCM_DEVLIBS=$(dirname "$(find "$ROCM"/ -name 'ocml.bc' -print -quit 2>/dev/null || true)")
  [[ -x $VT_HIP_CLANG && -f $VT_ROCM_DEVLIBS/ocml.bc ]] ||
    die "no ROCm compiler/device libraries under $ROCM (looked for llvm/bin/clang++ and amdgcn/bitcode/ocml.bc)"
fi
bash scripts/compile-kernels.sh hip "$KDIR"
VITRINE_HIP_KERNELS_DIR=$(cd "$KDIR" && pwd)
export VITRINE_HIP_KERNELS_DIR

log "build and run every suite with HIP required (VITRINE_REQUIRE_BACKENDS=cpu,hip)"
# The root package's suites: tests/ops.rs (op level) and tests/parity.rs
# (model level) among them; then the HIP crate's own tests. Not --workspace:
# that would also build vitrine-cuda, whose build needs nvcc. Thresholds are
# the ones in the suite files, shared with CUDA.
export VITRINE_REQUIRE_BACKENDS=cpu,hip
RC=0
cargo test --release --features hip -- --nocapture || RC=$?
[[ $RC -eq 0 ]] || die "the suites failed with HIP required (exit $RC); the tables above name each failing op/model"
cargo test --release -p vitrine-hip -- --nocapture || die "the vitrine-hip tests failed"
# The fused attention's 128-row tiles (what large batches run) and the
# reference kernel, each over the whole op table: on AMD the fused kernel's
# tile MMA is the shuffle emulation of vt_compat.cuh, never run on hardware
# before this script.
for mode in wide reference; do
  log "op table with VITRINE_GPU_ATTENTION=$mode"
  VITRINE_GPU_ATTENTION=$mode cargo test --release --features hip --test ops -- --nocapture \
    || die "the op table failed with VITRINE_GPU_ATTENTION=$mode"
done

if [[ -n $DUMPS ]]; then
  log "full-size reference dumps with PyTorch-ROCm -> $DUMPS"
  python3 - <<'EOF' || die "PyTorch-ROCm with a visible GPU is needed for --full-dumps"
import torch
assert torch.version.hip, f"this torch ({torch.__version__}) is not a ROCm build"
assert torch.cuda.is_available(), "torch sees no GPU (ROCm devices appear as 'cuda')"
print(f"torch {torch.__version__} (HIP {torch.version.hip}) on {torch.cuda.get_device_name(0)}")
EOF
  mkdir -p "$DUMPS"
  PYTHONUNBUFFERED=1 python3 scripts/gen_fixtures.py --full --out "$DUMPS" "${GEN_ARGS[@]}"
  du -sh "$DUMPS"
fi

log "PASSED in $((SECONDS - T0)) s (kernels: $KERNELS route, GPUs: $GFX)"
