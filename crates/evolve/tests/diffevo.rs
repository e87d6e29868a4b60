//! Diffusion Evolution: formulas, schedules, robustness, determinism, behaviour.

use latentevo_evolve::{
    ddim_step, ddpm_sigma, estimate_x0, rng_from_seed, AlphaSchedule, DiffEvo, DiffEvoConfig, EvolveError,
    FitnessMapping, Strategy,
};

/// Hand computation of the x0 estimate on 3 points in 2-D (tolerance 1e-12).
#[test]
fn x0_estimate_matches_hand_computed_weighted_mean() {
    let x = [0.0, 0.0, 1.0, 0.0, 0.0, 2.0];
    let g = [1.0, 0.5, 0.25];
    let alpha: f64 = 0.64; // sqrt = 0.8, 2 (1 - alpha) = 0.72
    let x0 = estimate_x0(&x, 2, &x, 2, &g, alpha);
    let pts: [[f64; 2]; 3] = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]];
    let dens = 1.0 / 3.0 + 1e-9;
    for i in 0..3 {
        let (mut sx, mut sy, mut sw) = (0.0, 0.0, 0.0);
        for j in 0..3 {
            let dx = pts[i][0] - 0.8 * pts[j][0];
            let dy = pts[i][1] - 0.8 * pts[j][1];
            let k = (-(dx * dx + dy * dy) / 0.72).exp();
            let w = (g[j] + 1e-9) * (k + 1e-9) / dens;
            sx += w * pts[j][0];
            sy += w * pts[j][1];
            sw += w;
        }
        assert!((x0[2 * i] - sx / (sw + 1e-9)).abs() < 1e-12);
        assert!((x0[2 * i + 1] - sy / (sw + 1e-9)).abs() < 1e-12);
    }
    // a concrete value: member 0 = (0,0); kernels 1, exp(-0.64/0.72), exp(-2.56/0.72)
    let k1 = (-0.64f64 / 0.72).exp();
    let k2 = (-2.56f64 / 0.72).exp();
    let w = [1.0 * 1.0, 0.5 * k1, 0.25 * k2];
    let s: f64 = w.iter().sum();
    assert!((x0[0] - w[1] / s).abs() < 1e-8);
    assert!((x0[1] - 2.0 * w[2] / s).abs() < 1e-8);
}

/// If every kernel underflows, x0 is the fitness-weighted mean of the population.
#[test]
fn x0_estimate_falls_back_to_fitness_weighted_mean() {
    // alpha = 0.01: |x_i - 0.1 x_j| >= 70 for all pairs, so every kernel underflows
    let x = [100.0, 200.0, 300.0];
    let g = [1.0, 3.0, 0.0];
    let x0 = estimate_x0(&x, 1, &x, 1, &g, 0.01);
    // w_j = (g_j + 1e-9) * 1e-9 / (1/3 + 1e-9); note the + 1e-9 in the denominator
    // of x0, which is not negligible against such tiny weights (the authors' formula).
    let dens = 1.0 / 3.0 + 1e-9;
    let w = [
        (1.0 + 1e-9) * 1e-9 / dens,
        (3.0 + 1e-9) * 1e-9 / dens,
        1e-18 / dens,
    ];
    let sw: f64 = w.iter().sum();
    let expect = (w[0] * 100.0 + w[1] * 200.0 + w[2] * 300.0) / (sw + 1e-9);
    for v in &x0 {
        assert!((v - expect).abs() < 1e-9, "{v} vs {expect}");
    }
    // i.e. the fitness-weighted mean (175) shrunk by sum w / (sum w + 1e-9)
    let mean = (100.0 + 3.0 * 200.0) / 4.0;
    assert!((x0[0] - mean * sw / (sw + 1e-9)).abs() < 1e-6);
}

/// Latent variant: distances on the keys, average of x.
#[test]
fn latent_x0_uses_keys_for_distance_and_x_for_average() {
    let x = [1.0, 2.0, 3.0, 4.0]; // 2 members in 2-D
    let keys = [0.0, 10.0]; // 1-D latent, far apart
    let g = [1.0, 1.0];
    let x0 = estimate_x0(&x, 2, &keys, 1, &g, 0.98);
    // alpha = 0.98: the cross kernels underflow (|10 - 0| / sqrt(0.04) = 50 sd), so x0_i ~ x_i
    assert!((x0[0] - 1.0).abs() < 1e-6 && (x0[1] - 2.0).abs() < 1e-6);
    assert!((x0[2] - 3.0).abs() < 1e-6 && (x0[3] - 4.0).abs() < 1e-6);
    // identical keys: both members get the same x0 (the weighted mean of x)
    let x0 = estimate_x0(&x, 2, &[0.0, 0.0], 1, &[1.0, 3.0], 0.5);
    assert!((x0[0] - x0[2]).abs() < 1e-12 && (x0[0] - 2.5).abs() < 1e-6);
}

