//! CMA-ES, OpenES, PEPG and random search.

use latentevo_evolve::testfns::{rosenbrock, sphere};
use latentevo_evolve::{
    CmaEs, CmaEsConfig, EvolveError, OpenEs, OpenEsConfig, Pepg, PepgConfig, RandomSearch,
    RandomSearchConfig, Strategy,
};

/// Evaluations CMA-ES needs to reach `f < 1e-10` (minimising `f` = maximising `-f`),
/// or `None` past `budget`.
fn cma_evals(
    f: fn(&[f64]) -> f64,
    n: usize,
    x0: f64,
    seed: u64,
    active: bool,
    budget: usize,
) -> Option<usize> {
    let cfg = CmaEsConfig {
        active,
        ..CmaEsConfig::new(vec![x0; n], 0.5)
    };
    let mut es = CmaEs::new(cfg, seed).unwrap();
    let mut used = 0;
    while used < budget {
        let pop = es.ask().unwrap();
        let fit: Vec<f64> = pop.iter().map(|x| -f(x)).collect();
        used += pop.len();
        es.tell(&fit).unwrap();
        if -es.best().unwrap().fitness < 1e-10 {
            return Some(used);
        }
    }
    None
}

/// Sphere from `x0 = (1,..,1)`, `sigma0 = 0.5`, default population, to `f < 1e-10`.
/// Budgets: 600 / 1500 / 2500 evaluations in 2 / 5 / 10-D. Hansen's CMA-ES needs
/// about 300 / 800 / 1650 (measured here over 10 seeds: 250-340, 740-910, 1490-1790),
/// in line with the published ~1600 for 10-D.
#[test]
fn cmaes_solves_sphere_within_budget() {
    for (n, budget) in [(2, 600), (5, 1500), (10, 2500)] {
        for active in [true, false] {
            for seed in 0..5 {
                let e = cma_evals(sphere, n, 1.0, seed, active, budget);
                assert!(
                    e.is_some(),
                    "sphere n={n} active={active} seed={seed}: not solved in {budget}"
                );
            }
        }
    }
}

/// Rosenbrock from the origin, `sigma0 = 0.5`, to `f < 1e-10`. Budgets: 1500 / 4000 /
/// 10000 evaluations in 2 / 5 / 10-D (measured: 380-730, 1630-2440, 4800-7840;
/// Hansen reports ~6000-7000 for 10-D). In 4-7+ dimensions Rosenbrock has a local
/// minimum near (-1, 1, ..., 1) where CMA-ES ends in ~10-20% of runs (a property of the
/// function, not a bug), so we require 4 of 5 seeds to succeed.
#[test]
fn cmaes_solves_rosenbrock_within_budget() {
    for (n, budget) in [(2, 1500), (5, 4000), (10, 10_000)] {
        for active in [true, false] {
            let ok = (0..5)
                .filter(|&s| cma_evals(rosenbrock, n, 0.0, s, active, budget).is_some())
                .count();
            assert!(
                ok >= 4,
                "rosenbrock n={n} active={active}: only {ok}/5 solved in {budget}"
            );
        }
    }
}

#[test]
fn cmaes_defaults_and_weights() {
    let es = CmaEs::new(CmaEsConfig::new(vec![0.0; 10], 1.0), 0).unwrap();
    assert_eq!(es.population_size(), 10); // 4 + floor(3 ln 10)
    let w = es.weights();
    let pos: f64 = w.iter().filter(|v| **v > 0.0).sum();
    assert!((pos - 1.0).abs() < 1e-12, "positive weights sum to 1");
    assert!(w.windows(2).all(|p| p[1] <= p[0]), "weights decrease");
    assert!(w[9] < 0.0, "active: worst weight negative");
    // mu_eff for lambda = 10: ~3.17 (Hansen)
    assert!((es.mu_eff() - 3.1672).abs() < 1e-3, "{}", es.mu_eff());
    let passive = CmaEs::new(
        CmaEsConfig {
            active: false,
            ..CmaEsConfig::new(vec![0.0; 10], 1.0)
        },
        0,
    )
    .unwrap();
    assert!(passive.weights()[5..].iter().all(|v| *v == 0.0));
}

