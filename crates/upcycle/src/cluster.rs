//! Clustering and regression used to build routers and expert splits from data:
//! spherical k-means (k-means++ seeding), balanced k-means (equal cluster sizes), and
//! ridge regression. All deterministic given the seed.

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{CandleContext, Result, UpcycleError};

fn unit_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

fn rows_of(t: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    t.to_dtype(DType::F32)?.to_vec2::<f32>()
}

/// k-means++ seeding on cosine distance over unit rows `x`; returns row indices.
fn seed_plus_plus(x: &[Vec<f32>], k: usize, rng: &mut StdRng) -> Vec<usize> {
    let n = x.len();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f32>();
    let mut chosen = vec![rng.random_range(0..n)];
    let mut best: Vec<f32> = x.iter().map(|r| 1.0 - dot(r, &x[chosen[0]])).collect();
    while chosen.len() < k {
        let total: f64 = best.iter().map(|d| d.max(0.0) as f64).sum();
        let next = if total <= 0.0 {
            (0..n).find(|i| !chosen.contains(i)).unwrap_or(0)
        } else {
            let mut r = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, d) in best.iter().enumerate() {
                r -= d.max(0.0) as f64;
                if r <= 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        };
        chosen.push(next);
        for (i, b) in best.iter_mut().enumerate() {
            *b = b.min(1.0 - dot(&x[i], &x[next]));
        }
    }
    chosen
}

/// Spherical k-means of the rows of `x` (`[n, d]`): `k` unit centroids `[k, d]`.
pub fn spherical_kmeans(x: &Tensor, k: usize, iters: usize, seed: u64) -> Result<Tensor> {
    let ctx = || "spherical k-means".to_string();
    let (n, d) = x.dims2().ctx(ctx)?;
    if k == 0 || n < k {
        return Err(UpcycleError::Options(format!(
            "k-means needs at least {k} calibration tokens, got {n}"
        )));
    }
    let xu = unit_rows(&x.to_dtype(DType::F32).ctx(ctx)?).ctx(ctx)?;
    let rows = rows_of(&xu).ctx(ctx)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let init = seed_plus_plus(&rows, k, &mut rng);
    let mut cent: Vec<Vec<f32>> = init.iter().map(|&i| rows[i].clone()).collect();
    for _ in 0..iters {
        let c = Tensor::from_vec(cent.concat(), (k, d), &Device::Cpu).ctx(ctx)?;
        let sims = rows_of(&xu.matmul(&c.t().ctx(ctx)?).ctx(ctx)?).ctx(ctx)?;
        let mut sums = vec![vec![0f32; d]; k];
        let mut counts = vec![0usize; k];
        let mut worst = (f32::INFINITY, 0usize);
        for (i, s) in sims.iter().enumerate() {
            let (a, best) = argmax(s);
            counts[a] += 1;
            for (acc, v) in sums[a].iter_mut().zip(&rows[i]) {
                *acc += v;
            }
            if best < worst.0 {
                worst = (best, i);
            }
        }
        for j in 0..k {
            if counts[j] == 0 {
                sums[j] = rows[worst.1].clone();
            }
            let norm = sums[j].iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            cent[j] = sums[j].iter().map(|v| v / norm).collect();
        }
    }
    Tensor::from_vec(cent.concat(), (k, d), &Device::Cpu).ctx(ctx)
}

/// Balanced k-means of the rows of `x` (`[m, d]`) into `k` clusters of exactly `m / k`
/// rows each (cosine similarity, greedy capacity-constrained assignment). Returns the
/// cluster of each row.
pub fn balanced_kmeans(x: &Tensor, k: usize, iters: usize, seed: u64) -> Result<Vec<usize>> {
    let ctx = || "balanced k-means".to_string();
    let (m, d) = x.dims2().ctx(ctx)?;
    if k == 0 || m % k != 0 {
        return Err(UpcycleError::Options(format!(
            "cannot split {m} neurons into {k} equal groups"
        )));
    }
    let cap = m / k;
    let xu = unit_rows(&x.to_dtype(DType::F32).ctx(ctx)?).ctx(ctx)?;
    let rows = rows_of(&xu).ctx(ctx)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let init = seed_plus_plus(&rows, k, &mut rng);
    let mut cent: Vec<Vec<f32>> = init.iter().map(|&i| rows[i].clone()).collect();
    let mut assign = vec![0usize; m];
    for _ in 0..iters.max(1) {
        let c = Tensor::from_vec(cent.concat(), (k, d), &Device::Cpu).ctx(ctx)?;
        let sims = rows_of(&xu.matmul(&c.t().ctx(ctx)?).ctx(ctx)?).ctx(ctx)?;
        let mut pairs: Vec<(f32, usize, usize)> = Vec::with_capacity(m * k);
        for (i, s) in sims.iter().enumerate() {
            for (j, v) in s.iter().enumerate() {
                pairs.push((*v, i, j));
            }
        }
        // Highest similarity first; ties broken by index for determinism.
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut done = vec![false; m];
        let mut fill = vec![0usize; k];
        for (_, i, j) in pairs {
            if !done[i] && fill[j] < cap {
                done[i] = true;
                fill[j] += 1;
                assign[i] = j;
            }
        }
        for (j, c) in cent.iter_mut().enumerate() {
            let mut s = vec![0f32; d];
            for (i, r) in rows.iter().enumerate() {
                if assign[i] == j {
                    for (acc, v) in s.iter_mut().zip(r) {
                        *acc += v;
                    }
                }
            }
            let norm = s.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            *c = s.iter().map(|v| v / norm).collect();
        }
    }
    Ok(assign)
}

