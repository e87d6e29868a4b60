//! Projection of pooled latent vectors on their first two principal components.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Latent vectors projected on their first two principal components.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Projection {
    /// One `(round index, pc1, pc2)` per member whose vector is all finite (and at most 1e300
    /// in magnitude), in input order.
    pub points: Vec<(usize, f64, f64)>,
    /// Fractions of the total variance along PC1 and PC2; `None` when there is no variance.
    pub explained: Option<(f64, f64)>,
    /// How many members were left out because their vector had a non-finite entry.
    pub skipped: usize,
}

/// Fits a PCA on every all-finite vector of every round, pooled and centred, and projects
/// them on its first two components. All vectors must have the same dimension `d >= 1`
/// (the caller checks). With `d == 1`, or a single distinct point, PC2 is 0. Each component's
/// sign is fixed so that its largest-magnitude score is positive, which makes the picture
/// deterministic.
///
/// The eigen-decomposition is of the `d x d` scatter matrix, or of the `n x n` Gram matrix when
/// there are fewer vectors `n` than dimensions; both give the same scores.
pub(crate) fn project(latents: &[Vec<Vec<f64>>]) -> Projection {
    let mut rows: Vec<(usize, &[f64])> = Vec::new();
    let mut skipped = 0;
    for (r, members) in latents.iter().enumerate() {
        for v in members {
            if v.iter().all(|&x| crate::draw::plottable(x)) {
                rows.push((r, v));
            } else {
                skipped += 1;
            }
        }
    }
    let n = rows.len();
    let d = rows.first().map_or(0, |(_, v)| v.len());
    if n == 0 || d == 0 {
        return Projection {
            points: rows.iter().map(|&(r, _)| (r, 0.0, 0.0)).collect(),
            explained: None,
            skipped,
        };
    }

    let mut x = DMatrix::from_fn(n, d, |i, j| rows[i].1[j]);
    let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for j in 0..d {
        let mean = x.column(j).mean();
        x.column_mut(j).add_scalar_mut(-mean);
    }
    let total: f64 = x.iter().map(|v| v * v).sum();
    // Centring identical vectors can leave rounding residue; treat it as no variance.
    let noise = (n * d) as f64 * (1e-12 * scale).powi(2);
    if total <= noise || !total.is_finite() {
        return Projection {
            points: rows.iter().map(|&(r, _)| (r, 0.0, 0.0)).collect(),
            explained: None,
            skipped,
        };
    }

    let (scores, eigenvalues) = if n < d {
        let gram = &x * x.transpose();
        let eig = SymmetricEigen::new(gram);
        let order = descending(&eig.eigenvalues);
        let scores: Vec<DVector<f64>> = order
            .iter()
            .take(2)
            .map(|&k| eig.eigenvectors.column(k) * eig.eigenvalues[k].max(0.0).sqrt())
            .collect();
        (scores, order.iter().map(|&k| eig.eigenvalues[k]).collect())
    } else {
        let scatter = x.transpose() * &x;
        let eig = SymmetricEigen::new(scatter);
        let order = descending(&eig.eigenvalues);
        let scores: Vec<DVector<f64>> = order
            .iter()
            .take(2)
            .map(|&k| &x * eig.eigenvectors.column(k))
            .collect();
        (scores, order.iter().map(|&k| eig.eigenvalues[k]).collect())
    };
    let eigenvalues: Vec<f64> = eigenvalues;

    let component = |k: usize| -> Vec<f64> {
        match scores.get(k) {
            Some(s) => {
                let sign = s
                    .iter()
                    .copied()
                    .fold(0.0f64, |best, v| if v.abs() > best.abs() { v } else { best })
                    .signum();
                let sign = if sign == 0.0 { 1.0 } else { sign };
                s.iter().map(|v| v * sign).collect()
            }
            None => vec![0.0; n],
        }
    };
    let pc1 = component(0);
    let pc2 = component(1);
    let fraction = |k: usize| eigenvalues.get(k).map_or(0.0, |l| (l.max(0.0) / total).min(1.0));
    Projection {
        points: rows
            .iter()
            .enumerate()
            .map(|(i, &(r, _))| (r, pc1[i], pc2[i]))
            .collect(),
        explained: Some((fraction(0), fraction(1))),
        skipped,
    }
}

