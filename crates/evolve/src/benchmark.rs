//! The paper's 2-D benchmark table: one run of a method on a [`Benchmark`] with the
//! exact setup of the authors' code, the metrics of their `statistic.py`, and the
//! reference numbers (the authors' code rerun, 100 runs). The example
//! `diffevo_benchmarks` prints the whole table from it; the test
//! `tests/benchmark_table.rs` checks a few cells against the reference.
//!
//! ```
//! use latentevo_evolve::benchmark::{run, seed_for, Method};
//! use latentevo_evolve::testfns::Benchmark;
//! let r = run(Method::CmaEs, Benchmark::Himmelblau, seed_for(2, 2, 0), None).unwrap();
//! assert!(r.fitness > 0.99 && r.entropy < 0.5); // CMA-ES collapses onto one optimum
//! ```

use std::collections::BTreeMap;

use crate::error::Result;
use crate::testfns::{Benchmark, HIMMELBLAU_OPTIMA};
use crate::{
    CmaEs, CmaEsConfig, DiffEvo, DiffEvoConfig, MapElites, MapElitesConfig, OpenEs, OpenEsConfig, Pepg,
    PepgConfig, Population, RandomSearch, RandomSearchConfig, Strategy,
};

/// The metrics use the best `TOP_K` members of the final generation.
pub const TOP_K: usize = 64;
/// Population size of every method (MAP-Elites aside).
pub const POP: usize = 512;

/// A column of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// Diffusion Evolution, [`DiffEvoConfig::paper_benchmark`], scored by its final x0
    /// estimate.
    DiffEvo,
    /// The latent variant (latent dimension 2), scored by its final population.
    LatentDiffEvo,
    /// CMA-ES: mean 0, sigma 4, lambda 512, 25 generations, told
    /// `g - 1e-3 mean(x^2)`.
    CmaEs,
    /// OpenES, [`OpenEsConfig::paper_benchmark`] with 1000 steps of 512.
    OpenEs,
    /// PEPG, [`PepgConfig::paper_benchmark`] with 25 steps of 512.
    Pepg,
    /// MAP-Elites, [`MapElitesConfig::paper_benchmark`]; scored on its archive.
    MapElites,
    /// Uniform random search in the box, 25 x 512; scored on its elite (not in the
    /// reference).
    Random,
}

impl Method {
    /// Every column, in the table's order.
    pub const ALL: [Method; 7] = [
        Method::DiffEvo,
        Method::LatentDiffEvo,
        Method::CmaEs,
        Method::OpenEs,
        Method::Pepg,
        Method::MapElites,
        Method::Random,
    ];

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Method::DiffEvo => "DiffEvo",
            Method::LatentDiffEvo => "Latent DiffEvo",
            Method::CmaEs => "CMA-ES",
            Method::OpenEs => "OpenES",
            Method::Pepg => "PEPG",
            Method::MapElites => "MAP-Elites",
            Method::Random => "Random",
        }
    }

    /// Index in [`Method::ALL`] (the declaration order).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Reference `(entropy, fitness)`: the authors' code rerun, mean of 100 runs
    /// (`None` for random search and the two-peak density, which it does not have).
    pub fn reference(self, b: Benchmark) -> Option<(f64, f64)> {
        let col = match self {
            Method::DiffEvo => 0,
            Method::LatentDiffEvo => 1,
            Method::CmaEs => 2,
            Method::OpenEs => 3,
            Method::Pepg => 4,
            Method::MapElites => 5,
            Method::Random => return None,
        };
        let row: [(f64, f64); 6] = match b {
            Benchmark::Rosenbrock => [
                (5.86, 0.877),
                (5.64, 0.921),
                (0.00, 1.000),
                (2.00, 0.706),
                (0.84, 1.000),
                (6.00, 0.774),
            ],
            Benchmark::Beale => [
                (5.50, 0.965),
                (5.11, 0.926),
                (0.00, 1.000),
                (1.03, 0.996),
                (0.34, 1.000),
                (6.00, 0.369),
            ],
            Benchmark::Himmelblau => [
                (5.23, 0.957),
                (4.95, 0.895),
                (0.00, 1.000),
                (0.28, 0.999),
                (0.00, 1.000),
                (6.00, 0.284),
            ],
            Benchmark::Ackley => [
                (5.67, 0.785),
                (5.31, 0.728),
                (5.34, 0.679),
                (0.17, 0.999),
                (0.01, 0.989),
                (5.99, 0.498),
            ],
            Benchmark::Rastrigin => [
                (5.79, 0.644),
                (5.34, 0.624),
                (5.63, 0.582),
                (0.01, 0.998),
                (0.00, 0.578),
                (5.95, 0.615),
            ],
            Benchmark::TwoPeaks => return None,
        };
        Some(row[col])
    }
}

