#!/usr/bin/env bash
# Builds, on a machine without a GPU, what scripts/gpu/check.sh runs on one: the CUDA
# build of the `latentevo` binary and of the model crate's golden and MoE-path tests,
# stripped and packed into target-gpu/gpu-bin.tar.xz (28 MB; a carried folder and the
# working tree may hold 64 MiB together, gzip gives 56 MB). Run from the project root:
#
#   bash scripts/gpu/stage.sh
#
# then carry `target-gpu` to the GPU machine and run `bash scripts/gpu/check.sh` there.
# The CUDA toolchain comes from ../shared/scripts/cuda-build-env.sh (CUDA 13.0 wheels and a
# stub libcuda for linking; kernels for sm_90). First build ~20 min on 2 cores; the build
# goes to target-cuda/ (or $CARGO_TARGET_DIR) so the CPU build in target/ is left alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
source ../shared/scripts/cuda-build-env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-cuda}"
cargo build --release --features cuda --bin latentevo
tests=$(cargo test --release --features cuda -p latentevo-model --test golden --test moe_path --no-run \
  --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
rm -rf target-gpu && mkdir -p target-gpu/bin
cp "$CARGO_TARGET_DIR/release/latentevo" target-gpu/bin/
while read -r name path; do cp "$path" "target-gpu/bin/$name"; done <<<"$tests"
for f in target-gpu/bin/*; do strip --strip-debug "$f"; done
for t in golden moe_path; do
  [ -x "target-gpu/bin/$t" ] || { echo "test binary $t was not built" >&2; exit 1; }
done
tar -C target-gpu -cJf target-gpu/gpu-bin.tar.xz bin && rm -rf target-gpu/bin
ls -l target-gpu/gpu-bin.tar.xz
echo "staged: carry target-gpu, run bash scripts/gpu/check.sh"