#[test]
fn cmaes_handles_nan_and_is_deterministic() {
    let run = |seed| {
        let cfg = CmaEsConfig {
            max_generations: Some(80),
            ..CmaEsConfig::new(vec![2.0; 3], 1.0)
        };
        let mut es = CmaEs::new(cfg, seed).unwrap();
        while !es.is_done() {
            let pop = es.ask().unwrap();
            let f: Vec<f64> = pop
                .iter()
                .enumerate()
                .map(|(i, x)| if i % 3 == 0 { f64::NAN } else { -sphere(x) })
                .collect();
            es.tell(&f).unwrap();
        }
        (es.mean(), es.non_finite_count(), es.best().unwrap().fitness)
    };
    let (m, nan, best) = run(4);
    assert_eq!(nan, 80 * 3); // lambda = 7 in 3-D: members 0, 3, 6
    assert!(m.iter().all(|v| v.is_finite()));
    assert!(best > -1e-3, "still optimises with NaNs: {best}");
    assert_eq!(run(4), run(4));
    // all-NaN generations do not panic
    let mut es = CmaEs::new(CmaEsConfig::new(vec![0.0; 2], 1.0), 0).unwrap();
    for _ in 0..5 {
        let p = es.ask().unwrap();
        es.tell(&vec![f64::NAN; p.len()]).unwrap();
    }
    assert!(es.mean().iter().all(|v| v.is_finite()) && es.sigma().is_finite());
}