/// What one run reports.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// Shannon entropy (bits) of the top-64 positions binned by `round(10 x)`.
    pub entropy: f64,
    /// Mean mapped fitness of the top 64.
    pub fitness: f64,
    /// Himmelblau optima with a member of the final population within 0.1.
    pub covered: usize,
    /// Same, counting only the top-64 members used by the metrics.
    pub covered_top: usize,
}

/// Entropy in bits of the positions binned by `round(10 x)` (ties to even, as torch).
pub fn entropy(points: &[&Vec<f64>]) -> f64 {
    let mut counts: BTreeMap<Vec<i64>, usize> = BTreeMap::new();
    for p in points {
        let key = p.iter().map(|v| (v * 10.0).round_ties_even() as i64).collect();
        *counts.entry(key).or_default() += 1;
    }
    let n = points.len() as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum::<f64>()
        + 0.0 // no "-0.00" for a single bin
}

/// How many of Himmelblau's four optima have a point within 0.1.
pub fn coverage(points: &[&Vec<f64>]) -> usize {
    HIMMELBLAU_OPTIMA
        .iter()
        .filter(|o| points.iter().any(|p| (p[0] - o[0]).hypot(p[1] - o[1]) < 0.1))
        .count()
}

/// Metrics as in the authors' `statistic.py`: select the top 64 by `select_fitness`,
/// report the mean of `select_fitness` over them and the entropy of `positions` at
/// the same indices; coverage uses the whole `positions`.
pub fn metrics(positions: &[Vec<f64>], select_fitness: &[f64]) -> RunResult {
    let mut idx: Vec<usize> = (0..select_fitness.len()).collect();
    idx.sort_by(|&a, &b| select_fitness[b].total_cmp(&select_fitness[a]));
    let top: Vec<usize> = idx.into_iter().take(TOP_K).collect();
    let pts: Vec<&Vec<f64>> = top.iter().map(|&i| &positions[i]).collect();
    let all: Vec<&Vec<f64>> = positions.iter().collect();
    RunResult {
        entropy: entropy(&pts),
        fitness: top.iter().map(|&i| select_fitness[i]).sum::<f64>() / top.len() as f64,
        covered: coverage(&all),
        covered_top: coverage(&pts),
    }
}

/// The mapped fitness of every member.
pub fn eval(b: Benchmark, pop: &[Vec<f64>]) -> Vec<f64> {
    pop.iter().map(|x| b.fitness(x)).collect()
}

/// Population snapshots for the process plot: (generation, members).
pub type Snapshots = Vec<(usize, Population)>;

/// Run a strategy for its whole budget on `b`; return the last asked population and
/// its (unpenalised) fitness. `penalty > 0` subtracts `penalty * mean(x^2)` from the
/// fitness told (CMA-ES's weight decay in the benchmark). With `snapshots`, every
/// asked population is recorded with its generation.
///
/// # Errors
/// Those of `ask`/`tell`.
pub fn drive(
    s: &mut dyn Strategy,
    b: Benchmark,
    penalty: f64,
    mut snapshots: Option<&mut Snapshots>,
) -> Result<(Population, Vec<f64>)> {
    let mut last = (Vec::new(), Vec::new());
    while !s.is_done() {
        let pop = s.ask()?;
        if let Some(snap) = snapshots.as_deref_mut() {
            snap.push((s.generation(), pop.clone()));
        }
        let f = eval(b, &pop);
        let told: Vec<f64> = if penalty > 0.0 {
            f.iter()
                .zip(&pop)
                .map(|(f, x)| f - penalty * x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64)
                .collect()
        } else {
            f.clone()
        };
        s.tell(&told)?;
        last = (pop, f);
    }
    Ok(last)
}

