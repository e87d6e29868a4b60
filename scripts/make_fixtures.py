#!/usr/bin/env python3
"""Build the tiny random test checkpoints and their reference outputs (models/tiny/<family>/).

Everything is generated locally (no hub access): a byte-level BPE tokenizer trained on
tests/data/tokenizer_corpus.txt, one tiny random checkpoint per family written in the
layout published Hugging Face checkpoints use, and reference logits / routing / greedy
continuations computed with Hugging Face `transformers` (float32, CPU, eager attention).

Usage:
    ./.venv/bin/python scripts/make_fixtures.py --out models/tiny [--families mixtral,llama]

The script is deterministic (fixed seeds); rerunning it rewrites the same files.
See models/tiny/README.md for the format and the per-family notes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "tokenizer_corpus.txt"

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 512
BOS_ID = 0  # <|endoftext|>, as SmolLM2 (bos = eos = <|endoftext|>)
EOS_ID = 0
PAD_ID = 0

PROMPTS = [
    "Hello world",  # 3 tokens
    "The model reads the token.",  # 8 tokens
    "print(i, 2024)",  # 9 tokens: code + digits
    "café 日本",  # 12 tokens: multi-byte UTF-8 split across byte-level tokens
]
GREEDY_NEW_TOKENS = 8

# Weight initialisation (larger than transformers' default so logits/routing are non-trivial).
STD_MATRIX = 0.15
STD_EMBED = 0.15  # per-family override: FAMILIES[f]["embed_std"]
STD_ROUTER = 0.35
STD_BIAS = 0.1
NORM_JITTER = 0.1  # norm weights = 1 + NORM_JITTER * N(0, 1)
MIN_ROUTING_GAP = 5e-3  # adjacent sorted router logits down to rank k+1, every reference decision
MIN_GREEDY_GAP = 5e-3  # top-1 vs top-2 logit at every greedy step
MAX_SEED_TRIES = 64  # the seed is advanced until both margins hold

COMMON = dict(
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
    max_position_embeddings=256,
    vocab_size=VOCAB_SIZE,
    bos_token_id=BOS_ID,
    eos_token_id=EOS_ID,
    pad_token_id=PAD_ID,
    hidden_act="silu",
    initializer_range=0.02,
    attention_dropout=0.0,
    use_cache=True,
)

# family -> (architecture, config kwargs, seed, rope form in config.json, sharded?)
FAMILIES = {
    "mixtral": dict(
        arch="MixtralForCausalLM",
        seed=1001,
        rope="classic",
        sharded=True,
        config=dict(
            num_hidden_layers=2,
            head_dim=16,
            intermediate_size=32,
            num_local_experts=8,
            num_experts_per_tok=2,
            sliding_window=None,
            router_jitter_noise=0.0,
            router_aux_loss_coef=0.02,
            tie_word_embeddings=False,
            rope_theta=10000.0,
        ),
    ),
    "qwen2_moe": dict(
        arch="Qwen2MoeForCausalLM",
        seed=2002,
        rope="classic",
        sharded=False,
        config=dict(
            num_hidden_layers=3,
            intermediate_size=64,  # dense MLP of mlp_only_layers
            moe_intermediate_size=32,
            shared_expert_intermediate_size=48,
            num_experts=6,
            num_experts_per_tok=2,
            norm_topk_prob=False,
            decoder_sparse_step=1,
            mlp_only_layers=[1],
            qkv_bias=True,
            use_sliding_window=False,
            sliding_window=None,
            max_window_layers=3,
            router_aux_loss_coef=0.001,
            tie_word_embeddings=False,
            rope_theta=10000.0,
        ),
    ),
    "qwen3_moe": dict(
        arch="Qwen3MoeForCausalLM",
        seed=3003,
        rope="rope_parameters",
        sharded=False,
        config=dict(
            num_hidden_layers=2,
            head_dim=32,  # != hidden/heads (=16), like Qwen3-30B-A3B (2048/32=64 but head_dim 128)
            intermediate_size=64,  # unused (no mlp_only_layers) but written to config.json
            moe_intermediate_size=32,
            num_experts=8,
            num_experts_per_tok=3,
            norm_topk_prob=True,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            attention_bias=False,
            use_sliding_window=False,
            sliding_window=None,
            router_aux_loss_coef=0.001,
            tie_word_embeddings=False,
            rope_theta=10000.0,
        ),
    ),
    "olmoe": dict(
        arch="OlmoeForCausalLM",
        seed=4004,
        rope="classic",
        sharded=False,
        config=dict(
            num_hidden_layers=2,
            intermediate_size=32,
            num_experts=8,
            num_experts_per_tok=2,
            norm_topk_prob=False,
            clip_qkv=None,
            attention_bias=False,
            router_aux_loss_coef=0.01,
            tie_word_embeddings=False,
            rope_theta=10000.0,
        ),
    ),
    "granitemoe": dict(
        arch="GraniteMoeForCausalLM",
        seed=5005,
        embed_std=0.05,  # x embedding_multiplier 12 -> ~0.6, like trained Granite embeddings
        lm_head_std=0.6,  # logits are divided by logits_scaling=6
        rope="classic",
        sharded=False,
        config=dict(
            num_hidden_layers=2,
            intermediate_size=32,
            num_local_experts=4,
            num_experts_per_tok=2,
            embedding_multiplier=12.0,
            residual_multiplier=0.22,
            attention_multiplier=0.15,  # replaces 1/sqrt(head_dim)=0.25
            logits_scaling=6.0,  # logits are DIVIDED by this
            attention_bias=False,
            router_aux_loss_coef=0.001,
            # untied here (tied, the 12x-scaled input embedding dominates and greedy just repeats
            # the last token); tying is covered by the llama fixture.
            tie_word_embeddings=False,
            rope_theta=10000.0,
        ),
    ),
    "llama": dict(
        arch="LlamaForCausalLM",
        seed=6006,
        rope="classic",
        sharded=False,
        config=dict(
            num_hidden_layers=2,
            head_dim=16,
            intermediate_size=96,
            attention_bias=False,
            mlp_bias=False,
            pretraining_tp=1,
            tie_word_embeddings=True,
            rope_theta=10000.0,
        ),
    ),
}


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------
def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = CORPUS.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    tok.train_from_iterator(lines, trainer=trainer)
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def write_tokenizer(tok, d: Path):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )
    fast.save_pretrained(str(d))
    # Keep the raw tokenizer.json exactly as the `tokenizers` library writes it.
    tok.save(str(d / "tokenizer.json"))


# --------------------------------------------------------------------------------------
# Model construction / weights
# --------------------------------------------------------------------------------------
def make_config(family: str):
    spec = FAMILIES[family]
    cfg_cls = transformers.AutoConfig.for_model
    kw = dict(COMMON)
    kw.update(spec["config"])
    model_type = family
    cfg = cfg_cls(model_type, **kw)
    cfg.architectures = [spec["arch"]]
    cfg.dtype = torch.float32
    return cfg


def randomise_(model, seed: int, embed_std: float = STD_EMBED, lm_head_std: float = STD_MATRIX):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            shape = p.shape
            if "norm" in name and p.dim() == 1:
                val = 1.0 + NORM_JITTER * torch.randn(shape, generator=g)
            elif name.endswith("bias"):
                val = STD_BIAS * torch.randn(shape, generator=g)
            elif "embed_tokens" in name:
                val = embed_std * torch.randn(shape, generator=g)
            elif name == "lm_head.weight":
                val = lm_head_std * torch.randn(shape, generator=g)
            elif name.endswith("mlp.gate.weight") or name.endswith(".router.weight"):
                val = STD_ROUTER * torch.randn(shape, generator=g)
            elif "shared_expert_gate" in name:
                val = 0.3 * torch.randn(shape, generator=g)
            else:
                val = STD_MATRIX * torch.randn(shape, generator=g)
            p.copy_(val.to(p.dtype))


def routers(model):
    """[(layer_index, router_module)] for every MoE layer, in layer order."""
    out = []
    for i, layer in enumerate(model.model.layers):
        moe = getattr(layer, "block_sparse_moe", None) or getattr(layer, "mlp", None)
        r = getattr(moe, "router", None) or getattr(moe, "gate", None)
        if r is not None and hasattr(r, "top_k") and not isinstance(r, torch.nn.Linear):
            out.append((i, r))
    return out


# --------------------------------------------------------------------------------------
# Hub layout conversion (transformers 5 internal -> published checkpoint layout)
# --------------------------------------------------------------------------------------
def to_hub_layout(family: str, sd: dict, cfg) -> dict:
    out = {}
    for k, v in sd.items():
        v = v.detach().contiguous().to(torch.float32)
        if family == "mixtral":
            if ".mlp.experts.gate_up_proj" in k:
                pre = k.split(".mlp.experts.gate_up_proj")[0] + ".block_sparse_moe.experts"
                inter = v.shape[1] // 2
                for e in range(v.shape[0]):
                    out[f"{pre}.{e}.w1.weight"] = v[e, :inter].clone()
                    out[f"{pre}.{e}.w3.weight"] = v[e, inter:].clone()
                continue
            if ".mlp.experts.down_proj" in k:
                pre = k.split(".mlp.experts.down_proj")[0] + ".block_sparse_moe.experts"
                for e in range(v.shape[0]):
                    out[f"{pre}.{e}.w2.weight"] = v[e].clone()
                continue
            if ".mlp.gate.weight" in k:
                out[k.replace(".mlp.gate.weight", ".block_sparse_moe.gate.weight")] = v
                continue
        elif family in ("qwen2_moe", "qwen3_moe", "olmoe"):
            if k.endswith(".mlp.experts.gate_up_proj"):
                pre = k[: -len(".gate_up_proj")]
                inter = v.shape[1] // 2
                for e in range(v.shape[0]):
                    out[f"{pre}.{e}.gate_proj.weight"] = v[e, :inter].clone()
                    out[f"{pre}.{e}.up_proj.weight"] = v[e, inter:].clone()
                continue
            if k.endswith(".mlp.experts.down_proj"):
                pre = k[: -len(".down_proj")]
                for e in range(v.shape[0]):
                    out[f"{pre}.{e}.down_proj.weight"] = v[e].clone()
                continue
        elif family == "granitemoe":
            if k.endswith(".block_sparse_moe.experts.gate_up_proj"):
                out[k.replace(".experts.gate_up_proj", ".input_linear.weight")] = v
                continue
            if k.endswith(".block_sparse_moe.experts.down_proj"):
                out[k.replace(".experts.down_proj", ".output_linear.weight")] = v
                continue
            if k.endswith(".block_sparse_moe.router.weight"):
                out[k.replace(".router.weight", ".router.layer.weight")] = v
                continue
        out[k] = v.clone()
    if cfg.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    return out


def layer_sort_key(k: str):
    parts = k.split(".")
    key = []
    for p in parts:
        key.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return key


def write_weights(d: Path, tensors: dict, sharded: bool):
    for f in d.glob("model*.safetensors*"):
        f.unlink()
    meta = {"format": "pt"}
    keys = sorted(tensors, key=layer_sort_key)
    if not sharded:
        save_file({k: tensors[k] for k in keys}, str(d / "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    # Two shards, split at a layer boundary-ish point by cumulative size.
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    shard1, acc = [], 0
    for k in keys:
        if acc < total / 2:
            shard1.append(k)
            acc += tensors[k].numel() * tensors[k].element_size()
    shard2 = [k for k in keys if k not in set(shard1)]
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {}
    for name, ks in zip(names, [shard1, shard2]):
        save_file({k: tensors[k] for k in ks}, str(d / name), metadata=meta)
        for k in ks:
            weight_map[k] = name
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items(), key=lambda kv: layer_sort_key(kv[0])))}
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return names


def rewrite_config(d: Path, family: str, cfg):
    """Write config.json the way hub checkpoints look; classic families get top-level rope_theta."""
    path = d / "config.json"
    c = json.loads(path.read_text())
    rope_form = FAMILIES[family]["rope"]
    rp = c.get("rope_parameters")
    if rope_form == "classic":
        theta = None
        if isinstance(rp, dict):
            theta = rp.get("rope_theta")
            if rp.get("rope_type", "default") != "default":
                raise SystemExit(f"{family}: unexpected rope_type {rp}")
        theta = theta if theta is not None else c.get("rope_theta")
        c.pop("rope_parameters", None)
        c["rope_theta"] = float(theta)
        c["rope_scaling"] = None
        if "dtype" in c:
            c["torch_dtype"] = c.pop("dtype")
    c["architectures"] = [FAMILIES[family]["arch"]]
    c = dict(sorted(c.items()))
    path.write_text(json.dumps(c, indent=2) + "\n")
    return c


# --------------------------------------------------------------------------------------
# Reference computation
# --------------------------------------------------------------------------------------
class RoutingRecorder:
    def __init__(self, model):
        self.routers = routers(model)
        self.records = {}
        self.weights = {}
        self.handles = []
        for li, r in self.routers:
            self.handles.append(r.register_forward_hook(self._hook(li)))

    def _hook(self, li):
        def fn(module, inputs, output):
            logits, weights, idx = output
            self.records[li] = (logits.detach().float().clone(), idx.detach().clone())
            self.weights[li] = weights.detach().float().clone()

        return fn

    def clear(self):
        self.records = {}
        self.weights = {}

    def remove(self):
        for h in self.handles:
            h.remove()


def single_forward(model, rec, ids, top_k):
    rec.clear()
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
    logits = out.logits[0].float()
    rl, rt, rw = [], [], []
    min_gap = float("inf")
    for li, _ in rec.routers:
        lg, idx = rec.records[li]
        lg = lg.reshape(len(ids), -1)
        idx = idx.reshape(len(ids), -1)
        # Our own softmax + topk must agree with the model's (rank order included).
        mine = torch.topk(torch.softmax(lg, dim=-1), top_k, dim=-1).indices
        assert torch.equal(mine, idx), (li, mine, idx)
        srt = torch.sort(lg, dim=-1, descending=True).values
        if srt.shape[-1] > top_k:
            min_gap = min(min_gap, float((srt[:, top_k - 1] - srt[:, top_k]).min()))
        # gaps inside the top-k too (rank order must be unambiguous)
        for j in range(top_k - 1):
            min_gap = min(min_gap, float((srt[:, j] - srt[:, j + 1]).min()))
        rl.append(lg)
        rt.append(idx.to(torch.int64))
        rw.append(rec.weights[li].reshape(len(ids), -1))
    routing = torch.stack(rt) if rt else torch.zeros((0, len(ids), top_k), dtype=torch.int64)
    router_logits = torch.stack(rl) if rl else torch.zeros((0, len(ids), 0))
    routing_weights = torch.stack(rw) if rw else torch.zeros((0, len(ids), 0))
    return logits, routing, router_logits, routing_weights, min_gap


def greedy_manual(model, ids, n):
    seq = list(ids)
    gaps = []
    for _ in range(n):
        x = torch.tensor([seq])
        with torch.no_grad():
            lg = model(input_ids=x, use_cache=False).logits[0, -1].float()
        top2 = torch.topk(lg, 2).values
        gaps.append(float(top2[0] - top2[1]))
        seq.append(int(torch.argmax(lg)))
    return seq[len(ids):], min(gaps)


def greedy_generate(model, ids, n):
    from transformers import GenerationConfig

    gc = GenerationConfig(
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        num_beams=1,
        eos_token_id=None,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
    )
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=gc)
    return out[0, len(ids):].tolist()


def margins(model, input_ids, top_k):
    """(min routing logit gap, min greedy top-2 gap) over all reference prompts."""
    rec = RoutingRecorder(model)
    r_gap = float("inf")
    g_gap = float("inf")
    for ids in input_ids:
        *_, gap = single_forward(model, rec, ids, top_k)
        r_gap = min(r_gap, gap)
        _, gg = greedy_manual(model, ids, GREEDY_NEW_TOKENS)
        g_gap = min(g_gap, gg)
    rec.remove()
    return r_gap, g_gap


def build_family(family: str, tok, out_root: Path):
    spec = FAMILIES[family]
    d = out_root / family
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)

    cfg = make_config(family)
    cls = getattr(transformers, spec["arch"])
    top_k = getattr(cfg, "num_experts_per_tok", 0) or 0
    input_ids = [tok.encode(p, add_special_tokens=False).ids for p in PROMPTS]
    for attempt in range(MAX_SEED_TRIES):
        seed = spec["seed"] + attempt
        torch.manual_seed(seed)
        model = cls._from_config(cfg, attn_implementation="eager", dtype=torch.float32)
        randomise_(model, seed, spec.get("embed_std", STD_EMBED), spec.get("lm_head_std", STD_MATRIX))
        model.eval()
        r_gap, g_gap = margins(model, input_ids, top_k)
        if r_gap > MIN_ROUTING_GAP and g_gap > MIN_GREEDY_GAP:
            break
        print(f"   {family}: seed {seed} rejected (routing gap {r_gap:.3g}, greedy gap {g_gap:.3g})")
    else:
        raise SystemExit(f"{family}: no seed in {MAX_SEED_TRIES} tries gives clear margins")
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "tie failed"
    model.eval()

    # What does transformers' own save_pretrained write? (informational; we write the hub layout ourselves)
    tmp = out_root / f".tmp_{family}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp), safe_serialization=True)
    hf_keys = {}
    for f in sorted(tmp.glob("*.safetensors")):
        for k, v in load_file(str(f)).items():
            hf_keys[k] = tuple(v.shape)
    shutil.copy(tmp / "config.json", d / "config.json")
    if (tmp / "generation_config.json").exists():
        shutil.copy(tmp / "generation_config.json", d / "generation_config.json")
    shutil.rmtree(tmp)

    hub = to_hub_layout(family, model.state_dict(), cfg)
    shard_files = write_weights(d, hub, spec["sharded"])
    conf = rewrite_config(d, family, cfg)
    write_tokenizer(tok, d)

    # Reload from the fixture dir and compare everything below against the reloaded model.
    reloaded = cls.from_pretrained(str(d), attn_implementation="eager", dtype=torch.float32)
    reloaded.eval()
    sd_a, sd_b = model.state_dict(), reloaded.state_dict()
    assert set(sd_a) == set(sd_b), (set(sd_a) ^ set(sd_b))
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), f"{family}: {k} differs after reload"

    rec = RoutingRecorder(reloaded)
    rec_orig = RoutingRecorder(model)
    moe_layers = [li for li, _ in rec.routers]

    tensors = {}
    min_gap = float("inf")
    max_reload_diff = 0.0
    greedy_min_gap = float("inf")
    for p, ids in enumerate(input_ids):
        assert 3 <= len(ids) <= 14, (PROMPTS[p], len(ids))
        logits, routing, router_logits, routing_weights, gap = single_forward(reloaded, rec, ids, top_k)
        logits0, routing0, *_ = single_forward(model, rec_orig, ids, top_k)
        max_reload_diff = max(max_reload_diff, float((logits - logits0).abs().max()))
        assert torch.equal(routing, routing0)
        min_gap = min(min_gap, gap)
        tensors[f"logits.{p}"] = logits.contiguous()
        if moe_layers:
            tensors[f"routing.{p}"] = routing.contiguous()
            tensors[f"router_logits.{p}"] = router_logits.contiguous()
            tensors[f"routing_weights.{p}"] = routing_weights.contiguous()
        g_gen = greedy_generate(reloaded, ids, GREEDY_NEW_TOKENS)
        g_man, g_gap = greedy_manual(reloaded, ids, GREEDY_NEW_TOKENS)
        assert g_gen == g_man, (family, p, g_gen, g_man)
        greedy_min_gap = min(greedy_min_gap, g_gap)
        tensors[f"greedy.{p}"] = torch.tensor(g_gen, dtype=torch.int64)
    assert max_reload_diff < 1e-5, f"{family}: reload changed logits by {max_reload_diff}"
    if moe_layers and min_gap <= MIN_ROUTING_GAP:
        raise SystemExit(f"{family}: routing gap {min_gap} <= {MIN_ROUTING_GAP}; change the seed")
    if greedy_min_gap <= MIN_GREEDY_GAP:
        raise SystemExit(f"{family}: greedy gap {greedy_min_gap} <= {MIN_GREEDY_GAP}; change the seed")

    # Batched reference: left padding with attention mask; position ids count real tokens only.
    max_len = max(len(i) for i in input_ids)
    batch_ids = torch.full((len(input_ids), max_len), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(input_ids), max_len), dtype=torch.long)
    for b, ids in enumerate(input_ids):
        batch_ids[b, max_len - len(ids):] = torch.tensor(ids)
        mask[b, max_len - len(ids):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    rec.clear()
    with torch.no_grad():
        bout = reloaded(input_ids=batch_ids, attention_mask=mask, position_ids=pos, use_cache=False)
    batch_logits = bout.logits.float().contiguous()
    tensors["batch_logits"] = batch_logits
    tensors["batch_input_ids"] = batch_ids.contiguous()
    tensors["batch_attention_mask"] = mask.contiguous()
    tensors["batch_position_ids"] = pos.contiguous()
    batch_diff = 0.0
    batch_routing_equal = True
    for b, ids in enumerate(input_ids):
        real = batch_logits[b, max_len - len(ids):]
        batch_diff = max(batch_diff, float((real - tensors[f"logits.{b}"]).abs().max()))
    if moe_layers:
        for li_i, (li, _) in enumerate(rec.routers):
            _, idx = rec.records[li]
            idx = idx.reshape(len(input_ids), max_len, -1)
            for b, ids in enumerate(input_ids):
                if not torch.equal(idx[b, max_len - len(ids):], tensors[f"routing.{b}"][li_i]):
                    batch_routing_equal = False
        tensors["batch_routing"] = torch.stack(
            [rec.records[li][1].reshape(len(input_ids), max_len, -1) for li, _ in rec.routers]
        ).to(torch.int64).contiguous()
    rec.remove()
    rec_orig.remove()
    assert batch_diff < 1e-4, f"{family}: batch vs single max diff {batch_diff}"
    assert batch_routing_equal, f"{family}: batch routing differs from single routing"

    save_file(tensors, str(d / "reference.safetensors"), metadata={"format": "pt"})
    n_params = sum(p.numel() for p in model.parameters())
    ref = {
        "family": family,
        "architecture": spec["arch"],
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "seed": seed,
        "prompts": PROMPTS,
        "input_ids": input_ids,
        "add_special_tokens": False,
        "num_layers": cfg.num_hidden_layers,
        "moe_layers": moe_layers,
        "num_experts": int(getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", 0) or 0),
        "top_k": top_k,
        "vocab_size": cfg.vocab_size,
        "greedy_new_tokens": GREEDY_NEW_TOKENS,
        "batch": {
            "padding_side": "left",
            "pad_token_id": PAD_ID,
            "max_len": max_len,
            "input_ids": batch_ids.tolist(),
            "attention_mask": mask.tolist(),
            "position_ids": pos.tolist(),
            "padding_positions": [list(range(max_len - len(ids))) for ids in input_ids],
            "max_abs_diff_vs_single": batch_diff,
        },
        "checks": {
            "min_routing_logit_gap": (min_gap if moe_layers else None),
            "min_greedy_top2_gap": greedy_min_gap,
            "reload_logits_max_abs_diff": max_reload_diff,
        },
        "tensors": {
            "logits.p": "f32 [seq_len, vocab]: prompt p run alone (batch 1, no padding)",
            "routing.p": "i64 [num_moe_layers, seq_len, top_k]: top-k expert ids in the router's rank order (descending)",
            "router_logits.p": "f32 [num_moe_layers, seq_len, num_experts]: router logits before softmax",
            "routing_weights.p": "f32 [num_moe_layers, seq_len, top_k]: the weights the model applies to those experts (same order as routing.p)",
            "greedy.p": f"i64 [{GREEDY_NEW_TOKENS}]: greedy continuation of prompt p (no EOS stop)",
            "batch_logits": "f32 [batch, max_len, vocab]: all prompts as one left-padded batch",
            "batch_input_ids": "i64 [batch, max_len]",
            "batch_attention_mask": "i64 [batch, max_len]: 0 = padding",
            "batch_position_ids": "i64 [batch, max_len]: cumsum(mask)-1 clamped at 0 (as generate() does)",
            "batch_routing": "i64 [num_moe_layers, batch, max_len, top_k] (padding rows are meaningless)",
        },
        "weight_files": shard_files,
        "num_parameters": n_params,
        "notes": (
            "Random weights (seeded), float32, eager attention, model.eval(), torch.no_grad(). "
            "Routing captured with forward hooks on the router modules (their own top-k output, "
            "checked against softmax+topk of the router logits). Batched reference uses left padding "
            "with pad_token_id and explicit position_ids so real tokens have the same positions as "
            "in the single runs; logits at padding positions are not meaningful."
        ),
    }
    (d / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")

    size = sum(f.stat().st_size for f in d.iterdir())
    hub_keys_sample = [k for k in sorted(hub, key=layer_sort_key) if ".layers.0." in k]
    print(f"== {family} ({spec['arch']}) -> {d}")
    print(f"   params={n_params} files={shard_files} dir_size={size/1024:.0f} KiB moe_layers={moe_layers} top_k={top_k}")
    print(f"   prompt lengths={[len(i) for i in input_ids]} routing_gap_min={min_gap:.4g} greedy_gap_min={greedy_min_gap:.4g} batch_diff={batch_diff:.3g}")
    print(f"   config rope: {'rope_theta' if 'rope_theta' in conf else 'rope_parameters'}; dtype key: {'torch_dtype' if 'torch_dtype' in conf else 'dtype'}")
    print("   hub keys (layer 0):")
    for k in hub_keys_sample:
        print(f"     {k} {list(hub[k].shape)}")
    same = hf_keys == {k: tuple(v.shape) for k, v in hub.items()}
    print(f"   transformers save_pretrained writes the same key names/shapes: {same}")
    if not same:
        for k in sorted(set(hf_keys) ^ set(hub), key=layer_sort_key)[:20]:
            print(f"     differs: {k} hf={hf_keys.get(k)} ours={tuple(hub[k].shape) if k in hub else None}")
    return dict(family=family, params=n_params, size=size, min_gap=min_gap)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "models" / "tiny"))
    ap.add_argument("--families", default=",".join(FAMILIES))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    print(f"tokenizer: vocab={tok.get_vocab_size()} specials={[(s, tok.token_to_id(s)) for s in SPECIAL_TOKENS]}")
    for fam in args.families.split(","):
        build_family(fam, tok, out)


if __name__ == "__main__":
    main()
