#!/usr/bin/env bash
# The one GPU check (an NVIDIA H200, CUDA 13 driver), from the project root, after
# scripts/gpu/stage.sh built target-gpu/gpu-bin.tar.xz on the build machine:
#
#   bash scripts/gpu/check.sh            # writes its log and figures to $OUT (or ./out/gpu)
#
# 1. the golden fixtures on the GPU (LATENTEVO_TEST_DEVICE=cuda): f32 against transformers
#    within 1e-4 (as on the CPU), bf16 within 0.2 and f16 within 0.035 with the expert ids
#    checked wherever the router-logit error cannot have flipped them;
# 2. the MoE paths on the GPU: the device path (f32: every expert on every token) against
#    the host path, same routes, drift and shadowed generation;
# 3. on an OLMoE-1B-7B-shaped random-weight model (64 experts, top-8, 16 layers, hidden
#    2048; scripts/gpu/olmoe-1b-7b-config.json) in bf16: prefill at 16x256 and 64x256,
#    decode at batch 1 and 16, and a search round (16 candidates, 64-token prompt, 32 new
#    tokens, perturbation at layer 4, routing locked), on the device path (fused moe_gemm,
#    no host sync inside a forward) and on the host path (one sync per MoE layer).
#
# Expected: both test binaries print `test result: ok`; the bench lines print tokens/s and
# seconds beside transformers' figures for the same shapes on an H200 (transformers 5.17,
# torch 2.11, bf16): prefill 79.3k tok/s at 16x256 and 90.3k at 64x256, decode 31 tok/s at
# batch 1 and 696 at batch 16, round 0.94 s. Goals: round <= 0.31 s, prefill >= 190k tok/s.
# About 3-5 minutes once the machine is up; every step has a timeout, 9 minutes in all, so
# the whole check fits in one 10-minute job.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out/gpu}"
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
exec > >(tee "$LOG") 2>&1
export LD_LIBRARY_PATH="/usr/lib:/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}"
if ! ls /usr/local/cuda-13.0/targets/x86_64-linux/lib/libcublas.so.13 >/dev/null 2>&1; then
  lib=$(find / -xdev -name 'libcublas.so.13' 2>/dev/null | head -1)
  [ -n "$lib" ] && export LD_LIBRARY_PATH="$(dirname "$lib"):$LD_LIBRARY_PATH"
fi
BIN="$PWD/target-gpu/bin"
[ -f target-gpu/gpu-bin.tar.xz ] || { echo "no target-gpu/gpu-bin.tar.xz: run scripts/gpu/stage.sh first"; exit 1; }
tar -C target-gpu -xJf target-gpu/gpu-bin.tar.xz 2>/dev/null \
  || python3 -c 'import tarfile; tarfile.open("target-gpu/gpu-bin.tar.xz").extractall("target-gpu")' \
  || { echo "cannot unpack target-gpu/gpu-bin.tar.xz (neither xz nor python3 here)"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
status=0
step() { # name, timeout in s, file for its stdout (or /dev/null), command...
  local name=$1 limit=$2 file=$3; shift 3
  echo "== $name"
  local start=$SECONDS
  timeout "$limit" "$@" | tee "$file"; local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc, $((SECONDS - start)) s"
  [ $rc -eq 0 ] || status=1
}
# A rehearsal on the build machine: GPU_CHECK_DEVICE=cpu GPU_CHECK_CONFIG=models/tiny/olmoe/config.json
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
CONFIG="${GPU_CHECK_CONFIG:-scripts/gpu/olmoe-1b-7b-config.json}"
export LATENTEVO_TEST_DEVICE="$DEVICE" LATENTEVO_FIXTURES="$PWD/models/tiny"
step "golden fixtures on the GPU (f32, bf16, f16)" 150 /dev/null "$BIN/golden" --test-threads 1 --nocapture
step "MoE device path vs host path on the GPU" 60 /dev/null "$BIN/moe_path" --test-threads 1
unset LATENTEVO_TEST_DEVICE
MODEL=(--random-config "$CONFIG" --device "$DEVICE" --dtype bf16)
step "prefill and decode, OLMoE-1B-7B shape, bf16" 150 "$OUT/forward.jsonl" \
  "$BIN/latentevo" bench "${MODEL[@]}" --populations 1,16,64 --prompt-tokens 256 --new-tokens 32 --repeats 3 --json
for path in device host; do
  step "round, OLMoE-1B-7B shape, bf16, MoE path $path" 90 "$OUT/round-$path.jsonl" \
    "$BIN/latentevo" bench "${MODEL[@]}" --moe-path "$path" --round --shared-only --layer 4 \
    --populations 16,64 --prompt-tokens 64 --new-tokens 32 --repeats 2 --json
done
echo "== reference (transformers 5.17 / torch 2.11, H200, bf16): prefill 79.3k tok/s at 16x256, 90.3k at 64x256;"
echo "   decode 31 tok/s at batch 1, 696 at batch 16; round (16 x 64 prompt x 32 new) 0.94 s."
echo "== goals: round <= 0.31 s, prefill >= 190k tok/s"
exit $status
