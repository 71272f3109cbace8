#!/usr/bin/env bash
# Compiles every kernels/*.cu for NVIDIA and/or AMD GPUs, then checks the
# results: each AMD object must carry the wave size its target runs, and
# every object must export the same kernel names, so the Rust side can look
# kernels up by one name on either vendor.
#
#   scripts/compile-kernels.sh cuda|hip|all [OUTDIR]     (OUTDIR: target/kernels)
#
# Outputs, one set per source file NAME.cu:
#   OUTDIR/cuda/NAME.fatbin          sm_80 + sm_90a SASS and compute_90 PTX (sm_90a:
#                                    the Hopper-only wgmma attention; see kernels/README.md)
#   OUTDIR/cuda/NAME.compute_80.ptx  PTX for the driver to JIT on anything else
#   OUTDIR/hip/NAME.<gfx>.co         one code object (v5) per AMD target
#
# Toolchains come from the environment (NVCC; VT_HIP_CLANG, VT_ROCM_INCLUDE,
# VT_ROCM_DEVLIBS, VT_HIP_READELF) or else from the folders that
# scripts/install-{cuda,hip}-toolchain.sh fill. Up-to-date outputs are kept,
# so a repeat run with nothing changed only re-runs the checks (~1-2 s).
# Knobs: VT_JOBS (parallel compiles, default: CPU count), VT_HIP_ARCHS,
# VT_FORCE=1 (rebuild everything).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$REPO/scripts/compile-kernels.sh
KDIR=$REPO/kernels

usage() { echo "usage: $0 cuda|hip|all [OUTDIR]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
case $1 in cuda) DO_CUDA=1 DO_HIP=0 ;; hip) DO_CUDA=0 DO_HIP=1 ;; all) DO_CUDA=1 DO_HIP=1 ;; *) usage ;; esac
OUT=${2:-$REPO/target/kernels}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
JOBS=${VT_JOBS:-$(nproc 2>/dev/null || echo 2)}
HIP_ARCHS=${VT_HIP_ARCHS:-gfx90a gfx942 gfx1100 gfx1101 gfx1201}

