//! From a latent `z` (dimension `m`) to a perturbation of the residual stream:
//! `delta = s * rms(h) * sqrt(d / m) * shape ⊙ (B z)`.
//!
//! `B` (`d x m`, orthonormal columns) is the [`Basis`](crate::Basis); `shape` is 1 (isotropic) or each
//! hidden dimension's standard deviation over the prompt's positions, normalised to RMS 1
//! ([`Shaping::PerDim`]); `rms(h)` is the RMS of the hidden states entering the layer over
//! the prompt. For `z ~ N(0, I)` and isotropic shaping the perturbation's RMS per
//! dimension is then `s * rms(h)`, so `s` means the same on every model and layer.
//!
//! A latent is used by its direction: `z` is rescaled to norm `sqrt(m)` (the typical norm
//! of `N(0, I_m)`) before it is decoded. The scale is calibrated for that norm, so every
//! candidate perturbs the model by about the target KL; without this, an optimiser that
//! averages latents (Diffusion Evolution's x0 estimate, a CMA-ES mean) shrinks them toward
//! zero and the perturbation, and the variety, vanish over the rounds.

use candle_core::{Device, Tensor};
use nalgebra::{DMatrix, SymmetricEigen};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::config::Shaping;
use crate::error::{EngineError, Result};

/// The fixed linear map from latents to perturbations for one prompt and layer.
#[derive(Debug, Clone)]
pub struct LatentMap {
    /// `m` rows of `d`: row `j` is the perturbation of the unit latent `e_j` at `s = 1`.
    rows: Vec<Vec<f64>>,
    hidden: usize,
    /// RMS of the hidden states over the prompt.
    pub hidden_rms: f64,
}

impl LatentMap {
    /// Builds the map from the prompt's hidden states entering the layer (`positions x d`),
    /// a basis `B` given as `m` orthonormal rows of `d`, and the shaping.
    pub fn new(hidden_states: &[Vec<f64>], basis: Vec<Vec<f64>>, shaping: Shaping) -> Result<Self> {
        let d = hidden_states.first().map_or(0, Vec::len);
        if d == 0 || basis.iter().any(|b| b.len() != d) {
            return Err(EngineError::Unsupported(
                "hidden states and basis disagree in size".into(),
            ));
        }
        let n = hidden_states.len() as f64;
        let hidden_rms = (hidden_states.iter().flatten().map(|v| v * v).sum::<f64>() / (n * d as f64)).sqrt();
        let shape: Vec<f64> = match shaping {
            Shaping::Isotropic => vec![1.0; d],
            Shaping::PerDim => {
                let std: Vec<f64> = (0..d)
                    .map(|k| {
                        let mean = hidden_states.iter().map(|h| h[k]).sum::<f64>() / n;
                        (hidden_states.iter().map(|h| (h[k] - mean).powi(2)).sum::<f64>() / n).sqrt()
                    })
                    .collect();
                let rms = (std.iter().map(|v| v * v).sum::<f64>() / d as f64).sqrt();
                if rms > 0.0 {
                    std.iter().map(|v| v / rms).collect()
                } else {
                    // One prompt position has no spread: fall back to isotropic.
                    vec![1.0; d]
                }
            }
        };
        let m = basis.len();
        let factor = hidden_rms * (d as f64 / m as f64).sqrt();
        let rows = basis
            .into_iter()
            .map(|b| b.iter().zip(&shape).map(|(v, s)| v * s * factor).collect())
            .collect();
        Ok(LatentMap {
            rows,
            hidden: d,
            hidden_rms,
        })
    }

    /// Latent dimension `m`.
    pub fn latent_dim(&self) -> usize {
        self.rows.len()
    }

    /// The perturbations `s * M (sqrt(m) z / |z|)` of a population of latents,
    /// `[population, hidden]` (f32); `z = 0` gives no perturbation.
    pub fn deltas(&self, latents: &[Vec<f64>], scale: f64, device: &Device) -> Result<Tensor> {
        let mut out = Vec::with_capacity(latents.len() * self.hidden);
        let typical = (self.rows.len() as f64).sqrt();
        for z in latents {
            let norm = z.iter().map(|v| v * v).sum::<f64>().sqrt();
            let unit = if norm > 0.0 { typical / norm } else { 0.0 };
            let mut delta = vec![0.0f64; self.hidden];
            for (zj, row) in z.iter().zip(&self.rows) {
                delta
                    .iter_mut()
                    .zip(row)
                    .for_each(|(d, r)| *d += scale * zj * unit * r);
            }
            out.extend(delta.into_iter().map(|v| v as f32));
        }
        Ok(Tensor::from_vec(out, (latents.len(), self.hidden), device)?)
    }
}

/// A random orthonormal basis: `m` rows of `d` (Gram-Schmidt on Gaussian vectors).
pub fn random_basis(d: usize, m: usize, seed: u64) -> Result<Vec<Vec<f64>>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    complete_basis(Vec::new(), d, m, &mut rng)
}

