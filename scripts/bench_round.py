#!/usr/bin/env python3
"""One search round in latentevo (Rust, candle) and in transformers (PyTorch), same run.

The round (issue "round benchmark"): a population of N candidates, a prompt of P tokens,
T new tokens, greedy; each candidate has a perturbation vector added to the residual
stream entering layer L (at every position), and decodes beside an unperturbed "shadow"
row fed the same tokens (batch 2N); routing is recorded on the prompt by an unperturbed
pass and locked at the MoE layers from L on: prompt tokens take the recorded experts,
generated tokens of a candidate take the experts its shadow chooses; weights are
recomputed from the router over the locked experts. Each step computes the log-softmax of
every row and the KL between each candidate and its shadow, as latentevo does.

    cargo build --release -p latentevo-model --bench round     # the script also does this
    ./.venv/bin/python scripts/bench_round.py --model ~/.cache/latentevo/smollm2-135m-instruct-moe4x2-v1
    ./.venv/bin/python scripts/bench_round.py --model DIR --populations 16,64 --new-tokens 128
    ./.venv/bin/python scripts/bench_round.py --model DIR --experts dense,q8_0,q4_k

latentevo side: `crates/model/benches/round.rs` (shared prompt prefix below L, then
`Model::generate_shadowed`; the same round as `latentevo bench --round`'s "shared prefix +
batched" figure). transformers side: MixtralForCausalLM (any Mixtral-layout checkpoint),
a forward pre-hook on layer L, the routers of layers >= L patched to lock. Both f32 on
CPU with the same thread count (`--threads`, default: what candle picks, the physical
cores). Times are best of `--repeats` after a warm-up; the whole round is timed (shared
prefix, prompt pass of the population, decoding, token choice). Peak RSS is each process's
high-water mark (model load included). Ratio = transformers / latentevo (> 1: latentevo
is faster). `--experts` runs the latentevo side once per routed-expert format (dense = f32,
q8_0, q4_k: `latentevo_model::ExpertFormat`), each against the same f32 transformers round.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prompt_ids(n, vocab):
    return [(i * 2654435761 + 12345) % vocab for i in range(n)]


def delta_values(n, hidden):
    """The fixed perturbation of crates/model/benches/round.rs, row-major [n, hidden]."""
    return [(((i * 2654435761) % 1000) / 1000.0 - 0.5) * 0.1 for i in range(n * hidden)]


def build_rust():
    cmd = ["cargo", "build", "--release", "-p", "latentevo-model", "--bench", "round",
           "--message-format=json"]
    out = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout.decode()
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "round" \
                and msg.get("executable"):
            return msg["executable"]
    sys.exit("could not find the round bench executable")


def rust_round(exe, args, threads, experts):
    env = dict(os.environ)
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)
    cmd = [exe, "--model", args.model, "--populations", ",".join(map(str, args.populations)),
           "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens),
           "--repeats", str(args.repeats), "--experts", experts]
    if args.layer is not None:
        cmd += ["--layer", str(args.layer)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, env=env).stdout.decode()
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def transformers_round(args, threads):
    """Runs in a child process (so that its peak RSS is its own); returns one dict per population."""
    import torch
    import torch.nn.functional as F
    from transformers import MixtralForCausalLM
    from transformers.cache_utils import DynamicCache

    if threads:
        torch.set_num_threads(threads)
    model = MixtralForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    cfg = model.config
    layers = model.model.layers
    num_layers = len(layers)
    layer = args.layer if args.layer is not None else min(round(num_layers * 0.27), num_layers - 1)
    prompt = prompt_ids(args.prompt_tokens, cfg.vocab_size)

    # Router patch: record (mode "record"), lock (mode "prompt": recorded ids for every
    # row; mode "decode": candidate i takes its shadow's ids), or free.
    state = {"mode": "free", "recorded": {}, "rows": 0}

    def patched(router, index):
        original = router.forward

        def forward(hidden_states):
            logits, scores, ids = original(hidden_states)
            mode = state["mode"]
            if mode == "record":
                state["recorded"][index] = ids.clone()
                return logits, scores, ids
            if mode == "free" or index < layer:
                return logits, scores, ids
            probs = torch.softmax(logits.float(), dim=-1)
            if mode == "prompt":
                rec = state["recorded"][index]  # [prompt, k] for one row
                ids = rec.repeat(hidden_states.shape[0] // rec.shape[0], 1)
            else:  # decode: rows are [candidates; shadows], one token each
                n = state["rows"]
                ids = torch.cat([ids[n:], ids[n:]], 0)
            w = probs.gather(1, ids)
            w = w / w.sum(dim=-1, keepdim=True)
            return logits, w.to(hidden_states.dtype), ids

        router.forward = forward

    for i, l in enumerate(layers):
        patched(l.mlp.gate, i)

    hidden = cfg.hidden_size
    results = []
    with torch.no_grad():
        state["mode"] = "record"
        model(torch.tensor([prompt]), use_cache=False)
        for n in args.populations:
            delta = torch.tensor(delta_values(n, hidden), dtype=torch.float32).reshape(n, 1, hidden)
            full = torch.cat([delta, torch.zeros_like(delta)], 0)  # [2n, 1, hidden]

            def pre_hook(module, a, kw):
                hs = kw.get("hidden_states", a[0] if a else None)
                hs = hs + full
                if "hidden_states" in kw:
                    kw["hidden_states"] = hs
                    return a, kw
                return (hs,) + tuple(a[1:]), kw

            handle = layers[layer].register_forward_pre_hook(pre_hook, with_kwargs=True)
            best = best_prefill = best_decode = float("inf")
            tokens = None
            for repeat in range(args.repeats + 1):
                state["rows"] = n
                start = time.perf_counter()
                ids = torch.tensor([prompt] * (2 * n))
                cache = DynamicCache(config=cfg)
                state["mode"] = "prompt"
                out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
                prefill = time.perf_counter() - start
                state["mode"] = "decode"
                logits = out.logits[:, -1, :]
                generated, kls = [], []
                for step in range(args.new_tokens):
                    logp = F.log_softmax(logits.float(), dim=-1)
                    tok = logits[:n].argmax(dim=-1)
                    kls.append((logp[:n].exp() * (logp[:n] - logp[n:])).sum(-1))
                    _chosen = logp.gather(1, torch.cat([tok, tok]).unsqueeze(1))
                    generated.append(tok)
                    if step + 1 == args.new_tokens:
                        break
                    out = model(input_ids=torch.cat([tok, tok]).unsqueeze(1), past_key_values=cache,
                                use_cache=True)
                    logits = out.logits[:, -1, :]
                total = time.perf_counter() - start
                if repeat > 0:
                    best = min(best, total)
                    best_prefill = min(best_prefill, prefill)
                    best_decode = min(best_decode, total - prefill)
                tokens = torch.stack(generated, 1)
            handle.remove()
            results.append({
                "population": n, "layer": layer, "seconds": best, "prefill_seconds": best_prefill,
                "decode_seconds": best_decode, "threads": torch.get_num_threads(),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                "distinct_continuations": len({tuple(r) for r in tokens.tolist()}),
                "first_tokens": tokens[0].tolist(),
            })
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint directory (Mixtral layout)")
    p.add_argument("--populations", default="16", help="comma-separated population sizes")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--layer", type=int, default=None, help="perturbed layer [~27%% of the depth]")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats after one warm-up")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both (RAYON_NUM_THREADS / torch.set_num_threads)")
    p.add_argument("--rust-bin", default=None,
                   help="the round bench executable (default: build it with cargo)")
    p.add_argument("--experts", default="dense",
                   help="comma-separated routed-expert formats of the latentevo side: dense, q8_0, q4_k")
    p.add_argument("--rust-only", action="store_true")
    p.add_argument("--transformers-only", action="store_true")
    p.add_argument("--json", action="store_true", help="also print one JSON object per population")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.model = os.path.expanduser(args.model)
    args.populations = [int(x) for x in args.populations.split(",")]
    args.experts = args.experts.split(",")
    threads = args.threads
    if threads is None:
        # What candle picks by default: the physical cores (of the affinity mask).
        threads = len(os.sched_getaffinity(0))

    if args.child:
        print(json.dumps(transformers_round(args, threads)))
        return

    ours = {}
    theirs = None
    if not args.transformers_only:
        exe = args.rust_bin or build_rust()
        for experts in args.experts:
            ours[experts] = rust_round(exe, args, threads, experts)
    if not args.rust_only:
        cmd = [sys.executable, os.path.abspath(__file__), "--child"] + [a for a in sys.argv[1:]]
        if args.threads is None:
            cmd += ["--threads", str(threads)]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout.decode()
        theirs = json.loads(out.strip().splitlines()[-1])

    import torch
    import transformers
    print(f"round: prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, greedy, "
          f"f32, {threads} threads; torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"{'population':>10} {'experts':>7} {'latentevo s':>12} {'transformers s':>15} {'ratio':>7} "
          f"{'ours prefill/decode':>20} {'theirs prefill/decode':>22} {'RSS MiB ours/theirs':>20} same tokens")
    for i, n in enumerate(args.populations):
        t = theirs[i] if theirs else None
        for experts in (args.experts if ours else ["-"]):
            o = ours[experts][i] if ours else None
            ratio = t["seconds"] / o["seconds"] if o and t else float("nan")
            same = (o["first_tokens"] == t["first_tokens"]) if o and t else None
            fmt = lambda r: f"{r['prefill_seconds']:.2f}/{r['decode_seconds']:.2f}" if r else "-"
            print(f"{n:>10} {experts:>7} {o['seconds'] if o else float('nan'):>12.2f} "
                  f"{t['seconds'] if t else float('nan'):>15.2f} "
                  f"{ratio:>7.2f} {fmt(o):>20} {fmt(t):>22} "
                  f"{(o or {}).get('peak_rss_mib', float('nan')):>9.0f}/"
                  f"{(t or {}).get('peak_rss_mib', float('nan')):<10.0f} {same}")
            if args.json:
                print(json.dumps({"population": n, "prompt_tokens": args.prompt_tokens,
                                  "new_tokens": args.new_tokens, "threads": threads, "experts": experts,
                                  "latentevo": o, "transformers": t, "ratio": ratio}))


if __name__ == "__main__":
    main()
