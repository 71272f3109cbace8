#!/usr/bin/env bash
# Installs a GPU-less CUDA 13.0 build toolchain for vitrine into DIR
# (default: <repo>/.toolchains/cuda) and prints the environment to export.
#
# Why pip wheels: Debian 12 has no CUDA 13, and only the CUDA 13 wheels ship
# nvcc. Why these exact pins: the H100 test machine runs driver 580 (CUDA
# 13.0); a newer nvcc emits a PTX ISA that driver cannot JIT, and the nvcc
# wheel's own dependencies are unversioned, so every wheel is pinned here.
#
# Besides nvcc it prepares what linking candle `--features cuda` needs on a
# machine without a GPU: unversioned .so symlinks and link-only stub
# libraries whose symbol lists come from cudarc's bindings in the cargo
# registry. Stubs only satisfy the linker; they never run real work.
#
# Idempotent: a stamp records the pins, so a second run only re-checks.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-$REPO/.toolchains/cuda}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

PINS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
)
# cudarc is pinned by candle-core 0.11; its bindings name the stub symbols.
CUDARC_GLOB=${CUDARC_GLOB:-cudarc-0.19.*}

log() { printf '[install-cuda] %s\n' "$*" >&2; }

PY=${PYTHON:-python3}
VENV=$DIR/venv
STAMP=$DIR/.pins
want_stamp=$(printf '%s\n' "${PINS[@]}")

if [[ ! -x $VENV/bin/python ]]; then
  log "creating venv $VENV"
  "$PY" -m venv "$VENV"
fi
if [[ ! -f $STAMP || $(cat "$STAMP") != "$want_stamp" ]]; then
  log "installing pinned wheels: ${PINS[*]}"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir "${PINS[@]}"
  printf '%s\n' "$want_stamp" >"$STAMP"
else
  log "pinned wheels already installed"
fi

CU=$("$VENV/bin/python" - <<'EOF'
import os, nvidia
# `nvidia` is a namespace package: search every path it spans for cu13/.
for p in nvidia.__path__:
    c = os.path.join(p, "cu13")
    if os.path.isfile(os.path.join(c, "bin", "nvcc")):
        print(c)
        break
EOF
)
[[ -n $CU ]] || { log "nvcc not found in the venv (nvidia/cu13/bin/nvcc)"; exit 1; }
# A stable path for scripts and build.rs, independent of the Python version.
ln -sfn "$CU" "$DIR/cu13"
CU=$DIR/cu13
NVCC=$CU/bin/nvcc
"$NVCC" --version | grep -q 'release 13\.0' || { log "unexpected nvcc version:"; "$NVCC" --version >&2; exit 1; }

LIB=$CU/lib
STUBS=$CU/lib/stubs
mkdir -p "$STUBS"

# Unversioned names the linker looks up with plain -l flags.
link_unversioned() { # name soname
  local name=$1 soname=$2
  if [[ -e $LIB/$soname && ! -e $LIB/$name ]]; then ln -sfn "$soname" "$LIB/$name"; fi
}

# A stub library: every symbol cudarc may import, each a function returning
# an error code, so a mistaken run fails loudly instead of doing nothing.
make_stub() { # cudarc_module outdir file soname retcode
  local mod=$1 out=$2 file=$3 soname=$4 ret=$5
  local src=$CUDARC_DIR/src/$mod/sys/mod.rs
  [[ -f $src ]] || { log "no $src: skipping stub $file"; return 0; }
  if [[ $soname != "$file" && -e $out/$soname && ! -L $out/$soname ]]; then
    log "real $soname present: no stub"; return 0
  fi
  if [[ -f $out/$file && $out/$file -nt $src ]]; then return 0; fi
  local c=$out/.${file%.so}_stub.c
  grep -oE 'pub unsafe fn [A-Za-z_][A-Za-z0-9_]*' "$src" | awk '{print $4}' |
    grep -vxE 'culib|is_culib_present' | sort -u |
    awk -v r="$ret" '{printf "int %s(void) { return %s; }\n", $1, r}' >"$c"
  local n
  n=$(wc -l <"$c")
  gcc -shared -fPIC -O1 -o "$out/$file" "$c" -Wl,-soname,"$soname"
  [[ $soname == "$file" ]] || ln -sfn "$file" "$out/$soname"
  log "stub $out/$file ($soname): $n symbols"
}

CUDARC_DIR=""
for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/$CUDARC_GLOB; do
  [[ -d $d ]] && CUDARC_DIR=$d
done

link_unversioned libcudart.so libcudart.so.13
STUB_NOTE=""
if [[ -n $CUDARC_DIR ]]; then
  log "stub symbol lists from $CUDARC_DIR"
  # 999 = CUDA_ERROR_UNKNOWN; cuBLAS/cuRAND/NVRTC callers treat non-zero as failure.
  make_stub driver   "$STUBS" libcuda.so     libcuda.so.1      999
  make_stub cublas   "$LIB"   libcublas.so   libcublas.so.13   999
  make_stub cublaslt "$LIB"   libcublasLt.so libcublasLt.so.13 999
  make_stub curand   "$LIB"   libcurand.so   libcurand.so.10   999
  make_stub nvrtc    "$LIB"   libnvrtc.so    libnvrtc.so.13    999
else
  STUB_NOTE="no cudarc ($CUDARC_GLOB) in the cargo registry yet: stub libraries skipped; run 'cargo fetch' for the workspace, then rerun this script before linking a cuda build"
  log "$STUB_NOTE"
fi

ENVF=$DIR/env.sh
cat >"$ENVF" <<EOF
export PATH="$CU/bin:\$PATH"
export NVCC="$NVCC"
export CUDA_HOME="$CU"
export CUDA_PATH="$CU"
export CUDA_COMPUTE_CAP=90
export CUDAFORGE_THREADS=2
export LIBRARY_PATH="$LIB:$STUBS\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
EOF
log "nvcc: $("$NVCC" --version | grep release)"
[[ -z $STUB_NOTE ]] || log "NOTE: $STUB_NOTE"
log "environment (also in $ENVF; use: source $ENVF):"
cat "$ENVF"
