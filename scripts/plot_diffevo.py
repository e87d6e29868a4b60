#!/usr/bin/env python3
"""Process figure for the Diffusion Evolution benchmarks (crates/evolve).

Reads the CSV that `diffevo_benchmarks --process-csv FILE` writes (columns
method,generation,x,y: the population of one run, seed 0, on Himmelblau at every
generation) and draws the population at several generations for DiffEvo, latent
DiffEvo and CMA-ES over the mapped fitness landscape, like the paper's process figure.

    cargo run --release -p latentevo-evolve --example diffevo_benchmarks -- \
        --seeds 100 --process-csv target-evolve/process.csv
    .venv/bin/python scripts/plot_diffevo.py target-evolve/process.csv docs/evolve/process_himmelblau.png
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

OPTIMA = [(3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)]


def mapped_himmelblau(x, y):
    """The benchmark's mapped fitness g in [0, 1] (target 0, s = 17.01, maxd = 308.803)."""
    f = (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2
    s, maxd = 17.01, 308.803
    pmin = np.exp(-maxd / s)
    return np.clip((np.exp(-np.abs(f) / s) - pmin) / (1 - pmin), 0, None)


def main(src, dst):
    data = defaultdict(lambda: defaultdict(list))
    with open(src) as fh:
        for row in csv.DictReader(fh):
            data[row["method"]][int(row["generation"])].append((float(row["x"]), float(row["y"])))
    methods = [m for m in ["DiffEvo", "Latent DiffEvo", "CMA-ES"] if m in data]
    gens = [0, 6, 12, 18, 24]
    xs = np.linspace(-4, 4, 300)
    X, Y = np.meshgrid(xs, xs)
    Z = np.log(mapped_himmelblau(X, Y) + 1e-3)
    fig, axes = plt.subplots(len(methods), len(gens), figsize=(2.4 * len(gens), 2.5 * len(methods)))
    for r, m in enumerate(methods):
        for c, g in enumerate(gens):
            ax = axes[r][c]
            ax.imshow(Z, extent=(-4, 4, -4, 4), origin="lower", cmap="Greys", alpha=0.6)
            pts = np.array(data[m].get(g, []))
            if len(pts):
                ax.scatter(pts[:, 0], pts[:, 1], s=2, c="#E93A01", alpha=0.5, edgecolors="none")
            ax.scatter([o[0] for o in OPTIMA], [o[1] for o in OPTIMA], marker="+", c="black", s=60)
            ax.set_xlim(-4.5, 4.5)
            ax.set_ylim(-4.5, 4.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal")
            if r == 0:
                ax.set_title(f"generation {g}" + (" (final)" if g == 24 else ""))
            if c == 0:
                ax.set_ylabel(m)
    fig.suptitle("Himmelblau (4 optima, +): population over 24 generations, seed 0")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