/// The top `m` principal directions of the rows of `x` (`n x d`), completed with random
/// orthonormal directions when `x` has fewer than `m` directions of variance.
pub fn pca_basis(x: &[Vec<f64>], m: usize, seed: u64) -> Result<Vec<Vec<f64>>> {
    let (n, d) = (x.len(), x.first().map_or(0, Vec::len));
    let mean: Vec<f64> = (0..d)
        .map(|k| x.iter().map(|r| r[k]).sum::<f64>() / n as f64)
        .collect();
    let centred = DMatrix::from_fn(n, d, |i, k| x[i][k] - mean[k]);
    top_right_singular(&centred, m, seed)
}

/// The top `m` right-singular directions of the stacked weight matrices `w` (each
/// `rows x d`): the subspace of the hidden space those weights read most.
pub fn weights_basis(weights: &[Vec<Vec<f64>>], m: usize, seed: u64) -> Result<Vec<Vec<f64>>> {
    let rows: Vec<&Vec<f64>> = weights.iter().flatten().collect();
    let d = rows.first().map_or(0, |r| r.len());
    let stacked = DMatrix::from_fn(rows.len(), d, |i, k| rows[i][k]);
    top_right_singular(&stacked, m, seed)
}

fn top_right_singular(a: &DMatrix<f64>, m: usize, seed: u64) -> Result<Vec<Vec<f64>>> {
    let d = a.ncols();
    // Eigenvectors of the d x d Gram matrix are the right-singular vectors.
    let gram = a.transpose() * a;
    let eig = SymmetricEigen::new(gram);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
    let top = eig.eigenvalues[order[0]].max(0.0);
    let chosen: Vec<Vec<f64>> = order
        .into_iter()
        .take(m)
        .filter(|&i| eig.eigenvalues[i] > top * 1e-10 && top > 0.0)
        .map(|i| eig.eigenvectors.column(i).iter().copied().collect())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    complete_basis(chosen, d, m, &mut rng)
}

/// Extends orthonormal `rows` with random directions (Gram-Schmidt) to `m` rows of `d`.
fn complete_basis(
    mut rows: Vec<Vec<f64>>,
    d: usize,
    m: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<f64>>> {
    if m > d {
        return Err(EngineError::config(
            "latent-dim",
            format!("{m} exceeds the hidden size {d}"),
        ));
    }
    let mut attempts = 0;
    while rows.len() < m {
        attempts += 1;
        if attempts > 10 * m + 100 {
            return Err(EngineError::Unsupported(
                "could not complete an orthonormal basis".into(),
            ));
        }
        let mut v: Vec<f64> = (0..d).map(|_| StandardNormal.sample(rng)).collect();
        for _ in 0..2 {
            for r in &rows {
                let dot: f64 = v.iter().zip(r).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(r).for_each(|(a, b)| *a -= dot * b);
            }
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-6 {
            rows.push(v.into_iter().map(|a| a / norm).collect());
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orthonormal(rows: &[Vec<f64>]) -> bool {
        rows.iter().enumerate().all(|(i, a)| {
            rows.iter().enumerate().all(|(j, b)| {
                let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                (dot - f64::from(u8::from(i == j))).abs() < 1e-9
            })
        })
    }

    #[test]
    fn bases_are_orthonormal() {
        assert!(orthonormal(&random_basis(12, 5, 3).unwrap()));
        let x: Vec<Vec<f64>> = (0..3)
            .map(|i| (0..12).map(|k| ((i * 7 + k * 3) % 5) as f64).collect())
            .collect();
        // Three points span at most two directions: the rest is completed at random.
        let pca = pca_basis(&x, 6, 1).unwrap();
        assert_eq!(pca.len(), 6);
        assert!(orthonormal(&pca));
        assert!(random_basis(4, 5, 0).is_err());
    }

    #[test]
    fn pca_finds_the_direction_of_variance() {
        // Points along (1, 1, 0) / sqrt(2) plus tiny noise in the third coordinate.
        let x: Vec<Vec<f64>> = (0..20)
            .map(|i| {
                let t = i as f64 - 10.0;
                vec![t, t, 0.01 * ((i * 7919) % 13) as f64]
            })
            .collect();
        let b = pca_basis(&x, 1, 0).unwrap();
        let c = std::f64::consts::FRAC_1_SQRT_2;
        assert!(
            (b[0][0].abs() - c).abs() < 1e-3 && (b[0][1].abs() - c).abs() < 1e-3,
            "{b:?}"
        );
    }

    #[test]
    fn isotropic_perturbation_has_the_requested_rms() {
        let d = 64;
        let hidden: Vec<Vec<f64>> = (0..8)
            .map(|i| (0..d).map(|k| ((i + k) % 3) as f64 - 1.0).collect())
            .collect();
        let map = LatentMap::new(&hidden, random_basis(d, d, 0).unwrap(), Shaping::Isotropic).unwrap();
        // With a full basis, |B z| = |z| exactly: z of norm sqrt(m) gives RMS s * rms(h), and
        // any other norm is rescaled to it.
        let z = vec![vec![3.0; d]];
        let delta = map
            .deltas(&z, 0.5, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let rms = (delta.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64).sqrt();
        assert!(
            (rms - 0.5 * map.hidden_rms).abs() < 1e-5,
            "{rms} vs {}",
            0.5 * map.hidden_rms
        );
    }
}
