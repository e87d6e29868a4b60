#!/usr/bin/env python3
"""One forward pass with Hugging Face `transformers`, printed as JSON in the same format as
`latentevo forward --json`, so the two can be diffed:

    {"ids": [..], "logits": [[..] per position], "routing": [[[expert ids, rank order] per position] per MoE layer]}

Usage:
    ./.venv/bin/python scripts/reference_forward.py models/tiny/mixtral --prompt "Hello world"
    ./.venv/bin/python scripts/reference_forward.py models/tiny/mixtral --ids 1,2,3

`--prompt` is tokenized with the directory's tokenizer.json, no special tokens added.
float32, CPU, eager attention, batch 1, no padding. `routing` is [] for dense models.
Any local checkpoint directory of a supported family works (not only the fixtures).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import RoutingRecorder  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="checkpoint directory (config.json + safetensors [+ tokenizer.json])")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt")
    g.add_argument("--ids", help="comma-separated token ids")
    ap.add_argument("--last", action="store_true", help="only the last position's logits")
    args = ap.parse_args()

    d = Path(args.model)
    if args.ids is not None:
        ids = [int(x) for x in args.ids.split(",") if x.strip()]
    else:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        ids = tok.encode(args.prompt, add_special_tokens=False).ids
    if not ids:
        sys.exit("no input ids")

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(d), attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    rec = RoutingRecorder(model)
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
    logits = out.logits[0].float()
    if args.last:
        logits = logits[-1:]
    routing = []
    for li, _ in rec.routers:
        _, idx = rec.records[li]
        routing.append(idx.reshape(len(ids), -1).tolist())
    json.dump({"ids": ids, "logits": logits.tolist(), "routing": routing}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