die() { printf 'compile-kernels: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
T_START=$(now)

shopt -s nullglob
SOURCES=("$KDIR"/*.cu)
HEADERS=("$KDIR"/*.cuh)
[[ ${#SOURCES[@]} -gt 0 ]] || die "no kernels/*.cu"
NAMES=()
for s in "${SOURCES[@]}"; do n=$(basename "$s" .cu); NAMES+=("$n"); done

# Wave size each AMD target runs: 64 on CDNA (gfx9), 32 on RDNA (gfx10+).
expected_wave() { case $1 in gfx9*) echo 64 ;; *) echo 32 ;; esac; }

# --- toolchains ---------------------------------------------------------------
if [[ $DO_CUDA == 1 ]]; then
  if [[ -z ${NVCC:-} ]]; then
    for c in "$REPO/.toolchains/cuda/cu13/bin/nvcc" "$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc; do
      [[ -n $c && -x $c ]] && { NVCC=$c; break; }
    done
  fi
  [[ -n ${NVCC:-} && -x ${NVCC:-} ]] || die "nvcc not found: run scripts/install-cuda-toolchain.sh or set NVCC"
  NVCC_VERSION=$("$NVCC" --version | grep -o 'release [0-9.]*' || true)
  # IEEE division/sqrt, no flush-to-zero, FMA contraction on: the same
  # floating-point contract as the HIP flags below.
  NVCC_FLAGS=(-std=c++17 -O3 --Werror all-warnings -Xcompiler -Wall,-Wextra
    -ftz=false -prec-div=true -prec-sqrt=true -fmad=true)
fi
if [[ $DO_HIP == 1 ]]; then
  ENVF=$REPO/.toolchains/rocm/env.sh
  if [[ -z ${VT_HIP_CLANG:-} || -z ${VT_ROCM_INCLUDE:-} || -z ${VT_ROCM_DEVLIBS:-} ]]; then
    [[ -f $ENVF ]] || die "HIP toolchain not found: run scripts/install-hip-toolchain.sh or set VT_HIP_CLANG, VT_ROCM_INCLUDE, VT_ROCM_DEVLIBS"
    # shellcheck disable=SC1090
    source "$ENVF"
  fi
  VT_HIP_READELF=${VT_HIP_READELF:-$(command -v llvm-readelf-19 || command -v llvm-readelf || true)}
  [[ -x $VT_HIP_CLANG ]] || die "no HIP clang at '$VT_HIP_CLANG'"
  [[ -n $VT_HIP_READELF && -x $VT_HIP_READELF ]] || die "llvm-readelf not found (needed for the wave-size check)"
  [[ -f $VT_ROCM_INCLUDE/hip/hip_runtime.h ]] || die "no hip/hip_runtime.h under VT_ROCM_INCLUDE=$VT_ROCM_INCLUDE"
  HIP_VERSION=$("$VT_HIP_CLANG" --version | head -1)
  # Code object v5: LLVM's newer default (v6) needs ROCm >= 6.3 to load.
  # -Wno-pass-failed: `#pragma unroll` is a speed hint; with the emulated tile
  # MMA of vt_compat.cuh some loops of the 128-row attention kernels are too
  # large for clang to unroll on gfx11, which it reports as a failed pass.
  HIP_FLAGS=(-x hip -std=c++17 -O3 -Wall -Wextra -Werror -Wno-pass-failed
    -nogpuinc -isystem "$("$VT_HIP_CLANG" -print-resource-dir)/include" -isystem "$VT_ROCM_INCLUDE"
    -D__HIP_PLATFORM_AMD__ -include __clang_hip_runtime_wrapper.h
    --rocm-device-lib-path="$VT_ROCM_DEVLIBS" -mcode-object-version=5
    -fno-gpu-flush-denormals-to-zero -ffp-contract=fast -fhip-fp32-correctly-rounded-divide-sqrt
    --offload-device-only --no-gpu-bundle-output)
fi

# --- staleness ------------------------------------------------------------------
# A flags/toolchain change invalidates a whole vendor directory; a source
# change invalidates the outputs that are older than it.
prepare_dir() { # dir stamp-text
  local d=$1 want=$2
  mkdir -p "$d"
  if [[ ${VT_FORCE:-0} == 1 || ! -f $d/.stamp || $(cat "$d/.stamp") != "$want" ]]; then
    rm -f "$d"/*.fatbin "$d"/*.ptx "$d"/*.co "$d"/*.log
    printf '%s' "$want" >"$d/.stamp"
  fi
  # Drop outputs whose source is gone.
  local f base
  for f in "$d"/*.fatbin "$d"/*.ptx "$d"/*.co; do
    base=$(basename "$f"); base=${base%%.*}
    [[ -f $KDIR/$base.cu ]] || rm -f "$f"
  done
}
is_fresh() { # output source
  local o=$1 s=$2 h
  [[ -s $o && $o -nt $s && $o -nt $SELF ]] || return 1
  for h in "${HEADERS[@]}"; do [[ $o -nt $h ]] || return 1; done
}

# --- job list -------------------------------------------------------------------
JOBFILE=$(mktemp)
TIMES=$(mktemp)
trap 'rm -f "$JOBFILE" "$TIMES"' EXIT
CUDA_OUT=$OUT/cuda
HIP_OUT=$OUT/hip
if [[ $DO_CUDA == 1 ]]; then
  prepare_dir "$CUDA_OUT" "$NVCC_VERSION ${NVCC_FLAGS[*]}"
  for n in "${NAMES[@]}"; do
    is_fresh "$CUDA_OUT/$n.fatbin" "$KDIR/$n.cu" || echo "fatbin $n -" >>"$JOBFILE"
    is_fresh "$CUDA_OUT/$n.compute_80.ptx" "$KDIR/$n.cu" || echo "ptx $n -" >>"$JOBFILE"
  done
fi
if [[ $DO_HIP == 1 ]]; then
  prepare_dir "$HIP_OUT" "$HIP_VERSION ${HIP_FLAGS[*]} $HIP_ARCHS"
  for n in "${NAMES[@]}"; do
    for a in $HIP_ARCHS; do
      is_fresh "$HIP_OUT/$n.$a.co" "$KDIR/$n.cu" || echo "hip $n $a" >>"$JOBFILE"
    done
  done
fi

# One compile; its log is kept only on failure. Runs in an xargs worker.
compile_one() { # kind name arch
  local kind=$1 n=$2 a=$3 src=$KDIR/$2.cu out log t0 rc=0
  case $kind in
    fatbin) out=$CUDA_OUT/$n.fatbin ;;
    ptx) out=$CUDA_OUT/$n.compute_80.ptx ;;
    hip) out=$HIP_OUT/$n.$a.co ;;
  esac
  log=$out.log
  t0=$(now)
  case $kind in
    fatbin)
      "$NVCC" "${NVCC_FLAGS[@]}" --fatbin \
        -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a \
        -gencode arch=compute_90,code=compute_90 "$src" -o "$out.tmp" >"$log" 2>&1 || rc=$? ;;
    ptx) "$NVCC" "${NVCC_FLAGS[@]}" -ptx -arch=compute_80 "$src" -o "$out.tmp" >"$log" 2>&1 || rc=$? ;;
    hip) "$VT_HIP_CLANG" "${HIP_FLAGS[@]}" --offload-arch="$a" "$src" -o "$out.tmp" >"$log" 2>&1 || rc=$? ;;
  esac
  if [[ $rc -ne 0 ]]; then
    rm -f "$out.tmp"
    printf 'FAILED: %s %s %s\n' "$kind" "$n" "$a" >&2
    cat "$log" >&2
    return 255 # makes xargs stop scheduling new jobs
  fi
  mv -f "$out.tmp" "$out"
  rm -f "$log"
  printf '%s %s %s %s\n' "$kind" "$n" "$a" "$(elapsed "$t0")" >>"$TIMES"
}

NJOBS=$(wc -l <"$JOBFILE")
if [[ $NJOBS -gt 0 ]]; then
  export -f compile_one now elapsed
  export KDIR CUDA_OUT HIP_OUT TIMES NVCC VT_HIP_CLANG
  # Arrays cannot be exported; pass them through as NUL-free strings.
  NVCC_FLAGS_S="" HIP_FLAGS_S=""
  if [[ $DO_CUDA == 1 ]]; then NVCC_FLAGS_S=$(printf '%q ' "${NVCC_FLAGS[@]}"); fi
  if [[ $DO_HIP == 1 ]]; then HIP_FLAGS_S=$(printf '%q ' "${HIP_FLAGS[@]}"); fi
  export NVCC_FLAGS_S HIP_FLAGS_S
  echo "compile-kernels: $NJOBS compile(s) on $JOBS job(s) -> $OUT" >&2
  if ! xargs -P "$JOBS" -L 1 bash -c '
        set -u
        eval "NVCC_FLAGS=($NVCC_FLAGS_S)"; eval "HIP_FLAGS=($HIP_FLAGS_S)"
        compile_one "$@"' _ <"$JOBFILE"; then
    die "compilation failed (see above)"
  fi
else
  echo "compile-kernels: all outputs up to date in $OUT" >&2
fi

# --- checks ----------------------------------------------------------------------
# Kernel names a PTX file or an AMD code object exports, sorted.
ptx_entries() { grep -oE '\.entry [A-Za-z_][A-Za-z0-9_]*' "$1" | awk '{print $2}' | sort; }
# An AMD kernel is the symbol NAME with a kernel descriptor NAME.kd.
co_entries() { "$VT_HIP_READELF" --dyn-symbols "$1" | awk '$NF ~ /\.kd$/ {sub(/\.kd$/, "", $NF); print $NF}' | sort; }

FAIL=0
fail() { printf 'compile-kernels: CHECK FAILED: %s\n' "$*" >&2; FAIL=1; }

if [[ $DO_HIP == 1 ]]; then
  for a in $HIP_ARCHS; do
    want=$(expected_wave "$a")
    # What the source believes (VT_WARP_SIZE) ...
    got=$(echo '#include "vt_compat.cuh"' |
      "$VT_HIP_CLANG" "${HIP_FLAGS[@]}" --offload-arch="$a" -I "$KDIR" -E -dM - -o - 2>&1 |
      awk '$2 == "VT_WARP_SIZE" {print $3}' || true)
    [[ $got == "$want" ]] || fail "$a: VT_WARP_SIZE is '$got', the target runs $want-wide waves"
    # ... and what each object declares to the runtime.
    for n in "${NAMES[@]}"; do
      co=$HIP_OUT/$n.$a.co
      sizes=$("$VT_HIP_READELF" --notes "$co" | awk '$1 == ".wavefront_size:" {print $2}' | sort -u | tr '\n' ' ' || true)
      [[ $sizes == "$want " ]] || fail "$co: .wavefront_size '${sizes% }', expected $want"
    done
  done
fi

# Same kernel names everywhere: the PTX of each file is the reference list.
for n in "${NAMES[@]}"; do
  ref="" refname=""
  if [[ $DO_CUDA == 1 ]]; then
    ref=$(ptx_entries "$CUDA_OUT/$n.compute_80.ptx"); refname=compute_80.ptx
    [[ -n $ref ]] || fail "$n: no kernel entries in the PTX"
  fi
  if [[ $DO_HIP == 1 ]]; then
    for a in $HIP_ARCHS; do
      got=$(co_entries "$HIP_OUT/$n.$a.co")
      if [[ -z $ref ]]; then ref=$got; refname=$a; fi
      [[ $got == "$ref" ]] || fail "$n: kernel names of $a differ from $refname: $(diff <(echo "$ref") <(echo "$got") | grep '^[<>]' | tr '\n' ' ')"
    done
  fi
done

# --- report ----------------------------------------------------------------------
kb() { if [[ -f $1 ]]; then awk -v s="$(stat -c %s "$1")" 'BEGIN {printf "%.1f", s / 1024}'; else echo -; fi; }
{
  hdr="kernel"
  [[ $DO_CUDA == 1 ]] && hdr+=" fatbin ptx80"
  [[ $DO_HIP == 1 ]] && hdr+=" $HIP_ARCHS"
  echo "$hdr entries"
  for n in "${NAMES[@]}"; do
    row=$n
    if [[ $DO_CUDA == 1 ]]; then row+=" $(kb "$CUDA_OUT/$n.fatbin") $(kb "$CUDA_OUT/$n.compute_80.ptx")"; fi
    if [[ $DO_HIP == 1 ]]; then for a in $HIP_ARCHS; do row+=" $(kb "$HIP_OUT/$n.$a.co")"; done; fi
    if [[ $DO_CUDA == 1 ]]; then cnt=$(ptx_entries "$CUDA_OUT/$n.compute_80.ptx" | wc -l)
    else cnt=$(co_entries "$HIP_OUT/$n.${HIP_ARCHS%% *}.co" | wc -l); fi
    echo "$row $cnt"
  done
} | awk '{for (i = 1; i <= NF; i++) printf (i == 1 ? "%-12s" : "%9s"), $i; print ""}'
echo "(sizes in KiB; entries = kernels per object)"
if [[ -s $TIMES ]]; then
  echo "compile time per target (s, summed over files):"
  awk '{k = ($1 == "hip") ? $3 : $1; t[k] += $4; c[k]++} END {for (k in t) printf "  %-8s %6.2f  (%d files)\n", k, t[k], c[k]}' "$TIMES" | sort
fi
printf 'compile-kernels: %s in %s s wall (%s jobs)\n' "$([[ $FAIL == 0 ]] && echo OK || echo FAILED)" \
  "$(elapsed "$T_START")" "$JOBS"
exit $FAIL
