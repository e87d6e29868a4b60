#!/usr/bin/env python3
"""Reference outputs of `transformers`' own GGUF loading, for latentevo's GGUF tests.

transformers reads the GGUF (`from_pretrained(dir, gguf_file=...)`), dequantizes it and
builds a LlamaForCausalLM plus a tokenizer from the metadata; this script records
- the token ids of a varied set of strings (unicode, whitespace runs, code, digits,
  special tokens, a rendered chat),
- the logits of a few prompts (all positions with --full, else the last position's
  top-20 ids and values plus the values at a fixed set of ids),
- with --fingerprints, row and column sums of every weight in Hugging Face names,
  which pin the layout (the q/k un-permutation) without storing the weights,
- the config fields latentevo derives from the metadata.

Usage:
  python scripts/gguf_reference.py models/tiny-gguf/tiny-q.gguf --full --fingerprints \
      --out models/tiny-gguf/reference-tiny-q.json
  python scripts/gguf_reference.py /path/SmolLM2-135M-Instruct.Q4_1.gguf \
      --out models/tiny-gguf/reference-smollm2.json
"""

import argparse
import json
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

STRINGS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing   ",
    "tabs\tand\nnewlines\n\n\nand\r\nCRLF",
    "     ",
    "digits 0123456789 3.14159 1,000,000 2024-01-01 x1y22z333",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|i| i * i).collect();\n}",
    "def f(a, b):\n    return a + b  # sum\n",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe",
    "\u4f60\u597d\uff0c\u4e16\u754c \u3053\u3093\u306b\u3061\u306f \ud55c\uad6d\uc5b4",
    "emoji \U0001f600\U0001f680 and \u2764\ufe0f symbols \u00a9\u00ae\u2122 \u2200x\u2208\u211d",
    "I'm you're they'll we've she'd it's DON'T WON'T",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more<think>inside</think>",
    "<html><body class=\"x\">a &amp; b</body></html>",
    "",
]

PROMPTS = [
    "The capital of France is",
    "Give me three unusual uses for a brick.",
    "def fibonacci(n):\n    if n <",
    "In 1492, Columbus sailed",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--out", required=True)
    ap.add_argument("--full", action="store_true", help="store the logits of every position")
    ap.add_argument("--fingerprints", action="store_true", help="store row/column sums of every weight")
    args = ap.parse_args()

    d, f = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    cfg = model.config

    chat = tok.apply_chat_template(
        [{"role": "user", "content": "Give me three unusual uses for a brick."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    strings = STRINGS + [chat]
    out = {
        "gguf": f,
        "transformers_config": {
            k: getattr(cfg, k, None)
            for k in [
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "rms_norm_eps",
                "vocab_size",
                "max_position_embeddings",
                "tie_word_embeddings",
                "bos_token_id",
                "eos_token_id",
            ]
        },
        "rope_theta": (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", None)),
        "chat": chat,
        "tokens": [{"text": s, "ids": tok(s, add_special_tokens=True)["input_ids"]} for s in strings],
        "decoded": [tok.decode(tok(s)["input_ids"]) for s in strings],
        "logits": [],
    }
    probe_ids = list(range(0, cfg.vocab_size, max(1, cfg.vocab_size // 16)))
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok(p)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0].float()
            entry = {"prompt": p, "ids": ids}
            if args.full:
                entry["logits"] = [[round(float(x), 6) for x in row] for row in logits]
            last = logits[-1]
            top = torch.topk(last, 20)
            entry["last_top20_ids"] = top.indices.tolist()
            entry["last_top20_values"] = [round(float(x), 5) for x in top.values]
            entry["probe_ids"] = probe_ids
            entry["last_probe_values"] = [round(float(last[i]), 5) for i in probe_ids]
            out["logits"].append(entry)
        if args.fingerprints:
            fp = {}
            for name, t in model.state_dict().items():
                t = t.float()
                if t.ndim == 1:
                    fp[name] = {"shape": list(t.shape), "values": [round(float(x), 6) for x in t]}
                else:
                    fp[name] = {
                        "shape": list(t.shape),
                        "row_sums": [round(float(x), 5) for x in t.sum(1)],
                        "col_sums": [round(float(x), 5) for x in t.sum(0)],
                    }
            out["fingerprints"] = fp
    with open(args.out, "w") as fh:
        json.dump(out, fh, ensure_ascii=False, separators=(",", ":"))
        fh.write("\n")
    print("wrote", args.out, os.path.getsize(args.out), "bytes")


if __name__ == "__main__":
    main()
