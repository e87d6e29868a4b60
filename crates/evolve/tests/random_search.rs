//! Random search with Gaussian sampling: the "random latents" baseline.

use latentevo_evolve::testfns::sphere;
use latentevo_evolve::{EvolveError, RandomSearch, RandomSearchConfig, Sampling, Strategy};

/// Every population asked in a whole run, told `fitness` of each member.
fn asked(cfg: RandomSearchConfig, seed: u64, fitness: fn(&[f64]) -> f64) -> Vec<Vec<Vec<f64>>> {
    let mut rs = RandomSearch::new(cfg, seed).unwrap();
    let mut out = Vec::new();
    while !rs.is_done() {
        let pop = rs.ask().unwrap();
        let f: Vec<f64> = pop.iter().map(|x| fitness(x)).collect();
        rs.tell(&f).unwrap();
        out.push(pop);
    }
    out
}

/// 20 generations of 1000 draws from `N(mean, 0.3^2 I)` in 4-D: per coordinate the
/// sample mean is within 0.0106 of `mean_i` and the sample std within 0.0075 of 0.3,
/// and the correlation of two coordinates is within 0.035 of 0. Each tolerance is
/// 5 standard errors of the estimate for n = 20000 draws (mean: 0.3 / sqrt(n) =
/// 0.00212; std: 0.3 / sqrt(2 (n-1)) = 0.0015; correlation: 1 / sqrt(n) = 0.0071), so
/// a correct sampler fails one of them with probability below 1e-5.
#[test]
fn gaussian_samples_have_the_stated_mean_and_std() {
    let mean = vec![1.5, -2.0, 0.0, 10.0];
    let std = 0.3;
    let cfg = RandomSearchConfig {
        population_size: 1000,
        max_generations: Some(20),
        ..RandomSearchConfig::gaussian(mean.clone(), std)
    };
    let draws: Vec<Vec<f64>> = asked(cfg, 11, |x| -sphere(x)).into_iter().flatten().collect();
    let n = draws.len() as f64;
    assert_eq!(draws.len(), 20_000);
    let m: Vec<f64> = (0..4)
        .map(|i| draws.iter().map(|x| x[i]).sum::<f64>() / n)
        .collect();
    for i in 0..4 {
        let s = (draws.iter().map(|x| (x[i] - m[i]).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        assert!((m[i] - mean[i]).abs() < 0.0106, "coordinate {i}: mean {}", m[i]);
        assert!((s - std).abs() < 0.0075, "coordinate {i}: std {s}");
    }
    let cov = draws.iter().map(|x| (x[0] - m[0]) * (x[1] - m[1])).sum::<f64>() / (n - 1.0);
    assert!(
        (cov / (std * std)).abs() < 0.035,
        "correlation {}",
        cov / (std * std)
    );
}

/// Samples are fresh every generation and do not depend on the fitness told (a
/// baseline, not an optimiser); the strategy keeps the best members seen.
#[test]
fn gaussian_search_samples_afresh_and_keeps_the_best() {
    let cfg = RandomSearchConfig {
        population_size: 50,
        max_generations: Some(10),
        ..RandomSearchConfig::gaussian(vec![0.5; 3], 1.0)
    };
    let a = asked(cfg.clone(), 3, |x| -sphere(x));
    let b = asked(cfg.clone(), 3, sphere);
    assert_eq!(a, b, "the fitness does not steer the sampling");
    assert_ne!(a[0], a[1], "a new population every generation");

    let mut rs = RandomSearch::new(cfg, 3).unwrap();
    assert_eq!(
        (rs.name(), rs.dim(), rs.population_size()),
        ("GaussianRandomSearch", 3, 50)
    );
    let mut best = f64::NEG_INFINITY;
    while !rs.is_done() {
        let pop = rs.ask().unwrap();
        let f: Vec<f64> = pop
            .iter()
            .enumerate()
            .map(|(i, x)| if i == 0 { f64::NAN } else { -sphere(x) })
            .collect();
        best = f.iter().copied().filter(|v| v.is_finite()).fold(best, f64::max);
        rs.tell(&f).unwrap();
    }
    assert_eq!(rs.best().unwrap().fitness, best);
    assert_eq!(rs.non_finite_count(), 10);
    let elite = rs.elite();
    assert_eq!(elite.len(), 50);
    assert!(elite.windows(2).all(|w| w[0].1 >= w[1].1));
    assert_eq!(elite[0].1, best);
    assert!(matches!(rs.ask(), Err(EvolveError::Finished { generations: 10 })));
}

/// Same seed, same samples bit for bit; another seed, other samples.
#[test]
fn gaussian_search_is_deterministic_per_seed() {
    let cfg = RandomSearchConfig {
        population_size: 8,
        max_generations: Some(3),
        ..RandomSearchConfig::gaussian(vec![0.0; 5], 2.0)
    };
    let bits = |seed| -> Vec<u64> {
        asked(cfg.clone(), seed, |x| x[0])
            .iter()
            .flatten()
            .flatten()
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(42), bits(42));
    assert_ne!(bits(42), bits(43));
}

/// A bad `std` (<= 0, NaN, infinite) or `mean` (empty, non-finite) is a typed error
/// naming the field.
#[test]
fn gaussian_config_errors_name_the_field() {
    let field = |mean: Vec<f64>, std: f64| match RandomSearch::new(RandomSearchConfig::gaussian(mean, std), 0)
    {
        Err(EvolveError::InvalidConfig { field, reason }) => (field, reason),
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    for std in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let (f, reason) = field(vec![0.0; 2], std);
        assert_eq!(f, "std", "std = {std}");
        assert!(reason.contains("> 0"), "{reason}");
    }
    assert_eq!(field(vec![], 1.0).0, "mean");
    assert_eq!(field(vec![0.0, f64::NAN], 1.0).0, "mean");
    assert_eq!(field(vec![f64::INFINITY], 1.0).0, "mean");
    let cfg = RandomSearchConfig {
        population_size: 0,
        ..RandomSearchConfig::gaussian(vec![0.0], 1.0)
    };
    assert!(matches!(
        RandomSearch::new(cfg, 0),
        Err(EvolveError::InvalidConfig {
            field: "population_size",
            ..
        })
    ));
    // the uniform box is still checked as before
    let uniform = RandomSearchConfig::new(vec![0.0, 0.0], vec![1.0]);
    assert_eq!(uniform.sampling.dim(), 2);
    assert!(matches!(
        RandomSearch::new(uniform, 0),
        Err(EvolveError::InvalidConfig { field: "upper", .. })
    ));
    assert!(matches!(
        RandomSearchConfig::gaussian(vec![1.0], 0.5).sampling,
        Sampling::Gaussian { std, .. } if std == 0.5
    ));
}