/// One run of `m` on `b` with `seed`, scored as the authors do (see the module
/// docs and crates/evolve/README.md). With `snapshots`, the populations of every
/// generation are recorded (and, for Diffusion Evolution, the final one).
///
/// # Errors
/// Those of the strategies (none with these settings).
pub fn run(m: Method, b: Benchmark, seed: u64, mut snapshots: Option<&mut Snapshots>) -> Result<RunResult> {
    Ok(match m {
        Method::DiffEvo | Method::LatentDiffEvo => {
            let latent = (m == Method::LatentDiffEvo).then_some(2);
            let cfg = DiffEvoConfig {
                latent_dim: latent,
                ..DiffEvoConfig::paper_benchmark(2)
            };
            let mut de = DiffEvo::new(cfg, seed)?;
            drive(&mut de, b, 0.0, snapshots.as_deref_mut())?;
            let x = de.population();
            if let Some(s) = snapshots {
                s.push((de.generation(), x.clone()));
            }
            match de.x0_estimate() {
                // authors: fitness of the final x0 estimate selects and scores the top 64;
                // the entropy is of the final population x at those indices.
                Some(x0) if m == Method::DiffEvo => metrics(&x, &eval(b, &x0)),
                _ => metrics(&x, &eval(b, &x)),
            }
        }
        Method::CmaEs => {
            let cfg = CmaEsConfig {
                population_size: Some(POP),
                max_generations: Some(25),
                ..CmaEsConfig::new(vec![0.0; 2], 4.0)
            };
            let mut es = CmaEs::new(cfg, seed)?;
            let (pop, f) = drive(&mut es, b, 1e-3, snapshots)?;
            metrics(&pop, &f)
        }
        Method::OpenEs => {
            let mut es = OpenEs::new(OpenEsConfig::paper_benchmark(2, POP, 1000), seed)?;
            let (pop, f) = drive(&mut es, b, 0.0, snapshots)?;
            metrics(&pop, &f)
        }
        Method::Pepg => {
            let mut es = Pepg::new(PepgConfig::paper_benchmark(2, POP, 25), seed)?;
            let (pop, f) = drive(&mut es, b, 0.0, snapshots)?;
            metrics(&pop, &f)
        }
        Method::MapElites => {
            let mut es = MapElites::new(MapElitesConfig::paper_benchmark(2), seed)?;
            drive(&mut es, b, 0.0, snapshots)?;
            let (pop, f): (Population, Vec<f64>) = es.archive().iter().cloned().unzip();
            metrics(&pop, &f)
        }
        Method::Random => {
            let cfg = RandomSearchConfig {
                population_size: POP,
                max_generations: Some(25),
                ..RandomSearchConfig::new(vec![-4.0; 2], vec![4.0; 2])
            };
            let mut rs = RandomSearch::new(cfg, seed)?;
            drive(&mut rs, b, 0.0, snapshots)?;
            let (pop, f): (Population, Vec<f64>) = rs.elite().iter().cloned().unzip();
            metrics(&pop, &f)
        }
    })
}

/// The seed of run `r` of method `m` on benchmark `b` (indices into [`Method::ALL`]
/// and [`Benchmark::ALL`]), mixed with SplitMix64.
pub fn seed_for(m: usize, b: usize, r: usize) -> u64 {
    let mut z = (m as u64) << 40 ^ (b as u64) << 32 ^ r as u64;
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mean, standard error of the mean and standard deviation (n - 1) of `v`.
pub fn mean_se(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt() / n.sqrt(), var.sqrt())
}
