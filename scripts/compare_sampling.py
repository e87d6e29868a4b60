#!/usr/bin/env python3
"""The search against temperature sampling at an equal budget, on a few prompts.

For each prompt: `latentevo ideas` (the search, defaults except --population/--rounds),
and the same command with `--no-perturbation --temperature T` for T in 0.7 and 1.0 (plain
sampling, the same number of continuations, scored by the same reward and selected by
the same selector). Prints a Markdown table of the K ideas' statistics per method
(distinct ideas at cosine 0.85, mean pairwise embedding distance, Vendi score, mean
fluency, mean reward) and writes every run's JSON next to it.

    python3 scripts/compare_sampling.py --bin target/release/latentevo --out docs/search-vs-sampling
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time

PROMPTS = [
    "Give me three unusual uses for a brick.",
    "Suggest a name and a one-line pitch for a new board game.",
    "How could a small town reduce food waste?",
    "Write the first sentence of a mystery novel.",
    "Invent a new holiday and describe how people celebrate it.",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/latentevo")
    ap.add_argument("--out", default="docs/search-vs-sampling")
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = [("search (diffevo)", []), ("sampling T=0.7", ["--no-perturbation", "--temperature", "0.7"]),
               ("sampling T=1.0", ["--no-perturbation", "--temperature", "1.0"])]
    rows = []
    for p, prompt in enumerate(PROMPTS[: args.prompts]):
        for name, flags in methods:
            path = out / f"p{p}-{name.split()[0]}{flags[-1] if flags else ''}.json"
            if not path.exists():
                cmd = [args.bin, "ideas", prompt, "--json", "--population", str(args.population),
                       "--rounds", str(args.rounds)] + flags
                start = time.time()
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(f"{' '.join(cmd)} failed: {res.stderr}")
                path.write_text(res.stdout)
                print(f"{prompt[:40]!r} {name}: {time.time() - start:.0f} s", file=sys.stderr)
            r = json.loads(path.read_text())
            rows.append((p, name, r))
    print("| prompt | method | ideas | distinct (0.85) | mean distance | Vendi | fluency | reward |")
    print("|---|---|---|---|---|---|---|---|")
    for p, name, r in rows:
        s = r["idea_stats"]
        print(f"| {p + 1} | {name} | {s['count']} | {s['distinct']} | {s['mean_pairwise_distance']:.3f} | "
              f"{s['vendi']:.2f} | {s['mean_fluency']:.2f} | {s['mean_reward']:.3f} |")
    print()
    print("| method | distinct | mean distance | Vendi | fluency | reward |")
    print("|---|---|---|---|---|---|")
    for name, _ in methods:
        ss = [r["idea_stats"] for _, n, r in rows if n == name]
        mean = lambda k: sum(s[k] for s in ss) / len(ss)
        print(f"| {name} | {mean('distinct'):.1f} | {mean('mean_pairwise_distance'):.3f} | {mean('vendi'):.2f} | "
              f"{mean('mean_fluency'):.2f} | {mean('mean_reward'):.3f} |")


if __name__ == "__main__":
    main()
