#!/usr/bin/env python3
"""Forward throughput of latentevo (Rust, candle) and transformers (PyTorch), same run.

Runs `latentevo bench --json` and the same measurement in transformers on the same
checkpoint, prompt length, decoding steps and population sizes, then prints a table with
the ratio latentevo / transformers (> 1 means latentevo is faster).

    cargo build --release
    ./.venv/bin/python scripts/bench_forward.py --model models/tiny/mixtral
    ./.venv/bin/python scripts/bench_forward.py --model path/to/SmolLM2-135M-Instruct.Q4_1.gguf

Prefill: one forward pass over [population, prompt_tokens]; decode: `new_tokens` steps of
one token per sequence with the KV cache. Best of `--repeats` timed runs after a warm-up.
Both use f32 on CPU and every core the machine has.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def transformers_bench(model_dir, populations, prompt_tokens, new_tokens, repeats):
    import torch
    from transformers import AutoModelForCausalLM

    if model_dir.endswith(".gguf"):  # transformers dequantizes GGUF itself
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(model_dir) or ".", gguf_file=os.path.basename(model_dir), dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size
    prompt = [(i * 2654435761 + 12345) % vocab for i in range(prompt_tokens)]
    rows = []
    with torch.no_grad():
        for n in populations:
            ids = torch.tensor([prompt] * n, dtype=torch.long)
            best_prefill = best_decode = float("inf")
            for repeat in range(repeats + 1):
                start = time.perf_counter()
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                past = out.past_key_values
                _ = out.logits[:, -1].float().numpy()
                prefill = time.perf_counter() - start
                start = time.perf_counter()
                for step in range(new_tokens):
                    nxt = torch.tensor([[(r + step * 7 + 3) % vocab] for r in range(n)], dtype=torch.long)
                    out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                    past = out.past_key_values
                    _ = out.logits[:, -1].float().numpy()
                decode = time.perf_counter() - start
                if repeat > 0:
                    best_prefill = min(best_prefill, prefill)
                    best_decode = min(best_decode, decode)
            rows.append({
                "population": n,
                "prefill_tokens_per_s": n * prompt_tokens / best_prefill,
                "decode_tokens_per_s": n * new_tokens / best_decode if new_tokens else 0.0,
            })
    return rows, torch.__version__, torch.get_num_threads()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/tiny/mixtral")
    p.add_argument("--binary", default="target/release/latentevo")
    p.add_argument("--populations", default="1,8,32")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    populations = [int(x) for x in args.populations.split(",")]
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} not found: run `cargo build --release` first")
    cmd = [args.binary, "bench", "--model", args.model, "--populations", args.populations,
           "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens),
           "--repeats", str(args.repeats), "--json"]
    rust = [json.loads(line) for line in subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()]
    torch_rows, torch_version, threads = transformers_bench(
        args.model, populations, args.prompt_tokens, args.new_tokens, args.repeats)
    import transformers
    print(f"model {args.model}; prompt {args.prompt_tokens} tokens, {args.new_tokens} decode steps; "
          f"best of {args.repeats}; transformers {transformers.__version__}, torch {torch_version} "
          f"({threads} threads), CPU f32\n")
    print("| population | latentevo prefill tok/s | transformers prefill tok/s | ratio "
          "| latentevo decode tok/s | transformers decode tok/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r, t in zip(rust, torch_rows):
        assert r["population"] == t["population"]
        print(f"| {r['population']} | {r['prefill_tokens_per_s']:.0f} | {t['prefill_tokens_per_s']:.0f} | "
              f"{r['prefill_tokens_per_s'] / t['prefill_tokens_per_s']:.2f} | {r['decode_tokens_per_s']:.0f} | "
              f"{t['decode_tokens_per_s']:.0f} | {r['decode_tokens_per_s'] / t['decode_tokens_per_s']:.2f} |")


if __name__ == "__main__":
    main()