/// Indices of `values`, largest value first.
fn descending(values: &DVector<f64>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    /// Points on a line along (3, 4)/5 plus a small orthogonal offset: PC1 scores are the
    /// centred positions along the line, PC2 the orthogonal offsets.
    fn line_data() -> (Vec<Vec<Vec<f64>>>, Vec<f64>, Vec<f64>) {
        let ts = [-2.0, -1.0, 0.0, 1.0, 2.0];
        let os = [0.1, -0.1, 0.0, -0.1, 0.1];
        let (u, w) = ([0.6, 0.8], [-0.8, 0.6]);
        let v: Vec<Vec<f64>> = ts
            .iter()
            .zip(os)
            .map(|(&t, o)| vec![10.0 + t * u[0] + o * w[0], -3.0 + t * u[1] + o * w[1]])
            .collect();
        let mean_o = os.iter().sum::<f64>() / 5.0;
        (
            vec![v[..2].to_vec(), v[2..].to_vec()],
            ts.to_vec(),
            os.iter().map(|o| o - mean_o).collect(),
        )
    }

    #[test]
    fn recovers_known_components_up_to_sign() {
        let (latents, ts, os) = line_data();
        let p = project(&latents);
        assert_eq!(p.skipped, 0);
        assert_eq!(p.points.len(), 5);
        let rounds: Vec<usize> = p.points.iter().map(|q| q.0).collect();
        assert_eq!(rounds, vec![0, 0, 1, 1, 1]);
        // Sign convention: the largest-magnitude score is positive.
        for (i, &(_, a, b)) in p.points.iter().enumerate() {
            assert!(close(a.abs(), ts[i].abs()), "pc1 {a} vs {}", ts[i]);
            assert!(close(b.abs(), os[i].abs()), "pc2 {b} vs {}", os[i]);
        }
        let (e1, e2) = p.explained.unwrap();
        let var_t: f64 = ts.iter().map(|t| t * t).sum();
        let var_o: f64 = os.iter().map(|o| o * o).sum();
        assert!(close(e1, var_t / (var_t + var_o)));
        assert!(close(e2, var_o / (var_t + var_o)));
    }

    #[test]
    fn gram_and_scatter_paths_agree() {
        // 3 points in 5 dimensions (Gram path) vs the same points padded to 6 points by
        // repeating them (scatter path): repeated points keep the same principal axes.
        let base = vec![
            vec![1.0, 2.0, 0.5, -1.0, 3.0],
            vec![0.0, -1.0, 2.5, 1.0, 0.0],
            vec![2.0, 0.5, -0.5, 0.0, 1.0],
        ];
        let few = project(std::slice::from_ref(&base));
        let mut doubled = base.clone();
        doubled.extend(base);
        let many = project(&[doubled]);
        for i in 0..3 {
            assert!(close(few.points[i].1, many.points[i].1));
            assert!(close(few.points[i].2, many.points[i].2));
        }
        let (a, b) = (few.explained.unwrap(), many.explained.unwrap());
        assert!(close(a.0, b.0) && close(a.1, b.1));
    }

    #[test]
    fn degenerate_inputs() {
        // One member: no variance.
        let p = project(&[vec![vec![1.0, 2.0, 3.0]]]);
        assert_eq!(p.points, vec![(0, 0.0, 0.0)]);
        assert_eq!(p.explained, None);
        // Identical members whose mean does not round exactly.
        let p = project(&[vec![vec![0.1, 0.7]; 3]]);
        assert!(p.points.iter().all(|&(_, a, b)| a == 0.0 && b == 0.0));
        // Dimension 1: PC2 is zero.
        let p = project(&[vec![vec![1.0], vec![3.0]], vec![vec![6.0]]]);
        let pc1: Vec<f64> = p.points.iter().map(|q| q.1).collect();
        let want = [-7.0 / 3.0, -1.0 / 3.0, 8.0 / 3.0];
        assert!(pc1.iter().zip(want).all(|(&a, b)| close(a, b)), "{pc1:?}");
        assert!(p.points.iter().all(|q| q.2 == 0.0));
        assert_eq!(p.explained, Some((1.0, 0.0)));
        // Non-finite members are skipped and counted.
        let p = project(&[vec![vec![1.0, f64::NAN], vec![0.0, 0.0], vec![1.0, 1.0]]]);
        assert_eq!(p.skipped, 1);
        assert_eq!(p.points.len(), 2);
        // Nothing at all.
        assert_eq!(project(&[]).points, vec![]);
        assert_eq!(project(&[vec![], vec![]]).points, vec![]);
    }
}
