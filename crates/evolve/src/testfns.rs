//! Standard test functions and the mapped objectives of the Diffusion Evolution
//! benchmarks (functions as in `bhartl/foobench`, mapping as in the authors'
//! `experiments/benchmarks`).

use std::f64::consts::PI;

/// Sphere `sum x_i^2` (minimum 0 at the origin).
pub fn sphere(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum()
}

/// Rosenbrock `sum_i (a - x_i)^2 + b (x_{i+1} - x_i^2)^2` with `a = 1`, `b = 100`
/// (minimum 0 at `(1, ..., 1)`).
pub fn rosenbrock(x: &[f64]) -> f64 {
    x.windows(2)
        .map(|w| (1.0 - w[0]).powi(2) + 100.0 * (w[1] - w[0] * w[0]).powi(2))
        .sum()
}

/// Beale (2-D): `(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2`
/// (minimum 0 at `(3, 0.5)`).
pub fn beale(x: &[f64]) -> f64 {
    let (a, b) = (x[0], x[1]);
    (1.5 - a + a * b).powi(2) + (2.25 - a + a * b * b).powi(2) + (2.625 - a + a * b.powi(3)).powi(2)
}

/// Himmelblau (2-D): `(x^2 + y - 11)^2 + (x + y^2 - 7)^2`; four minima of value 0,
/// see [`HIMMELBLAU_OPTIMA`].
pub fn himmelblau(x: &[f64]) -> f64 {
    let (a, b) = (x[0], x[1]);
    (a * a + b - 11.0).powi(2) + (a + b * b - 7.0).powi(2)
}

/// The four global minima of Himmelblau's function.
pub const HIMMELBLAU_OPTIMA: [[f64; 2]; 4] = [
    [3.0, 2.0],
    [-2.805118, 3.131312],
    [-3.779310, -3.283186],
    [3.584428, -1.848126],
];

/// Ackley (2-D, `a = 20`, `b = 0.2`, `c = 2 pi`):
/// `-a exp(-b sqrt((x^2 + y^2)/2)) - exp((cos cx + cos cy)/2) + a + e`.
pub fn ackley(x: &[f64]) -> f64 {
    let (a, b) = (x[0], x[1]);
    -20.0 * (-0.2 * (0.5 * (a * a + b * b)).sqrt()).exp()
        - (0.5 * ((2.0 * PI * a).cos() + (2.0 * PI * b).cos())).exp()
        + 20.0
        + std::f64::consts::E
}

/// Rastrigin (`A = 10`): `A n + sum (x_i^2 - A cos(2 pi x_i))`.
pub fn rastrigin(x: &[f64]) -> f64 {
    10.0 * x.len() as f64 + x.iter().map(|v| v * v - 10.0 * (2.0 * PI * v).cos()).sum::<f64>()
}

/// The authors' `two_peak_density` (`diffevo/examples.py`): two isotropic Gaussians of
/// std 0.1 at `(-1, -1)` and `(1, 1)`, normalised so that each peak has value ~1
/// (`density / (p1(mu1) + p2(mu2)) * 2`). Values lie in `[0, 1]`.
pub fn two_peak_density(x: &[f64]) -> f64 {
    let s2 = 0.1f64 * 0.1;
    let g = |m: f64| (-((x[0] - m).powi(2) + (x[1] - m).powi(2)) / (2.0 * s2)).exp();
    // max_prob = p1(mu1) + p2(mu2) = 2 * peak (the cross terms are ~e^-400)
    g(-1.0) + g(1.0)
}

/// The 2-D benchmark problems of the Diffusion Evolution paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Benchmark {
    /// Rosenbrock, minimised (target 0).
    Rosenbrock,
    /// Beale, minimised (target 0).
    Beale,
    /// Himmelblau, minimised (target 0).
    Himmelblau,
    /// Ackley, *maximised* inside the box (target: box maximum 12.5401).
    Ackley,
    /// Rastrigin 2-D, *maximised* inside the box (target: box maximum 64.6249).
    Rastrigin,
    /// The two-peak density (not in the paper's table; its value already lies in
    /// `[0, 1]` and is used as the mapped fitness directly, 0 outside the box).
    TwoPeaks,
}

impl Benchmark {
    /// The five problems of the paper's table plus the two-peak density.
    pub const ALL: [Benchmark; 6] = [
        Benchmark::Rosenbrock,
        Benchmark::Beale,
        Benchmark::Himmelblau,
        Benchmark::Ackley,
        Benchmark::Rastrigin,
        Benchmark::TwoPeaks,
    ];

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::Rosenbrock => "Rosenbrock",
            Benchmark::Beale => "Beale",
            Benchmark::Himmelblau => "Himmelblau",
            Benchmark::Ackley => "Ackley",
            Benchmark::Rastrigin => "Rastrigin 2D",
            Benchmark::TwoPeaks => "Two peaks",
        }
    }

    /// `(target, s, maxd, limit_val)` of the mapping (see [`Benchmark::fitness`]).
    pub fn params(self) -> (f64, f64, f64, f64) {
        match self {
            Benchmark::Rosenbrock => (0.0, 287.51, 40009.0, 100.0),
            Benchmark::Beale => (0.0, 20.0, 72769.2, 100.0),
            Benchmark::Himmelblau => (0.0, 17.01, 308.803, 100.0),
            Benchmark::Ackley => (-12.5401, 2.0, 12.5401, 1e-9),
            Benchmark::Rastrigin => (-64.6249, 30.0, 64.6249, 1e-9),
            Benchmark::TwoPeaks => (0.0, 1.0, 1.0, 0.0),
        }
    }

    /// The objective value `F` as foobench's `Objective` returns it: `f` (minimised
    /// problems) or `-f` (Ackley, Rastrigin), and `limit_val` outside `[-4, 4]^d`.
    pub fn objective(self, x: &[f64]) -> f64 {
        let (.., limit) = self.params();
        if x.iter().any(|v| !(-4.0..=4.0).contains(v)) {
            return limit;
        }
        match self {
            Benchmark::Rosenbrock => rosenbrock(x),
            Benchmark::Beale => beale(x),
            Benchmark::Himmelblau => himmelblau(x),
            Benchmark::Ackley => -ackley(x),
            Benchmark::Rastrigin => -rastrigin(x),
            Benchmark::TwoPeaks => two_peak_density(x),
        }
    }

    /// The mapped fitness in `[0, 1]` (maximised):
    /// `g = (exp(-|F - target| / (T s)) - p_min) / (1 - p_min)`,
    /// `p_min = exp(-maxd / (T s))`, `T = 1`, clamped at 0 (in the authors' float32
    /// the tiny negative values beyond `maxd` underflow to 0). For the two-peak density
    /// `g = F`.
    pub fn fitness(self, x: &[f64]) -> f64 {
        let f = self.objective(x);
        if self == Benchmark::TwoPeaks {
            return f;
        }
        let (target, s, maxd, _) = self.params();
        let p_min = (-maxd / s).exp();
        (((-(f - target).abs() / s).exp() - p_min) / (1.0 - p_min)).max(0.0)
    }
}
