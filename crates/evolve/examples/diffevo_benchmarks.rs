//! Reproduces the 2-D benchmark table of "Diffusion Models are Evolutionary
//! Algorithms" (Zhang et al. 2024) with the exact setup of the authors' code, and
//! prints it side by side with the reference numbers (the authors' code rerun, 100
//! runs; see crates/evolve/README.md).
//!
//! ```text
//! cargo run --release -p latentevo-evolve --example diffevo_benchmarks -- --seeds 100 \
//!     [--process-csv docs/evolve/process.csv] [--csv results.csv] [--threads 2]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use latentevo_evolve::testfns::{Benchmark, HIMMELBLAU_OPTIMA};
use latentevo_evolve::{
    CmaEs, CmaEsConfig, DiffEvo, DiffEvoConfig, MapElites, MapElitesConfig, OpenEs, OpenEsConfig, Pepg,
    PepgConfig, RandomSearch, RandomSearchConfig, Strategy,
};

const TOP_K: usize = 64;
const POP: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Method {
    DiffEvo,
    LatentDiffEvo,
    CmaEs,
    OpenEs,
    Pepg,
    MapElites,
    Random,
}

impl Method {
    const ALL: [Method; 7] = [
        Method::DiffEvo,
        Method::LatentDiffEvo,
        Method::CmaEs,
        Method::OpenEs,
        Method::Pepg,
        Method::MapElites,
        Method::Random,
    ];
    fn name(self) -> &'static str {
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
    /// Reference entropy / fitness (authors' code rerun, mean of 100 runs).
    fn reference(self, b: Benchmark) -> Option<(f64, f64)> {
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
#[derive(Clone, Debug)]
struct RunResult {
    entropy: f64,
    fitness: f64,
    /// Himmelblau optima with a member of the final population within 0.1.
    covered: usize,
    /// Same, counting only the top-64 members used by the metrics.
    covered_top: usize,
}

/// Entropy in bits of the positions binned by `round(10 x)` (ties to even, as torch).
fn entropy(points: &[&Vec<f64>]) -> f64 {
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

fn coverage(points: &[&Vec<f64>]) -> usize {
    HIMMELBLAU_OPTIMA
        .iter()
        .filter(|o| points.iter().any(|p| (p[0] - o[0]).hypot(p[1] - o[1]) < 0.1))
        .count()
}

/// Metrics as in the authors' `statistic.py`: select the top 64 by `select_fitness`,
/// report the mean of `select_fitness` over them and the entropy of `positions` at
/// the same indices; coverage uses the whole `positions`.
fn metrics(positions: &[Vec<f64>], select_fitness: &[f64]) -> RunResult {
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

fn eval(b: Benchmark, pop: &[Vec<f64>]) -> Vec<f64> {
    pop.iter().map(|x| b.fitness(x)).collect()
}

/// Runs a strategy for its whole budget, returning the last asked population and its
/// fitness. `penalty` is subtracted from the told fitness (CMA-ES weight decay).
fn drive(s: &mut dyn Strategy, b: Benchmark, penalty: f64) -> (Vec<Vec<f64>>, Vec<f64>) {
    let mut last = (Vec::new(), Vec::new());
    while !s.is_done() {
        let pop = s.ask().expect("ask");
        let f = eval(b, &pop);
        let told: Vec<f64> = if penalty > 0.0 {
            f.iter()
                .zip(&pop)
                .map(|(f, x)| f - penalty * x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64)
                .collect()
        } else {
            f.clone()
        };
        s.tell(&told).expect("tell");
        last = (pop, f);
    }
    last
}

/// Population snapshots for the process plot: (generation, members).
type Snapshots = Vec<(usize, Vec<Vec<f64>>)>;

fn run(m: Method, b: Benchmark, seed: u64, mut snapshots: Option<&mut Snapshots>) -> RunResult {
    match m {
        Method::DiffEvo | Method::LatentDiffEvo => {
            let latent = (m == Method::LatentDiffEvo).then_some(2);
            let cfg = DiffEvoConfig {
                latent_dim: latent,
                ..DiffEvoConfig::paper_benchmark(2)
            };
            let mut de = DiffEvo::new(cfg, seed).expect("config");
            while !de.is_done() {
                let pop = de.ask().expect("ask");
                if let Some(s) = snapshots.as_deref_mut() {
                    s.push((de.generation(), pop.clone()));
                }
                let f = eval(b, &pop);
                de.tell(&f).expect("tell");
            }
            let x = de.population();
            if let Some(s) = snapshots.as_deref_mut() {
                s.push((de.generation(), x.clone()));
            }
            if m == Method::DiffEvo {
                // authors: fitness of the final x0 estimate selects and scores the top 64;
                // the entropy is of the final population x at those indices.
                let x0 = de.x0_estimate().expect("x0");
                let f0 = eval(b, &x0);
                metrics(&x, &f0)
            } else {
                let f = eval(b, &x);
                metrics(&x, &f)
            }
        }
        Method::CmaEs => {
            let cfg = CmaEsConfig {
                population_size: Some(POP),
                max_generations: Some(25),
                ..CmaEsConfig::new(vec![0.0; 2], 4.0)
            };
            let mut es = CmaEs::new(cfg, seed).expect("config");
            let (pop, f) = drive_snap(&mut es, b, 1e-3, snapshots);
            metrics(&pop, &f)
        }
        Method::OpenEs => {
            let mut es = OpenEs::new(OpenEsConfig::paper_benchmark(2, POP, 1000), seed).expect("config");
            let (pop, f) = drive(&mut es, b, 0.0);
            metrics(&pop, &f)
        }
        Method::Pepg => {
            let mut es = Pepg::new(PepgConfig::paper_benchmark(2, POP, 25), seed).expect("config");
            let (pop, f) = drive(&mut es, b, 0.0);
            metrics(&pop, &f)
        }
        Method::MapElites => {
            let mut es = MapElites::new(MapElitesConfig::paper_benchmark(2), seed).expect("config");
            drive(&mut es, b, 0.0);
            let pop: Vec<Vec<f64>> = es.archive().iter().map(|(x, _)| x.clone()).collect();
            let f: Vec<f64> = es.archive().iter().map(|(_, f)| *f).collect();
            metrics(&pop, &f)
        }
        Method::Random => {
            let cfg = RandomSearchConfig {
                population_size: POP,
                max_generations: Some(25),
                ..RandomSearchConfig::new(vec![-4.0; 2], vec![4.0; 2])
            };
            let mut rs = RandomSearch::new(cfg, seed).expect("config");
            drive(&mut rs, b, 0.0);
            let pop: Vec<Vec<f64>> = rs.elite().iter().map(|(x, _)| x.clone()).collect();
            let f: Vec<f64> = rs.elite().iter().map(|(_, f)| *f).collect();
            metrics(&pop, &f)
        }
    }
}

fn drive_snap(
    s: &mut dyn Strategy,
    b: Benchmark,
    penalty: f64,
    snapshots: Option<&mut Snapshots>,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    match snapshots {
        None => drive(s, b, penalty),
        Some(snap) => {
            let mut last = (Vec::new(), Vec::new());
            while !s.is_done() {
                let pop = s.ask().expect("ask");
                snap.push((s.generation(), pop.clone()));
                let f = eval(b, &pop);
                let told: Vec<f64> = f
                    .iter()
                    .zip(&pop)
                    .map(|(f, x)| f - penalty * x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64)
                    .collect();
                s.tell(&told).expect("tell");
                last = (pop, f);
            }
            last
        }
    }
}

/// One seed per (method, function, run), mixed with SplitMix64.
fn seed_for(m: usize, b: usize, r: usize) -> u64 {
    let mut z = (m as u64) << 40 ^ (b as u64) << 32 ^ r as u64;
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `†` beyond 2 SE (+ rounding of the reference), `‡` beyond 2 sqrt(2) SE (+ rounding).
fn mark(ours: f64, reference: f64, se: f64, half_unit: f64) -> &'static str {
    let d = (ours - reference).abs();
    if d > 2.0 * std::f64::consts::SQRT_2 * se + half_unit {
        " ‡"
    } else if d > 2.0 * se + half_unit {
        " †"
    } else {
        ""
    }
}

fn mean_se(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt() / n.sqrt(), var.sqrt())
}

struct Args {
    seeds: usize,
    seed_offset: usize,
    threads: usize,
    csv: Option<String>,
    process_csv: Option<String>,
    methods: Vec<Method>,
}

fn parse_args() -> Args {
    let mut a = Args {
        seeds: 100,
        seed_offset: 0,
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        csv: None,
        process_csv: None,
        methods: Method::ALL.to_vec(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--seeds" => a.seeds = val.parse().expect("--seeds N"),
            "--seed-offset" => a.seed_offset = val.parse().expect("--seed-offset N"),
            "--threads" => a.threads = val.parse().expect("--threads N"),
            "--csv" => a.csv = Some(val),
            "--process-csv" => a.process_csv = Some(val),
            "--methods" => {
                a.methods = val
                    .split(',')
                    .map(|s| {
                        *Method::ALL
                            .iter()
                            .find(|m| m.name().eq_ignore_ascii_case(s))
                            .unwrap_or_else(|| panic!("unknown method {s}"))
                    })
                    .collect()
            }
            "-h" | "--help" => {
                println!("usage: diffevo_benchmarks [--seeds N] [--seed-offset N] [--threads N] [--csv FILE] [--process-csv FILE] [--methods DiffEvo,CMA-ES,...]");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn main() {
    let args = parse_args();
    let start = std::time::Instant::now();

    if let Some(path) = &args.process_csv {
        write_process_csv(path);
    }

    // all (method, function, run) jobs, spread over threads
    let jobs: Vec<(usize, usize, usize)> = args
        .methods
        .iter()
        .flat_map(|m| {
            let mi = Method::ALL.iter().position(|x| x == m).expect("method");
            (0..Benchmark::ALL.len()).flat_map(move |bi| (0..args.seeds).map(move |r| (mi, bi, r)))
        })
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Vec<(usize, RunResult)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(mi, bi, r)) = jobs.get(j) else { break };
                        let res = run(
                            Method::ALL[mi],
                            Benchmark::ALL[bi],
                            seed_for(mi, bi, r + args.seed_offset),
                            None,
                        );
                        out.push((j, res));
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker")).collect()
    });
    let mut by_job: Vec<Option<RunResult>> = vec![None; jobs.len()];
    for (j, r) in results.into_iter().flatten() {
        by_job[j] = Some(r);
    }
    let mut table: HashMap<(Method, Benchmark), Vec<RunResult>> = HashMap::new();
    for (&(mi, bi, _), r) in jobs.iter().zip(by_job) {
        table
            .entry((Method::ALL[mi], Benchmark::ALL[bi]))
            .or_default()
            .push(r.expect("every job ran"));
    }

    if let Some(path) = &args.csv {
        let mut f = std::fs::File::create(path).expect("create csv");
        writeln!(
            f,
            "method,function,run,entropy,fitness,himmelblau_covered,himmelblau_covered_top64"
        )
        .unwrap();
        for m in &args.methods {
            for b in Benchmark::ALL {
                for (r, res) in table[&(*m, b)].iter().enumerate() {
                    writeln!(
                        f,
                        "{},{},{},{},{},{},{}",
                        m.name(),
                        b.name(),
                        r,
                        res.entropy,
                        res.fitness,
                        res.covered,
                        res.covered_top
                    )
                    .unwrap();
                }
            }
        }
    }

    println!(
        "# Diffusion Evolution 2-D benchmarks: {} runs per cell\n",
        args.seeds
    );
    println!("Cell: ours mean ± standard error (ref = authors' code rerun, 100 runs). `†` marks");
    println!("|ours - ref| > 2 SE + half a unit of the reference's last digit (SE of our mean);");
    println!("`‡` marks |ours - ref| > 2 sqrt(2) SE + half a unit, i.e. outside 2 SE of the difference");
    println!("if the reference has our spread (its own SE is not known, see README).\n");
    println!("| function | method | entropy (bits) | ref | fitness | ref |");
    println!("|---|---|---|---|---|---|");
    for b in Benchmark::ALL {
        for m in &args.methods {
            let rs = &table[&(*m, b)];
            let (he, hse, _) = mean_se(&rs.iter().map(|r| r.entropy).collect::<Vec<_>>());
            let (fe, fse, _) = mean_se(&rs.iter().map(|r| r.fitness).collect::<Vec<_>>());
            let (rh, rf) = match m.reference(b) {
                Some((h, f)) => (
                    format!("{h:.2}{}", mark(he, h, hse, 0.005)),
                    format!("{f:.3}{}", mark(fe, f, fse, 0.0005)),
                ),
                None => ("–".into(), "–".into()),
            };
            println!(
                "| {} | {} | {he:.2} ± {hse:.2} | {rh} | {fe:.3} ± {fse:.3} | {rf} |",
                b.name(),
                m.name()
            );
        }
    }

    println!("\nCompact grid (entropy / fitness, ours; same layout as the reference table):\n");
    print!("| |");
    for m in &args.methods {
        print!(" {} |", m.name());
    }
    println!();
    print!("|---|");
    for _ in &args.methods {
        print!("---|");
    }
    println!();
    for b in Benchmark::ALL {
        print!("| {} |", b.name());
        for m in &args.methods {
            let rs = &table[&(*m, b)];
            let (he, ..) = mean_se(&rs.iter().map(|r| r.entropy).collect::<Vec<_>>());
            let (fe, ..) = mean_se(&rs.iter().map(|r| r.fitness).collect::<Vec<_>>());
            print!(" {he:.2} / {fe:.3} |");
        }
        println!();
    }

    println!("\n## Himmelblau: optima covered (of 4; a member within 0.1), mean over runs\n");
    println!("| method | final population | top-64 members | runs covering all 4 | runs covering 1 |");
    println!("|---|---|---|---|---|");
    for m in &args.methods {
        let rs = &table[&(*m, Benchmark::Himmelblau)];
        let (c, cse, _) = mean_se(&rs.iter().map(|r| r.covered as f64).collect::<Vec<_>>());
        let (ct, ctse, _) = mean_se(&rs.iter().map(|r| r.covered_top as f64).collect::<Vec<_>>());
        let all4 = rs.iter().filter(|r| r.covered == 4).count();
        let one = rs.iter().filter(|r| r.covered == 1).count();
        println!(
            "| {} | {c:.2} ± {cse:.2} | {ct:.2} ± {ctse:.2} | {all4}/{} | {one}/{} |",
            m.name(),
            rs.len(),
            rs.len()
        );
    }
    eprintln!("\n(done in {:.1} s)", start.elapsed().as_secs_f64());
}

/// Populations over the generations of one run (seed 0) on Himmelblau, for the
/// process figure: DiffEvo, latent DiffEvo and CMA-ES.
fn write_process_csv(path: &str) {
    let mut f = std::fs::File::create(path).expect("create process csv");
    writeln!(f, "method,generation,x,y").unwrap();
    for m in [Method::DiffEvo, Method::LatentDiffEvo, Method::CmaEs] {
        let mut snaps = Snapshots::new();
        run(m, Benchmark::Himmelblau, 0, Some(&mut snaps));
        for (g, pop) in snaps {
            for x in pop {
                writeln!(f, "{},{},{:.5},{:.5}", m.name(), g, x[0], x[1]).unwrap();
            }
        }
    }
}
