#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 240) each, one after another, with the
# committed seeds; new inputs go to corpus/TARGET (not committed), crashes to
# artifacts/TARGET. Needs cargo-fuzz (`cargo install cargo-fuzz`); the toolchain may be
# stable, hence RUSTC_BOOTSTRAP=1.
#   fuzz/run.sh [SECONDS] [TARGET...]
set -u
cd "$(dirname "$0")"
secs="${1:-240}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(gguf gguf_header config_json safetensors_index safetensors tokenizer_json reward_spec reward_toml)
fi
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: ${secs}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -timeout=20 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 || status=1
done
exit $status
