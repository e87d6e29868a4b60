//! Writes the three plots from synthetic data: `cargo run -p latentevo-plot --example demo -- DIR`
//! writes `DIR/search_rounds.png`, `DIR/frontier.png` and `DIR/scatter.png` (DIR defaults to
//! the current directory and must exist).

use std::path::PathBuf;

use latentevo_plot::{
    frontier_png, scatter_png, search_rounds_png, FrontierPlot, RoundSummary, ScatterPlot, Series,
};

/// A small deterministic generator of uniform numbers in [0, 1) (SplitMix64).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
    }

    /// Roughly standard normal (sum of 12 uniforms).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let mut rng = Rng(7);

    // A search of 6 rounds, 24 members, 16-dimensional latents that contract towards two
    // modes while the reward rises.
    let (n_rounds, members, dim) = (6, 24, 16);
    let modes: Vec<Vec<f64>> = (0..2)
        .map(|_| (0..dim).map(|_| 2.0 * rng.normal()).collect())
        .collect();
    let mut rounds = Vec::new();
    let mut latents = Vec::new();
    for r in 0..n_rounds {
        let spread = 3.0 * (1.0 - r as f64 / n_rounds as f64) + 0.3;
        let pull = r as f64 / (n_rounds - 1) as f64;
        let pop: Vec<Vec<f64>> = (0..members)
            .map(|i| {
                let mode = &modes[i % 2];
                (0..dim).map(|j| pull * mode[j] + spread * rng.normal()).collect()
            })
            .collect();
        let rewards: Vec<f64> = (0..members)
            .map(|_| 0.2 + 0.12 * r as f64 + 0.05 * rng.normal())
            .collect();
        rounds.push(RoundSummary {
            round: r,
            mean_reward: rewards.iter().sum::<f64>() / members as f64,
            max_reward: rewards.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            diversity: spread * 0.4,
        });
        latents.push(pop);
    }
    search_rounds_png(
        &dir.join("search_rounds.png"),
        &rounds,
        &latents,
        "latent search: 6 rounds, 24 members, dim 16",
    )?;

    // Diversity against fluency: a temperature sweep for sampling, KL levels for the search.
    let temps = [0.5, 0.7, 0.9, 1.1, 1.3, 1.5];
    let sampling = Series {
        name: "sampling".into(),
        points: temps
            .iter()
            .map(|t| (0.95 - 0.35 * (t - 0.5), 0.15 + 0.45 * (t - 0.5)))
            .collect(),
        labels: temps.iter().map(|t| format!("T={t}")).collect(),
        connect: true,
    };
    let kls = [0.01, 0.05, 0.1, 0.2];
    let search = Series {
        name: "latent search".into(),
        points: kls.iter().map(|k| (0.92 - 0.6 * k, 0.3 + 1.6 * k)).collect(),
        labels: kls.iter().map(|k| format!("kl={k}")).collect(),
        connect: true,
    };
    let best_of_n = Series {
        name: "best-of-16 sampling".into(),
        points: vec![(0.8, 0.33)],
        labels: vec!["n=16".into()],
        connect: false,
    };
    frontier_png(
        &dir.join("frontier.png"),
        &FrontierPlot {
            title: "diversity vs fluency".into(),
            x_label: "fluency (mean token log-prob, normalised)".into(),
            y_label: "diversity (mean pairwise distance)".into(),
            series: vec![sampling, search, best_of_n],
        },
    )?;

    // One point per prompt per method.
    let methods = ["sampling T=1.0", "latent search", "random perturbation"];
    let series = methods
        .iter()
        .enumerate()
        .map(|(m, name)| Series {
            name: (*name).into(),
            points: (0..30)
                .map(|_| {
                    let x = rng.uniform();
                    (x, 0.3 + 0.15 * m as f64 + 0.3 * x + 0.08 * rng.normal())
                })
                .collect(),
            labels: Vec::new(),
            connect: false,
        })
        .collect();
    scatter_png(
        &dir.join("scatter.png"),
        &ScatterPlot {
            title: "per-prompt reward vs diversity".into(),
            x_label: "diversity".into(),
            y_label: "best reward".into(),
            series,
        },
    )?;
    println!(
        "wrote search_rounds.png, frontier.png, scatter.png to {}",
        dir.display()
    );
    Ok(())
}
