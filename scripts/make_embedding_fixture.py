#!/usr/bin/env python3
"""Builds the tiny sentence-embedding fixture `models/tiny/minilm/`.

A random BERT with the architecture of all-MiniLM-L6-v2 but tiny (hidden 32, 2 layers,
4 heads, intermediate 64, 64 positions), a WordPiece vocabulary built from a fixed word
list (special tokens, the letters and digits as words and `##` pieces, punctuation, and
the words below), saved in the sentence-transformers layout (config.json,
model.safetensors, tokenizer.json, modules.json, sentence_bert_config.json with
max_seq_length 24, 1_Pooling/config.json with mean pooling, Normalize; the file layout
all-MiniLM-L6-v2 is published in), so that
`latentevo_reward::Embedder::load` reads it exactly as it reads the real model. It is
what the fast tests and the engine's tests embed with.

Then it reloads the directory with sentence-transformers and writes `reference.json`:
the texts (an empty string, unknown words, CJK, a text longer than max_seq_length) and
their embeddings, for `crates/reward/tests/embed.rs`.

Deterministic (torch.manual_seed(0)); float32 on CPU. Needs torch, transformers,
tokenizers and sentence-transformers==6.2.0 (scripts/requirements.txt):

    ./.venv/bin/python scripts/make_embedding_fixture.py --out models/tiny/minilm
"""

import argparse
import json
import shutil
import string
import sys
from pathlib import Path

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer, models
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import BertConfig, BertModel, BertTokenizerFast

WORDS = """
the a an and or of to in on for with as is are was be it this that by from at not but
can use used uses make made new idea ideas three two one unusual brick bricks wall walls
house garden door stop book end heat store small large red old stone clay fire kiln
water build built builder road oven chimney tower city give me you your we they he she
quick brown fox jumps over lazy dog cat bird tree sun moon star rocket music art paint
color blue green yellow white black light dark warm cold hot fast slow good bad happy sad
write read story poem song dance game play toy tool weapon art craft science idea plan
""".split()

MAX_SEQ = 24

TEXTS = [
    "Give me three unusual uses for a brick.",
    "",
    "A brick can make a small garden wall or a heat store.",
    "Zebras quizzically juggle xylophones!",
    "東京 rocket 🚀 café",
    " ".join(["the quick brown fox jumps over the lazy dog"] * 4),
    "red brick, blue door; old stone tower",
]


README = """# models/tiny/minilm

A tiny random BERT sentence embedder in the sentence-transformers layout that
all-MiniLM-L6-v2 is published in (`modules.json`: Transformer, mean Pooling, Normalize;
`sentence_bert_config.json`: max_seq_length 24): hidden 32, 2 layers, 4 heads, a WordPiece
vocabulary of 230 entries. Random weights: its vectors mean nothing, but
`latentevo_reward::Embedder::load` reads it exactly as it reads the real model, so tests
can embed with it quickly. `reference.json` holds sentence-transformers' embeddings of 7
texts (one empty, one truncated), checked by `crates/reward/tests/embed.rs`.

Made by `scripts/make_embedding_fixture.py` (deterministic).
"""


def vocabulary() -> list[str]:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(string.punctuation)
    vocab += list(string.ascii_lowercase) + list(string.digits)
    vocab += ["##" + c for c in string.ascii_lowercase + string.digits]
    for w in WORDS:
        if w not in vocab:
            vocab.append(w)
    return vocab


def tokenizer(vocab: list[str]) -> Tokenizer:
    tok = Tokenizer(WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def published_layout(out: Path) -> None:
    """Rewrites the sentence-transformers files in the layout all-MiniLM-L6-v2 is
    published in (sentence-transformers 2.x), which current versions still load."""
    for junk in ["README.md", "vocab.txt", "special_tokens_map.json", "config_sentence_transformers.json"]:
        (out / junk).unlink(missing_ok=True)
    shutil.rmtree(out / "2_Normalize")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {
        "word_embedding_dimension": 32,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": MAX_SEQ, "do_lower_case": False}) + "\n")
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("models/tiny/minilm"))
    args = ap.parse_args()
    torch.manual_seed(0)
    vocab = vocabulary()
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )
    bert = BertModel(config, add_pooling_layer=False).eval()
    # Larger-than-default weights, so that the texts' embeddings differ clearly.
    with torch.no_grad():
        for p in bert.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    fast = BertTokenizerFast(tokenizer_object=tokenizer(vocab), do_lower_case=True, model_max_length=64,
                             unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                             mask_token="[MASK]")
    if args.out.exists():
        shutil.rmtree(args.out)
    raw = args.out / "_hf"
    bert.save_pretrained(raw, safe_serialization=True)
    fast.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=MAX_SEQ)
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    st = SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu")
    st.save(str(args.out))
    shutil.rmtree(raw)
    published_layout(args.out)

    st = SentenceTransformer(str(args.out), device="cpu").eval()
    assert st.max_seq_length == MAX_SEQ
    emb = st.encode(TEXTS, batch_size=3, convert_to_numpy=True)
    counts = [len(st.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert max(counts) > MAX_SEQ, "one text must be truncated"
    ref = {
        "sentence_transformers": sentence_transformers.__version__,
        "max_seq_length": MAX_SEQ,
        "texts": TEXTS,
        "token_counts": counts,
        "embeddings": [[float(x) for x in row] for row in emb],
    }
    (args.out / "reference.json").write_text(json.dumps(ref, ensure_ascii=False) + "\n")
    (args.out / "README.md").write_text(README)
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    files = sorted(str(f.relative_to(args.out)) for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.out}: {total} bytes, {files}; vocab {len(vocab)}, token counts {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