#[test]
fn ddim_step_with_alpha_prev_one_is_identity_on_x0() {
    let mut rng = rng_from_seed(3);
    let xt = [0.3, -1.2, 2.5, 0.0];
    let x0 = [0.1, -0.4, 1.5, -2.0];
    for noise in [0.0, 0.1, 1.0] {
        let next = ddim_step(&xt, &x0, 0.5, 1.0, noise, &mut rng);
        for (a, b) in next.iter().zip(&x0) {
            assert!((a - b).abs() < 1e-12, "noise {noise}: {next:?}");
        }
    }
    // and in the limit alpha_prev -> 1
    let next = ddim_step(&xt, &x0, 0.5, 1.0 - 1e-14, 1.0, &mut rng);
    for (a, b) in next.iter().zip(&x0) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn ddim_step_deterministic_formula() {
    let mut rng = rng_from_seed(0);
    let (at, ap) = (0.25, 0.5);
    let next = ddim_step(&[1.0], &[2.0], at, ap, 0.0, &mut rng);
    let eps = (1.0 - 0.5 * 2.0) / 0.75f64.sqrt();
    let expect = 0.5f64.sqrt() * 2.0 + 0.5f64.sqrt() * eps;
    assert!((next[0] - expect).abs() < 1e-12);
    // sigma formula
    let s = ddpm_sigma(at, ap);
    assert!((s - (0.5f64 / 0.75 * 0.5).sqrt()).abs() < 1e-15);
}

#[test]
fn schedules_are_monotone_with_stated_endpoints() {
    let n = 25;
    let lin = AlphaSchedule::Linear.alphas(n).unwrap();
    assert!((lin[0] - 0.9999).abs() < 1e-15 && (lin[n - 1] - 1e-8).abs() < 1e-20);
    let cos = AlphaSchedule::Cosine.alphas(n).unwrap();
    assert!((cos[0] - 0.999).abs() < 1e-12);
    assert!((cos[n - 1] - 1e-3 * 0.999 / 1.001).abs() < 1e-12);
    let ddpm = AlphaSchedule::Ddpm.alphas(n).unwrap();
    assert!((ddpm[0] - (1.0 - 1e-4)).abs() < 1e-9, "{}", ddpm[0]);
    assert!((ddpm[n - 1] - 1e-4).abs() < 1e-9, "{}", ddpm[n - 1]);
    let pow = AlphaSchedule::LinearPower(2.0).alphas(n).unwrap();
    assert!((pow[0] - 0.9999f64.powi(2)).abs() < 1e-12 && (pow[n - 1] - 1e-8).abs() < 1e-15);
    assert_eq!(AlphaSchedule::LinearPower(1.0).alphas(n).unwrap(), lin);
    for a in [&lin, &cos, &ddpm, &pow] {
        assert!(
            a.windows(2).all(|w| w[1] < w[0]),
            "not strictly decreasing: {a:?}"
        );
        assert!(a.iter().all(|v| *v > 0.0 && *v < 1.0));
    }
    for n in [2, 3, 100, 1000] {
        for s in [AlphaSchedule::Linear, AlphaSchedule::Cosine, AlphaSchedule::Ddpm] {
            let a = s.alphas(n).unwrap();
            assert_eq!(a.len(), n);
            assert!(a.windows(2).all(|w| w[1] < w[0]), "{s:?} n={n}");
        }
    }
}

#[test]
fn bad_configs_are_typed_errors_naming_the_field() {
    let field = |r: Result<DiffEvo, EvolveError>| match r {
        Err(EvolveError::InvalidConfig { field, .. }) => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    let base = DiffEvoConfig::new(2);
    assert_eq!(
        field(DiffEvo::new(
            DiffEvoConfig {
                population_size: 0,
                ..base.clone()
            },
            0
        )),
        "population_size"
    );
    assert_eq!(
        field(DiffEvo::new(
            DiffEvoConfig {
                dim: 0,
                ..base.clone()
            },
            0
        )),
        "dim"
    );
    assert_eq!(
        field(DiffEvo::new(
            DiffEvoConfig {
                num_steps: 1,
                ..base.clone()
            },
            0
        )),
        "num_steps"
    );
    assert_eq!(
        field(DiffEvo::new(
            DiffEvoConfig {
                scaling: 0.0,
                ..base.clone()
            },
            0
        )),
        "scaling"
    );
    assert_eq!(
        field(DiffEvo::new(
            DiffEvoConfig {
                noise: -1.0,
                ..base.clone()
            },
            0
        )),
        "noise"
    );
    assert_eq!(
        field(DiffEvo::new(
            DiffEvoConfig {
                latent_dim: Some(0),
                ..base.clone()
            },
            0
        )),
        "latent_dim"
    );
    let m = FitnessMapping::Energy { temperature: 0.0 };
    assert_eq!(
        field(DiffEvo::new(
            DiffEvoConfig {
                mapping: m,
                ..base.clone()
            },
            0
        )),
        "temperature"
    );
    let m = FitnessMapping::Power {
        power: -1.0,
        temperature: 1.0,
    };
    assert_eq!(
        field(DiffEvo::new(
            DiffEvoConfig {
                mapping: m,
                ..base.clone()
            },
            0
        )),
        "power"
    );
    let s = AlphaSchedule::Custom(vec![0.9, 1.5]);
    assert_eq!(
        field(DiffEvo::new(
            DiffEvoConfig {
                schedule: s,
                num_steps: 2,
                ..base.clone()
            },
            0
        )),
        "schedule"
    );
    let msg = EvolveError::InvalidConfig {
        field: "population_size",
        reason: "x".into(),
    }
    .to_string();
    assert!(msg.contains("population_size"));
}

#[test]
fn ask_tell_protocol_errors() {
    let cfg = DiffEvoConfig {
        population_size: 8,
        num_steps: 3,
        ..DiffEvoConfig::new(2)
    };
    let mut de = DiffEvo::new(cfg, 1).unwrap();
    assert_eq!(de.tell(&[0.0; 8]), Err(EvolveError::TellWithoutAsk));
    let p1 = de.ask().unwrap();
    assert_eq!(de.ask().unwrap(), p1, "ask twice returns the pending population");
    assert_eq!(
        de.tell(&[1.0; 3]),
        Err(EvolveError::FitnessLength { expected: 8, got: 3 })
    );
    let neg = [1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    assert!(matches!(
        de.tell(&neg),
        Err(EvolveError::NegativeFitness { index: 1, .. })
    ));
    assert_eq!(de.generation(), 0, "failed tell leaves the state unchanged");
    de.tell(&[1.0; 8]).unwrap();
    de.ask().unwrap();
    de.tell(&[1.0; 8]).unwrap();
    assert!(de.is_done());
    assert_eq!(de.ask(), Err(EvolveError::Finished { generations: 2 }));
    assert_eq!(de.x0_estimate().unwrap().len(), 8);
}

#[test]
fn non_finite_fitness_is_worst_and_counted() {
    for latent in [None, Some(1)] {
        let cfg = DiffEvoConfig {
            population_size: 16,
            num_steps: 10,
            latent_dim: latent,
            ..DiffEvoConfig::new(2)
        };
        let mut de = DiffEvo::new(cfg, 5).unwrap();
        let mut expected = 0;
        while !de.is_done() {
            let pop = de.ask().unwrap();
            let f: Vec<f64> = pop
                .iter()
                .enumerate()
                .map(|(i, x)| match i % 4 {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    _ => (-(x[0] * x[0])).exp(),
                })
                .collect();
            expected += 8;
            de.tell(&f).unwrap();
        }
        assert_eq!(de.non_finite_count(), expected);
        assert!(de.population().iter().flatten().all(|v| v.is_finite()));
        assert!(de.best().unwrap().fitness.is_finite());
    }
    // all fitness non-finite: still no panic, finite population
    let cfg = DiffEvoConfig {
        population_size: 4,
        num_steps: 5,
        ..DiffEvoConfig::new(3)
    };
    let mut de = DiffEvo::new(cfg, 0).unwrap();
    while !de.is_done() {
        de.ask().unwrap();
        de.tell(&[f64::NAN; 4]).unwrap();
    }
    assert!(de.population().iter().flatten().all(|v| v.is_finite()));
    assert!(de.best().is_none());
}

fn run(seed: u64, latent: Option<usize>) -> Vec<Vec<f64>> {
    let cfg = DiffEvoConfig {
        population_size: 32,
        num_steps: 10,
        latent_dim: latent,
        ..DiffEvoConfig::new(3)
    };
    let mut de = DiffEvo::new(cfg, seed).unwrap();
    while !de.is_done() {
        let pop = de.ask().unwrap();
        let f: Vec<f64> = pop
            .iter()
            .map(|x| (-x.iter().map(|v| v * v).sum::<f64>()).exp())
            .collect();
        de.tell(&f).unwrap();
    }
    de.population()
}

#[test]
fn same_seed_same_population() {
    assert_eq!(run(11, None), run(11, None));
    assert_eq!(run(11, Some(2)), run(11, Some(2)));
    assert_ne!(run(11, None), run(12, None));
}

/// Scaling: `ask` returns `x * scaling`; `set_population` divides by it.
#[test]
fn scaling_is_applied_to_asked_population() {
    let cfg = DiffEvoConfig {
        population_size: 4,
        scaling: 4.0,
        ..DiffEvoConfig::new(2)
    };
    let mut de = DiffEvo::new(cfg, 0).unwrap();
    let pop = vec![vec![4.0, -8.0]; 4];
    de.set_population(&pop).unwrap();
    assert_eq!(de.ask().unwrap(), pop);
    assert!(matches!(
        de.set_population(&pop[..2]),
        Err(EvolveError::Shape { .. })
    ));
}

/// The latent projection has unit-norm rows.
#[test]
fn latent_projection_rows_are_unit_norm() {
    let cfg = DiffEvoConfig {
        latent_dim: Some(3),
        ..DiffEvoConfig::new(10)
    };
    let de = DiffEvo::new(cfg, 0).unwrap();
    let e = de.projection().unwrap();
    assert_eq!(e.len(), 30);
    for row in e.chunks(10) {
        assert!((row.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-12);
    }
}

/// On the authors' two-peak density (peaks at (-1,-1) and (1,1)), Diffusion Evolution
/// puts most of the population on the peaks and keeps both.
#[test]
fn diffevo_concentrates_on_both_peaks() {
    for seed in 0..3 {
        let cfg = DiffEvoConfig {
            population_size: 256,
            num_steps: 50,
            noise: 0.1,
            scaling: 1.5,
            ..DiffEvoConfig::new(2)
        };
        let mut de = DiffEvo::new(cfg, seed).unwrap();
        while !de.is_done() {
            let pop = de.ask().unwrap();
            let f: Vec<f64> = pop
                .iter()
                .map(|x| latentevo_evolve::testfns::two_peak_density(x))
                .collect();
            de.tell(&f).unwrap();
        }
        let pop = de.population();
        let near = |c: f64| pop.iter().filter(|x| (x[0] - c).hypot(x[1] - c) < 0.3).count();
        let (a, b) = (near(-1.0), near(1.0));
        assert!(
            a + b >= 256 * 8 / 10,
            "seed {seed}: only {a}+{b} of 256 near a peak"
        );
        assert!(
            a >= 256 / 5 && b >= 256 / 5,
            "seed {seed}: one peak lost ({a}, {b})"
        );
    }
}

/// Energy mapping: monotone, best member -> 1, NaN -> 0.
#[test]
fn fitness_mappings() {
    let g = FitnessMapping::Energy { temperature: 2.0 }
        .map(&[1.0, 3.0, f64::NAN, f64::NEG_INFINITY])
        .unwrap();
    assert!((g[1] - 1.0).abs() < 1e-15 && (g[0] - (-1.0f64).exp()).abs() < 1e-15);
    assert_eq!((g[2], g[3]), (0.0, 0.0));
    let g = FitnessMapping::Power {
        power: 2.0,
        temperature: 2.0,
    }
    .map(&[4.0, -1.0, f64::NAN])
    .unwrap();
    assert_eq!(g, vec![4.0, 0.0, 0.0]);
    assert_eq!(
        FitnessMapping::Identity.map(&[0.5, f64::NAN]).unwrap(),
        vec![0.5, 0.0]
    );
}
