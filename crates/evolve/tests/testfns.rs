//! The benchmark objectives: standard function values and the mapped fitness.

use latentevo_evolve::testfns::*;

#[test]
fn standard_function_values() {
    assert_eq!(rosenbrock(&[1.0, 1.0, 1.0]), 0.0);
    assert_eq!(rosenbrock(&[0.0, 0.0]), 1.0);
    assert_eq!(beale(&[3.0, 0.5]), 0.0);
    // Beale at the origin: 1.5^2 + 2.25^2 + 2.625^2
    assert!((beale(&[0.0, 0.0]) - (2.25 + 5.0625 + 6.890625)).abs() < 1e-12);
    for o in HIMMELBLAU_OPTIMA {
        assert!(himmelblau(&o) < 1e-9, "{o:?}: {}", himmelblau(&o));
    }
    assert!(ackley(&[0.0, 0.0]).abs() < 1e-12);
    // at (1, 1) the cosine term is e, so f = 20 (1 - exp(-0.2))
    assert!((ackley(&[1.0, 1.0]) - 20.0 * (1.0 - (-0.2f64).exp())).abs() < 1e-12);
    assert_eq!(rastrigin(&[0.0, 0.0]), 0.0);
    assert!((rastrigin(&[1.0, 1.0]) - 2.0).abs() < 1e-12);
    assert!((two_peak_density(&[1.0, 1.0]) - 1.0).abs() < 1e-12);
    assert!((two_peak_density(&[-1.0, -1.0]) - 1.0).abs() < 1e-12);
    assert!(two_peak_density(&[0.0, 0.0]) < 1e-40);
}

/// The mapped fitness is ~1 at the targets, 0 at the worst, `limit_val` outside the box.
#[test]
fn mapped_fitness_targets_and_box() {
    let near1 = |b: Benchmark, x: &[f64]| {
        let g = b.fitness(x);
        assert!(g > 0.999 && g <= 1.0, "{b:?} at {x:?}: {g}");
    };
    near1(Benchmark::Rosenbrock, &[1.0, 1.0]);
    near1(Benchmark::Beale, &[3.0, 0.5]);
    for o in HIMMELBLAU_OPTIMA {
        near1(Benchmark::Himmelblau, &o);
    }
    // Ackley / Rastrigin: the targets are the box maxima of f, at the four corners
    for (sx, sy) in [(1.0, 1.0), (-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0)] {
        near1(Benchmark::Rastrigin, &[3.51786 * sx, 3.51786 * sy]);
        let g = Benchmark::Ackley.fitness(&[3.614 * sx, 3.614 * sy]);
        assert!(g > 0.99, "Ackley corner: {g}");
    }
    // outside the box: limit_val 100 -> g = exp(-100/s) renormalised; 1e-9 -> 0
    let g = Benchmark::Rosenbrock.fitness(&[5.0, 0.0]);
    assert!((g - (-100.0f64 / 287.51).exp()).abs() < 1e-6, "{g}");
    assert_eq!(Benchmark::Ackley.fitness(&[4.5, 0.0]), 0.0);
    assert_eq!(Benchmark::Rastrigin.fitness(&[0.0, -4.01]), 0.0);
    // the worst point of Rosenbrock in the box maps to 0 (clamped, not negative)
    assert_eq!(Benchmark::Rosenbrock.fitness(&[-4.0, -4.0]), 0.0);
    // all values in [0, 1] on a grid
    for b in Benchmark::ALL {
        for i in 0..=40 {
            for j in 0..=40 {
                let x = [-4.0 + 0.2 * i as f64, -4.0 + 0.2 * j as f64];
                let g = b.fitness(&x);
                assert!((0.0..=1.0).contains(&g), "{b:?} {x:?} {g}");
            }
        }
    }
}