#[test]
fn cmaes_config_errors() {
    let f = |r: Result<CmaEs, EvolveError>| match r {
        Err(EvolveError::InvalidConfig { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(f(CmaEs::new(CmaEsConfig::new(vec![], 1.0), 0)), "mean");
    assert_eq!(f(CmaEs::new(CmaEsConfig::new(vec![0.0], 0.0), 0)), "sigma");
    let c = CmaEsConfig {
        population_size: Some(1),
        ..CmaEsConfig::new(vec![0.0], 1.0)
    };
    assert_eq!(f(CmaEs::new(c, 0)), "population_size");
    let mut es = CmaEs::new(CmaEsConfig::new(vec![0.0; 2], 1.0), 0).unwrap();
    es.ask().unwrap();
    assert_eq!(
        es.tell(&[0.0]),
        Err(EvolveError::FitnessLength { expected: 6, got: 1 })
    );
}

/// OpenES (Adam, centred ranks, mirrored sampling) improves on the 5-D sphere:
/// from f(theta_0) = 5 to below 0.05 in 300 generations of 50.
#[test]
fn openes_improves_on_sphere() {
    let mut cfg = OpenEsConfig::new(vec![1.0; 5], 0.1, 50);
    cfg.learning_rate = 0.05;
    cfg.max_generations = Some(300);
    let mut es = OpenEs::new(cfg, 0).unwrap();
    let start = sphere(es.theta());
    while !es.is_done() {
        let pop = es.ask().unwrap();
        let f: Vec<f64> = pop.iter().map(|x| -sphere(x)).collect();
        es.tell(&f).unwrap();
    }
    let end = sphere(es.theta());
    assert!(start == 5.0 && end < 0.05, "{start} -> {end}");
}

/// The paper's benchmark configuration (momentum, raw fitness, lr 1000, sigma 4 -> 0.04,
/// 1000 steps of 512) finds a Himmelblau optimum: mapped fitness of theta > 0.99
/// (the reference reports top-64 fitness 0.999), despite a NaN in every generation.
#[test]
fn openes_paper_setting_solves_himmelblau() {
    use latentevo_evolve::testfns::Benchmark;
    let mut es = OpenEs::new(OpenEsConfig::paper_benchmark(2, 512, 1000), 1).unwrap();
    while !es.is_done() {
        let pop = es.ask().unwrap();
        let f: Vec<f64> = pop
            .iter()
            .enumerate()
            .map(|(i, x)| {
                if i == 0 {
                    f64::NAN
                } else {
                    Benchmark::Himmelblau.fitness(x)
                }
            })
            .collect();
        es.tell(&f).unwrap();
    }
    let g = Benchmark::Himmelblau.fitness(es.theta());
    assert!(g > 0.99, "theta {:?} fitness {g}", es.theta());
    assert_eq!(es.non_finite_count(), 1000);
}

#[test]
fn pepg_improves_on_sphere() {
    let mut cfg = PepgConfig::paper_benchmark(3, 64, 40);
    cfg.mean = vec![2.0; 3];
    cfg.sigma = 1.0;
    let mut es = Pepg::new(cfg, 0).unwrap();
    while !es.is_done() {
        let pop = es.ask().unwrap();
        let f: Vec<f64> = pop.iter().map(|x| -sphere(x)).collect();
        es.tell(&f).unwrap();
    }
    assert!(sphere(es.mean()) < 0.05, "{:?}", es.mean());
    assert!(matches!(
        Pepg::new(PepgConfig::new(vec![0.0], 1.0, 3), 0),
        Err(EvolveError::InvalidConfig {
            field: "population_size",
            ..
        })
    ));
}

#[test]
fn random_search_keeps_the_best() {
    let cfg = RandomSearchConfig {
        population_size: 100,
        max_generations: Some(20),
        ..RandomSearchConfig::new(vec![-1.0; 2], vec![1.0; 2])
    };
    let mut rs = RandomSearch::new(cfg, 3).unwrap();
    let best = latentevo_evolve::optimize(&mut rs, |x| -sphere(x)).unwrap();
    assert!(best.fitness > -1e-3);
    let elite = rs.elite();
    assert_eq!(elite.len(), 100);
    assert!(elite.windows(2).all(|w| w[0].1 >= w[1].1));
    assert_eq!(elite[0].1, best.fitness);
    assert!(matches!(
        RandomSearch::new(RandomSearchConfig::new(vec![1.0], vec![0.0]), 0),
        Err(EvolveError::InvalidConfig { field: "upper", .. })
    ));
}

#[test]
fn strategies_are_object_safe_and_deterministic() {
    let make = |seed| -> Vec<Box<dyn Strategy>> {
        vec![
            Box::new(
                CmaEs::new(
                    CmaEsConfig {
                        max_generations: Some(5),
                        ..CmaEsConfig::new(vec![0.5; 2], 1.0)
                    },
                    seed,
                )
                .unwrap(),
            ),
            Box::new(
                OpenEs::new(
                    OpenEsConfig {
                        max_generations: Some(5),
                        ..OpenEsConfig::new(vec![0.5; 2], 1.0, 10)
                    },
                    seed,
                )
                .unwrap(),
            ),
            Box::new(
                Pepg::new(
                    PepgConfig {
                        max_generations: Some(5),
                        ..PepgConfig::new(vec![0.5; 2], 1.0, 10)
                    },
                    seed,
                )
                .unwrap(),
            ),
            Box::new(RandomSearch::new(RandomSearchConfig::new(vec![-1.0; 2], vec![1.0; 2]), seed).unwrap()),
        ]
    };
    let trace = |seed| {
        let mut out = Vec::new();
        for mut s in make(seed) {
            while !s.is_done() {
                let pop = s.ask().unwrap();
                let f: Vec<f64> = pop.iter().map(|x| -sphere(x)).collect();
                s.tell(&f).unwrap();
                out.push(pop);
            }
            assert!(matches!(s.ask(), Err(EvolveError::Finished { .. })));
        }
        out
    };
    assert_eq!(trace(9), trace(9));
    assert_ne!(trace(9), trace(10));
}

#[test]
fn map_elites_archive_one_elite_per_cell() {
    use latentevo_evolve::{MapElites, MapElitesConfig};
    let cfg = MapElitesConfig {
        max_evaluations: 2000,
        ..MapElitesConfig::paper_benchmark(2)
    };
    let run = |seed| {
        let mut me = MapElites::new(cfg.clone(), seed).unwrap();
        let mut asked = 0;
        while !me.is_done() {
            let pop = me.ask().unwrap();
            asked += pop.len();
            let f: Vec<f64> = pop
                .iter()
                .map(|x| if x[0] > 3.0 { f64::NAN } else { -sphere(x) })
                .collect();
            me.tell(&f).unwrap();
        }
        assert_eq!(asked, 2000);
        assert_eq!(me.evaluations(), 2000);
        assert_eq!(me.generation(), me.max_generations().unwrap());
        me
    };
    let me = run(0);
    let cells: std::collections::HashSet<Vec<i64>> = me
        .archive()
        .iter()
        .map(|(x, _)| x.iter().map(|v| v.round_ties_even() as i64).collect())
        .collect();
    assert_eq!(cells.len(), me.archive().len(), "one elite per unit cell");
    assert!(
        me.archive().iter().all(|(x, f)| f.is_finite() && x[0] <= 3.0),
        "NaN never archived"
    );
    assert!(me.non_finite_count() > 0);
    // the elite of the origin cell is good
    let origin = me
        .archive()
        .iter()
        .find(|(x, _)| x.iter().all(|v| v.abs() < 0.5))
        .unwrap();
    assert!(origin.1 > -0.05, "{origin:?}");
    assert_eq!(run(3).archive(), run(3).archive());
}

#[test]
fn pepg_adam_mode_improves() {
    let mut cfg = PepgConfig::new(vec![1.5; 2], 0.5, 50);
    // Adam (beta1 0.99) overshoots with a constant step: decay it towards 1e-3
    cfg.learning_rate = 0.1;
    cfg.learning_rate_decay = 0.97;
    cfg.learning_rate_limit = 1e-3;
    cfg.max_generations = Some(200);
    let mut es = Pepg::new(cfg, 2).unwrap();
    while !es.is_done() {
        let pop = es.ask().unwrap();
        let f: Vec<f64> = pop.iter().map(|x| -sphere(x)).collect();
        es.tell(&f).unwrap();
    }
    assert!(sphere(es.mean()) < 0.1, "{:?}", es.mean());
}
