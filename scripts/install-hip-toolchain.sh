#!/usr/bin/env bash
# Installs a minimal HIP device-code toolchain for vitrine on Debian 12 with
# no ROCm: Debian's clang-19 plus the headers and device bitcode of three
# ROCm 5.2.3 packages, unpacked into DIR (default: <repo>/.toolchains/rocm).
#
# Why not Debian's hipcc: it is clang-15, which rejects gfx942 and has no
# gfx11/gfx12 device libraries. clang-19 knows every target we ship.
#
# Why synthesized ISA bitcode: clang links one `oclc_isa_version_<N>.bc` per
# target, and the 5.2.3 device libraries stop before gfx942/gfx11/gfx12. Each
# such file only defines the ISA version constant, so we generate the missing
# ones. The 5.2.3 ocml/ockl bitcode predates those targets: these objects
# prove that the kernels compile, not that they are what ROCm would ship.
#
# Idempotent: packages, unpacked debs and bitcode are reused when present.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-$REPO/.toolchains/rocm}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
LLVM_V=19
CLANG=clang-$LLVM_V
DEBS=(libamdhip64-dev libhsa-runtime-dev rocm-device-libs)
# ISA version = major*1000 + minor*100 + stepping (stepping 'a' = 10).
declare -A ISA=([90a]=9010 [942]=9402 [1100]=11000 [1101]=11001 [1201]=12001)

log() { printf '[install-hip] %s\n' "$*" >&2; }
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo

have_tools() {
  command -v "clang++-$LLVM_V" >/dev/null && command -v "ld.lld-$LLVM_V" >/dev/null &&
    command -v "llvm-readelf-$LLVM_V" >/dev/null
}

# 1. Compiler, linker and readelf (llvm-19 carries llvm-readelf-19).
if ! have_tools; then
  log "apt: installing $CLANG lld-$LLVM_V llvm-$LLVM_V"
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y -q --no-install-recommends "$CLANG" "lld-$LLVM_V" "llvm-$LLVM_V" >/dev/null; then
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q --no-install-recommends "$CLANG" "lld-$LLVM_V" "llvm-$LLVM_V" >/dev/null
  fi
  have_tools || { log "clang++-$LLVM_V / ld.lld-$LLVM_V / llvm-readelf-$LLVM_V still missing"; exit 1; }
else
  log "$CLANG, lld and llvm-readelf already installed"
fi

# 2. ROCm headers and device bitcode, unpacked without installing them, so
#    they cannot clash with anything on the system.
ROOT=$DIR/rocm-min
if [[ ! -f $ROOT/.done ]]; then
  log "apt: downloading ${DEBS[*]}"
  rm -rf "$DIR/debs" "$ROOT"
  mkdir -p "$DIR/debs" "$ROOT"
  if ! (cd "$DIR/debs" && apt-get download -q "${DEBS[@]}" >/dev/null 2>&1); then
    $SUDO apt-get update -q >/dev/null
    (cd "$DIR/debs" && apt-get download -q "${DEBS[@]}" >/dev/null)
  fi
  for d in "$DIR"/debs/*.deb; do dpkg-deb -x "$d" "$ROOT"; done
  (cd "$DIR/debs" && ls) >"$ROOT/.done"
else
  log "ROCm packages already unpacked: $(tr '\n' ' ' <"$ROOT/.done")"
fi
R=$ROOT/usr
BC=$R/lib/x86_64-linux-gnu/amdgcn/bitcode
[[ -f $R/include/hip/hip_runtime.h && -d $BC ]] || { log "unpacked ROCm tree is incomplete: $ROOT"; exit 1; }

# 3. devlibs: the packaged bitcode plus the missing ISA-version files.
DEVLIBS=$DIR/devlibs
mkdir -p "$DEVLIBS"
for f in "$BC"/*.bc; do
  t=$DEVLIBS/$(basename "$f")
  [[ -e $t ]] || ln -s "$f" "$t"
done
for arch in "${!ISA[@]}"; do
  out=$DEVLIBS/oclc_isa_version_$arch.bc
  [[ -e $out ]] && continue
  ll=$DEVLIBS/.isa_$arch.ll
  printf 'target triple = "amdgcn-amd-amdhsa"\n@__oclc_ISA_version = linkonce_odr protected local_unnamed_addr addrspace(4) constant i32 %s, align 4\n' \
    "${ISA[$arch]}" >"$ll"
  "$CLANG" --target=amdgcn-amd-amdhsa -nogpulib -c -emit-llvm -x ir "$ll" -o "$out"
  log "synthesized $(basename "$out") (ISA ${ISA[$arch]})"
done

ENVF=$DIR/env.sh
cat >"$ENVF" <<EOF
export VT_HIP_CLANG="$(command -v "clang++-$LLVM_V")"
export VT_HIP_READELF="$(command -v "llvm-readelf-$LLVM_V")"
export VT_ROCM_INCLUDE="$R/include"
export VT_ROCM_DEVLIBS="$DEVLIBS"
EOF
log "$("clang++-$LLVM_V" --version | head -1)"
log "environment (also in $ENVF):"
cat "$ENVF"
