#!/usr/bin/env python3
"""An independent forward pass for the six families, written from models/tiny/README.md
("Per-family implementation notes") with plain tensor math — no `transformers` modules —
reading config.json and the hub-layout safetensors directly. It checks every fixture's
reference logits (single and left-padded batch) and routing ids, so it verifies both the
fixtures and the README's description that the Rust decoder is implemented from.

Usage:
    ./.venv/bin/python scripts/independent_forward.py [models/tiny] [--families mixtral,...]

Exit status 0 when every family matches (logits within 1e-4, routing ids identical).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

torch.set_default_dtype(torch.float32)


def load_weights(d: Path) -> dict:
    idx = d / "model.safetensors.index.json"
    if idx.exists():
        w = {}
        files = sorted(set(json.loads(idx.read_text())["weight_map"].values()))
        for f in files:
            w.update(load_file(str(d / f)))
        return w
    return load_file(str(d / "model.safetensors"))


def cfg_get(c, *names, default=None):
    for n in names:
        if n in c and c[n] is not None:
            return c[n]
    return default


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def silu(x):
    return x * torch.sigmoid(x)


class Model:
    def __init__(self, d: Path):
        self.c = c = json.loads((d / "config.json").read_text())
        self.w = load_weights(d)
        self.arch = c["architectures"][0]
        self.H = c["hidden_size"]
        self.nh = c["num_attention_heads"]
        self.nkv = cfg_get(c, "num_key_value_heads", default=self.nh)
        self.hd = cfg_get(c, "head_dim", default=self.H // self.nh)
        self.eps = c["rms_norm_eps"]
        rp = c.get("rope_parameters") or {}
        self.theta = cfg_get(c, "rope_theta", default=rp.get("rope_theta"))
        self.L = c["num_hidden_layers"]
        self.E = cfg_get(c, "num_local_experts", "num_experts", default=0)
        self.k = cfg_get(c, "num_experts_per_tok", default=0)
        self.tied = c.get("tie_word_embeddings", False)
        g = self.arch == "GraniteMoeForCausalLM"
        self.emb_mult = c.get("embedding_multiplier", 1.0) if g else 1.0
        self.res_mult = c.get("residual_multiplier", 1.0) if g else 1.0
        self.scaling = c["attention_multiplier"] if g else self.hd ** -0.5
        self.logits_div = c.get("logits_scaling", 1.0) if g else 1.0

    def is_moe(self, i):
        a = self.arch
        if a == "LlamaForCausalLM":
            return False
        if a in ("Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"):
            c = self.c
            return i not in (c.get("mlp_only_layers") or []) and self.E > 0 and (i + 1) % c.get("decoder_sparse_step", 1) == 0
        return True

    def attn(self, i, x, pos, mask):
        # x [B, T, H]; pos [B, T]; mask [B, T] (1 real, 0 pad)
        w, p = self.w, f"model.layers.{i}.self_attn."
        B, T, _ = x.shape

        def lin(name, t):
            y = t @ w[p + name + ".weight"].T
            b = w.get(p + name + ".bias")
            return y + b if b is not None else y

        q, k, v = lin("q_proj", x), lin("k_proj", x), lin("v_proj", x)
        if self.arch == "OlmoeForCausalLM":  # norm over the whole projection, before reshape
            q = rms(q, w[p + "q_norm.weight"], self.eps)
            k = rms(k, w[p + "k_norm.weight"], self.eps)
            clip = self.c.get("clip_qkv")
            if clip is not None:
                q, k, v = q.clamp(-clip, clip), k.clamp(-clip, clip), v.clamp(-clip, clip)
        q = q.view(B, T, self.nh, self.hd)
        k = k.view(B, T, self.nkv, self.hd)
        v = v.view(B, T, self.nkv, self.hd)
        if self.arch == "Qwen3MoeForCausalLM":  # per-head norm over head_dim
            q = rms(q, w[p + "q_norm.weight"], self.eps)
            k = rms(k, w[p + "k_norm.weight"], self.eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, h, T, hd]
        inv = 1.0 / (self.theta ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd))
        fr = pos[..., None].float() * inv  # [B, T, hd/2]
        emb = torch.cat((fr, fr), -1)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) * self.scaling  # [B, h, T, T]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        allowed = causal[None] & mask.bool()[:, None, :]  # key must be real
        s = s.masked_fill(~allowed[:, None], float("-inf"))
        # fully masked rows (padding queries) -> uniform, irrelevant
        s = torch.where(torch.isinf(s).all(-1, keepdim=True), torch.zeros_like(s), s)
        a = torch.softmax(s, -1) @ v
        a = a.transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return a @ w[p + "o_proj.weight"].T

    def mlp(self, pre, x):
        w = self.w
        return silu(x @ w[pre + "gate_proj.weight"].T) * (x @ w[pre + "up_proj.weight"].T) @ w[pre + "down_proj.weight"].T

    def moe(self, i, x):
        # returns (out, router_logits [N, E], ids [N, k]); x [N, H]
        w, a, c = self.w, self.arch, self.c
        if a == "MixtralForCausalLM":
            p = f"model.layers.{i}.block_sparse_moe."
            rl = x @ w[p + "gate.weight"].T
            pr = torch.softmax(rl, -1)
            top, ids = torch.topk(pr, self.k, -1)
            wts = top / top.sum(-1, keepdim=True)
            experts = lambda e, t: (silu(t @ w[f"{p}experts.{e}.w1.weight"].T) * (t @ w[f"{p}experts.{e}.w3.weight"].T)) @ w[f"{p}experts.{e}.w2.weight"].T
        elif a == "GraniteMoeForCausalLM":
            p = f"model.layers.{i}.block_sparse_moe."
            rl = x @ w[p + "router.layer.weight"].T
            top, ids = torch.topk(rl, self.k, -1)
            wts = torch.softmax(top, -1)
            inp, outp = w[p + "input_linear.weight"], w[p + "output_linear.weight"]
            I = outp.shape[-1]

            def experts(e, t):
                gu = t @ inp[e].T
                return (silu(gu[:, :I]) * gu[:, I:]) @ outp[e].T
        else:  # qwen2_moe, qwen3_moe, olmoe
            p = f"model.layers.{i}.mlp."
            rl = x @ w[p + "gate.weight"].T
            pr = torch.softmax(rl, -1)
            top, ids = torch.topk(pr, self.k, -1)
            wts = top / top.sum(-1, keepdim=True) if c.get("norm_topk_prob", False) else top
            experts = lambda e, t: self.mlp(f"{p}experts.{e}.", t)
        out = torch.zeros_like(x)
        for n in range(x.shape[0]):
            for j in range(self.k):
                out[n] += wts[n, j] * experts(int(ids[n, j]), x[n : n + 1])[0]
        if a == "Qwen2MoeForCausalLM":
            p = f"model.layers.{i}.mlp."
            gate = torch.sigmoid(x @ w[p + "shared_expert_gate.weight"].T)  # [N, 1]
            out = out + gate * self.mlp(p + "shared_expert.", x)
        return out, rl, ids

    def forward(self, ids, mask=None, pos=None):
        ids = torch.as_tensor(ids)
        B, T = ids.shape
        mask = torch.ones(B, T, dtype=torch.long) if mask is None else torch.as_tensor(mask)
        pos = torch.arange(T)[None].expand(B, T) if pos is None else torch.as_tensor(pos)
        w = self.w
        h = w["model.embed_tokens.weight"][ids] * self.emb_mult
        routing = []
        for i in range(self.L):
            p = f"model.layers.{i}."
            h = h + self.res_mult * self.attn(i, rms(h, w[p + "input_layernorm.weight"], self.eps), pos, mask)
            x = rms(h, w[p + "post_attention_layernorm.weight"], self.eps)
            if self.is_moe(i):
                o, _, r = self.moe(i, x.reshape(B * T, -1))
                routing.append(r.reshape(B, T, -1))
                o = o.reshape(B, T, -1)
            else:
                o = self.mlp(p + "mlp.", x)
            h = h + self.res_mult * o
        h = rms(h, w["model.norm.weight"], self.eps)
        head = w["model.embed_tokens.weight"] if self.tied else w["lm_head.weight"]
        return (h @ head.T) / self.logits_div, routing


def check(d: Path) -> bool:
    ref = json.loads((d / "reference.json").read_text())
    t = load_file(str(d / "reference.safetensors"))
    m = Model(d)
    assert [i for i in range(m.L) if m.is_moe(i)] == ref["moe_layers"], "moe layer rule"
    ok = True
    worst = 0.0
    with torch.no_grad():
        for p, ids in enumerate(ref["input_ids"]):
            lg, rt = m.forward([ids])
            diff = float((lg[0] - t[f"logits.{p}"]).abs().max())
            worst = max(worst, diff)
            if ref["moe_layers"]:
                got = torch.stack([r[0] for r in rt])
                if not torch.equal(got, t[f"routing.{p}"]):
                    print(f"  {d.name} prompt {p}: routing differs")
                    ok = False
        b = ref["batch"]
        lg, rt = m.forward(b["input_ids"], b["attention_mask"], b["position_ids"])
        real = torch.tensor(b["attention_mask"]).bool()
        bdiff = float((lg - t["batch_logits"])[real].abs().max())
        if ref["moe_layers"]:
            got = torch.stack(rt)
            if not torch.equal(got[:, real], t["batch_routing"][:, real]):
                print(f"  {d.name} batch: routing differs")
                ok = False
    ok = ok and worst < 1e-4 and bdiff < 1e-4
    print(f"{d.name:11s} logits max|diff| single {worst:.2e} batch {bdiff:.2e} routing {'ok' if ok else 'MISMATCH'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parent.parent / "models" / "tiny"))
    ap.add_argument("--families", default="mixtral,qwen2_moe,qwen3_moe,olmoe,granitemoe,llama")
    args = ap.parse_args()
    ok = all([check(Path(args.root) / f) for f in args.families.split(",")])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
