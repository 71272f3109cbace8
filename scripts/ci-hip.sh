#!/usr/bin/env bash
# The HIP part of CI, for a fresh Debian 12 machine with no GPU and no ROCm:
#
#   1. install the pinned HIP device toolchain (clang-19 + ROCm headers and
#      bitcode, unpacked into .toolchains/rocm; scripts/install-hip-toolchain.sh);
#   2. compile every kernels/*.cu for gfx90a gfx942 gfx1100 gfx1101 gfx1201
#      (code object v5) and check each object's wave size and kernel names;
#   3. clippy the whole workspace with the `hip` feature, warnings denied;
#   4. run every test suite with `hip` built in. With no AMD GPU here, the
#      suites must say "hip: SKIPPED (<reason>)"; this script checks that
#      they did, and that requiring HIP (VITRINE_REQUIRE_BACKENDS=hip) makes
#      them fail rather than pass by skipping.
#
# The objects checked in step 2 are the ones embedded (VITRINE_HIP_KERNELS_DIR),
# so what CI verified is what the binary carries.
#
#   scripts/ci-hip.sh            (from anywhere; prints the time of each step)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

T0=$SECONDS
STEP_T=$SECONDS
STEP_NAME=""
TIMES=()
step() {
  if [[ -n $STEP_NAME ]]; then TIMES+=("$(printf '%-34s %4ss' "$STEP_NAME" $((SECONDS - STEP_T)))"); fi
  STEP_NAME=$1 STEP_T=$SECONDS
  [[ -n $1 ]] && printf '\n==== ci-hip: %s\n' "$1"
  return 0
}
die() { printf 'ci-hip: FAILED: %s\n' "$*" >&2; exit 1; }

step "install the HIP toolchain"
bash scripts/install-hip-toolchain.sh
step "compile kernels for 5 AMD targets"
KDIR=target/kernels
bash scripts/compile-kernels.sh hip "$KDIR"
VITRINE_HIP_KERNELS_DIR=$(cd "$KDIR" && pwd)
export VITRINE_HIP_KERNELS_DIR
for f in "$KDIR"/hip/*.co; do
  printf '  %-28s %7d bytes\n' "$(basename "$f")" "$(stat -c %s "$f")"
done

# The CUDA crate is left out (`--exclude vitrine-cuda`): it needs nvcc to build
# and turns on candle's `cuda` feature, which would make every test binary
# need the CUDA libraries just to start. The CUDA build is linted by .ci/run.
step "clippy --features hip"
cargo clippy --workspace --exclude vitrine-cuda --all-targets --features hip -- -D warnings

step "tests --features hip"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# The suites decide for themselves; a required backend must not come from
# the caller's environment here.
if ! env -u VITRINE_REQUIRE_BACKENDS \
  cargo test --release --workspace --exclude vitrine-cuda --features hip -- --nocapture 2>&1 | tee "$LOG"; then
  die "cargo test --release --workspace --exclude vitrine-cuda --features hip"
fi
# Every suite that plans backends must have reported HIP as skipped, with a
# reason. (On a machine that has an AMD GPU this check does not apply.)
if grep -q 'hip: SKIPPED (' "$LOG"; then
  grep -o 'hip: SKIPPED ([^)]*' "$LOG" | sort | uniq -c | sed 's/^/  reported: /'
else
  grep -q 'hip:0 (' "$LOG" || die "no suite reported HIP as skipped or as run"
fi

step "VITRINE_REQUIRE_BACKENDS=hip must fail without an AMD GPU"
if grep -q 'hip: SKIPPED (' "$LOG"; then
  # The op suite is the cheapest one that plans backends.
  # Same package set as above, so features resolve the same and nothing rebuilds.
  if VITRINE_REQUIRE_BACKENDS=cpu,hip cargo test --release --workspace --exclude vitrine-cuda --features hip --test ops -- --nocapture \
      >"$LOG" 2>&1; then
    cat "$LOG"
    die "the op suite passed with HIP required and no AMD GPU present"
  fi
  grep -q 'backend hip is required (VITRINE_REQUIRE_BACKENDS) but unavailable' "$LOG" ||
    { cat "$LOG"; die "the op suite failed, but not because HIP is required and absent"; }
  echo "  ok: failed as it must: $(grep -o 'backend hip is required[^"]*' "$LOG" | head -1)"
else
  echo "  (an AMD GPU is present: nothing to check)"
fi

step ""
printf '\n==== ci-hip: time per step\n'
printf '  %s\n' "${TIMES[@]}"
printf '  %-34s %4ss\n' "total" $((SECONDS - T0))
