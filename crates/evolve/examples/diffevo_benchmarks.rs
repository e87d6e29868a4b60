//! Reproduces the 2-D benchmark table of "Diffusion Models are Evolutionary
//! Algorithms" (Zhang et al. 2024) with the exact setup of the authors' code, and
//! prints it side by side with the reference numbers (the authors' code rerun, 100
//! runs; see crates/evolve/README.md). The runs, metrics and reference numbers are
//! `latentevo_evolve::benchmark`, shared with the test `tests/benchmark_table.rs`;
//! this program schedules the runs over threads and prints the tables.
//!
//! ```text
//! cargo run --release -p latentevo-evolve --example diffevo_benchmarks -- --seeds 100 \
//!     [--process-csv docs/evolve/process.csv] [--csv results.csv] [--threads 2]
//! ```

use std::collections::HashMap;
use std::io::Write;

use latentevo_evolve::benchmark::{mean_se, run, seed_for, Method, RunResult, Snapshots};
use latentevo_evolve::testfns::Benchmark;

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
            let mi = m.index();
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
                        )
                        .expect("run");
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
        run(m, Benchmark::Himmelblau, 0, Some(&mut snaps)).expect("run");
        for (g, pop) in snaps {
            for x in pop {
                writeln!(f, "{},{},{:.5},{:.5}", m.name(), g, x[0], x[1]).unwrap();
            }
        }
    }
}
