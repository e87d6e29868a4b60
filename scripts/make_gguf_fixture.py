#!/usr/bin/env python3
"""Write the tiny GGUF fixtures under models/tiny-gguf/ (deterministic).

Two llama-architecture GGUF files shaped like SmolLM2's (a byte-level BPE "gpt2"
tokenizer with the `smollm` pre-tokenizer, special tokens <|endoftext|> <|im_start|>
<|im_end|> at ids 0..2, a chat template, q/k weights permuted the llama.cpp way):

- tiny-q.gguf: tied embeddings (no output.weight), token_embd in Q8_0, the layers'
  matrices in Q4_1, norms in F32 -- the same mix as the real SmolLM2 Q4_1 file;
- tiny-f.gguf: an untied output.weight, matrices in F32 and F16.

Then run scripts/gguf_reference.py to write models/tiny-gguf/reference-*.json.

Needs: numpy, gguf, tokenizers (the venv the project's scripts use).
Usage: python scripts/make_gguf_fixture.py [--out models/tiny-gguf]
"""

import argparse
import os

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, TokenType
from gguf.quants import quantize
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders

HIDDEN = 64
INTERMEDIATE = 128
LAYERS = 2
HEADS = 4
KV_HEADS = 2
VOCAB_TARGET = 400
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
USER_DEFINED = ["<think>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TRAIN_TEXT = """
Now it came to pass in the days when the judges ruled, that there was a famine in the land.
The quick brown fox jumps over the lazy dog. 0123456789 3.14159 2024-01-01 1,000,000
fn main() { let x = vec![1, 2, 3]; println!("{:?}", x); }
def f(a, b):\n    return a + b  # comment
    indented    lines\twith\ttabs and   runs of   spaces
Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe \u4f60\u597d \u3053\u3093\u306b\u3061\u306f \U0001f600 emoji!
I'm you're they'll we've she'd it's DON'T Hello, World! <html><body>x</body></html>
"""


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        special_tokens=CONTROL + USER_DEFINED,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TRAIN_TEXT] * 20, trainer=trainer)
    return tok


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (HF -> GGUF)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_weights(vocab: int, rng: np.random.Generator, untied: bool) -> dict:
    """Random weights in Hugging Face names and layout ([out, in])."""
    head_dim = HIDDEN // HEADS
    w = {"model.embed_tokens.weight": rng.normal(0, 0.5, (vocab, HIDDEN))}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1.0 + rng.normal(0, 0.1, HIDDEN)
        w[p + "post_attention_layernorm.weight"] = 1.0 + rng.normal(0, 0.1, HIDDEN)
        w[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.15, (HEADS * head_dim, HIDDEN))
        w[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.15, (KV_HEADS * head_dim, HIDDEN))
        w[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.15, (KV_HEADS * head_dim, HIDDEN))
        w[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.15, (HIDDEN, HEADS * head_dim))
        w[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.15, (INTERMEDIATE, HIDDEN))
        w[p + "mlp.up_proj.weight"] = rng.normal(0, 0.15, (INTERMEDIATE, HIDDEN))
        w[p + "mlp.down_proj.weight"] = rng.normal(0, 0.1, (HIDDEN, INTERMEDIATE))
    w["model.norm.weight"] = 1.0 + rng.normal(0, 0.1, HIDDEN)
    if untied:
        w["lm_head.weight"] = rng.normal(0, 0.3, (vocab, HIDDEN))
    return {k: v.astype(np.float32) for k, v in w.items()}


GGUF_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{GGUF_NAMES[rest.removesuffix('.weight')]}.weight"


def write(path: str, tok: Tokenizer, quantized: bool, seed: int) -> None:
    vocab_map = tok.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab_map.items(), key=lambda kv: kv[1])]
    assert [vocab_map[t] for t in tokens] == list(range(len(tokens)))
    import json

    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    types = [
        TokenType.CONTROL if t in CONTROL else TokenType.USER_DEFINED if t in USER_DEFINED else TokenType.NORMAL
        for t in tokens
    ]

    rng = np.random.default_rng(seed)
    weights = hf_weights(len(tokens), rng, untied=not quantized)

    w = GGUFWriter(path, "llama")
    w.add_name("latentevo tiny gguf fixture")
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTERMEDIATE)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    for name, arr in weights.items():
        if name.endswith("q_proj.weight"):
            arr = permute(arr, HEADS)
        elif name.endswith("k_proj.weight"):
            arr = permute(arr, KV_HEADS)
        gname = gguf_name(name)
        if arr.ndim == 1:
            w.add_tensor(gname, arr)
        elif quantized:
            qtype = GGMLQuantizationType.Q8_0 if gname == "token_embd.weight" else GGMLQuantizationType.Q4_1
            w.add_tensor(gname, quantize(arr, qtype), raw_dtype=qtype)
        elif "ffn" in gname:
            w.add_tensor(gname, arr.astype(np.float16))
        else:
            w.add_tensor(gname, arr)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="models/tiny-gguf")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tok = train_tokenizer()
    write(os.path.join(args.out, "tiny-q.gguf"), tok, quantized=True, seed=1)
    write(os.path.join(args.out, "tiny-f.gguf"), tok, quantized=False, seed=2)
    for f in ("tiny-q.gguf", "tiny-f.gguf"):
        print(f, os.path.getsize(os.path.join(args.out, f)), "bytes")


if __name__ == "__main__":
    main()
