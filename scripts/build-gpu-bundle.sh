#!/usr/bin/env bash
# Builds what scripts/gpu-suite.sh runs on a GPU machine without Rust: the
# test binaries (ops, parity, embed_cli) and `embed`, with `--features cuda`,
# stripped and xz-compressed into BUNDLE (default .dev/gpu-bundle, ignored by
# git) so they fit the transfer limit.
#
#   source .toolchains/cuda/env.sh && scripts/build-gpu-bundle.sh [BUNDLE]
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUNDLE=${1:-$REPO/.dev/gpu-bundle}
cd "$REPO"
rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
cargo build --release --features cuda --example embed
cargo test --release --features cuda --no-run --message-format=json --test ops --test parity --test embed_cli \
  | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
' "$BUNDLE"
cp target/release/examples/embed "$BUNDLE/embed"
for f in "$BUNDLE"/*; do strip "$f"; xz -T2 -6 "$f"; done
ls -la "$BUNDLE"