fn argmax(v: &[f32]) -> (usize, f32) {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &x) in v.iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best
}

/// Ridge regression without intercept: the `[k, d]` matrix `W` minimising
/// `|X W^T - Y|^2 + lambda |W|^2` for `X: [n, d]`, `Y: [n, k]`, with `lambda` relative
/// to the mean diagonal of `X^T X`.
pub fn ridge(x: &Tensor, y: &Tensor, lambda: f64) -> Result<Tensor> {
    let ctx = || "ridge regression".to_string();
    let x = x.to_dtype(DType::F64).ctx(ctx)?;
    let y = y.to_dtype(DType::F64).ctx(ctx)?;
    let (_, d) = x.dims2().ctx(ctx)?;
    let (_, k) = y.dims2().ctx(ctx)?;
    let xtx = x.t().ctx(ctx)?.matmul(&x).ctx(ctx)?.to_vec2::<f64>().ctx(ctx)?;
    let xty = x.t().ctx(ctx)?.matmul(&y).ctx(ctx)?.to_vec2::<f64>().ctx(ctx)?;
    let mean_diag = (0..d).map(|i| xtx[i][i]).sum::<f64>() / d as f64;
    let mut a: Vec<Vec<f64>> = xtx;
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += lambda * mean_diag.max(1e-12);
    }
    // Cholesky: a = L L^T.
    let mut l = vec![vec![0f64; d]; d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|p| l[i][p] * l[j][p]).sum();
            if i == j {
                let v = a[i][i] - s;
                if v <= 0.0 {
                    return Err(UpcycleError::Options(
                        "ridge regression: matrix not positive definite".into(),
                    ));
                }
                l[i][j] = v.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    let mut w = vec![0f64; k * d];
    for c in 0..k {
        // Solve L z = b, then L^T w = z.
        let mut z = vec![0f64; d];
        for i in 0..d {
            let s: f64 = (0..i).map(|p| l[i][p] * z[p]).sum();
            z[i] = (xty[i][c] - s) / l[i][i];
        }
        for i in (0..d).rev() {
            let s: f64 = (i + 1..d).map(|p| l[p][i] * w[c * d + p]).sum();
            w[c * d + i] = (z[i] - s) / l[i][i];
        }
    }
    a.clear();
    Tensor::from_vec(w, (k, d), &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .ctx(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> Tensor {
        // Three well-separated directions in 4-d, 10 noisy points each.
        let mut rng = StdRng::seed_from_u64(3);
        let dirs = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]];
        let mut v = Vec::new();
        for d in dirs {
            for _ in 0..10 {
                for x in d {
                    v.push(x + rng.random_range(-0.1f32..0.1));
                }
            }
        }
        Tensor::from_vec(v, (30, 4), &Device::Cpu).unwrap()
    }

    #[test]
    fn kmeans_finds_the_blobs_and_is_deterministic() {
        let x = blobs();
        let c = spherical_kmeans(&x, 3, 10, 7).unwrap();
        let c2 = spherical_kmeans(&x, 3, 10, 7).unwrap();
        assert_eq!(c.to_vec2::<f32>().unwrap(), c2.to_vec2::<f32>().unwrap());
        // Each blob's points share one nearest centroid, and blobs differ.
        let sims = unit_rows(&x).unwrap().matmul(&c.t().unwrap()).unwrap();
        let ids: Vec<u32> = sims.argmax(1).unwrap().to_vec1().unwrap();
        for b in 0..3 {
            assert!(ids[b * 10..b * 10 + 10].iter().all(|&i| i == ids[b * 10]));
        }
        assert!(ids[0] != ids[10] && ids[10] != ids[20] && ids[0] != ids[20]);
        assert!(spherical_kmeans(&x, 31, 3, 0).is_err());
    }

    #[test]
    fn balanced_kmeans_gives_equal_groups() {
        let x = blobs();
        let a = balanced_kmeans(&x, 3, 8, 1).unwrap();
        for j in 0..3 {
            assert_eq!(a.iter().filter(|&&g| g == j).count(), 10);
        }
        assert!(a[0..10].iter().all(|&g| g == a[0]));
        assert!(balanced_kmeans(&x, 4, 3, 1).is_err());
    }

    #[test]
    fn ridge_recovers_a_linear_map() {
        let mut rng = StdRng::seed_from_u64(5);
        let xs: Vec<f32> = (0..200 * 3).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let x = Tensor::from_vec(xs, (200, 3), &Device::Cpu).unwrap();
        let w = Tensor::new(&[[1.0f32, -2.0, 0.5], [0.0, 3.0, 1.0]], &Device::Cpu).unwrap();
        let y = x.matmul(&w.t().unwrap()).unwrap();
        let got = ridge(&x, &y, 1e-9).unwrap();
        let diff = (got - &w).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }
}
