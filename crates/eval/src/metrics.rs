//! The metrics of one (prompt, method) item: over the K ideas it returns, and over the
//! pool of every unmasked candidate it generated.
//!
//! Over the K ideas (`e_i` their MiniLM embeddings, `g` the greedy answer's):
//!
//! - `best_reward`, `mean_reward`: max and mean of the ideas' rewards (ideas with no
//!   reward, i.e. masked ones that `sample` returns as they come, left out);
//! - `vendi`: the Vendi score `exp(-sum l ln l)` of the eigenvalues `l` of `K/n`,
//!   `K_ij = cos(e_i, e_j)` (1 for identical ideas, n for orthogonal ones);
//! - `distinct_1`, `distinct_2`: unique word uni-/bigrams over all n-grams of the K texts
//!   together (lower-cased, split on whitespace);
//! - `novelty`: `mean_i (1 - cos(e_i, g))`, distance from the greedy answer;
//! - `distinct_ideas`: groups of the greedy partition at the cosine threshold (an idea
//!   joins the first group whose first member it has cosine >= threshold with);
//! - `mean_fluency`: mean over ideas of the mean log-prob per token under the unperturbed
//!   model; `mean_kl`: mean over ideas of the mean per-token KL(perturbed || base);
//! - `masked_share`: masked candidates / all candidates generated.
//!
//! Over the pool (the unmasked candidates): `vendi`, `distinct_ideas`,
//! `mean_pairwise_distance`, `mean_fluency`; and `degenerate_share`, the candidates the
//! degeneracy test flags (empty, garbage, loops, repetition) over all candidates.
//!
//! ```
//! use latentevo_eval::metrics::idea_metrics;
//! let texts = ["a brick doorstop", "a brick bookend"];
//! let emb = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
//! let m = idea_metrics(&texts, &emb, &[Some(1.0), Some(3.0)], &[-1.0, -2.0], &[0.0, 0.2], Some(&[1.0, 0.0]), 0.85, 0.25);
//! assert_eq!(m.best_reward, Some(3.0));
//! assert_eq!(m.distinct_ideas, 2);
//! assert!((m.vendi - 2.0).abs() < 1e-9);
//! assert!((m.novelty.unwrap() - 0.5).abs() < 1e-9);
//! assert!((m.distinct_1 - 4.0 / 6.0).abs() < 1e-12);
//! ```

use latentevo_reward::metrics::{cosine, distinct_ideas, distinct_n, mean_pairwise_distance, vendi_score};
use serde::{Deserialize, Serialize};

/// Metrics over the K ideas a method returns (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdeaMetrics {
    /// Ideas returned (K, or fewer when fewer distinct unmasked candidates exist).
    pub count: usize,
    /// The best reward.
    pub best_reward: Option<f64>,
    /// The mean reward.
    pub mean_reward: Option<f64>,
    /// The Vendi score of the embeddings.
    pub vendi: f64,
    /// Distinct-1 of the texts.
    pub distinct_1: f64,
    /// Distinct-2 of the texts.
    pub distinct_2: f64,
    /// Mean `1 - cosine` to the greedy answer.
    pub novelty: Option<f64>,
    /// Distinct ideas at the run's cosine threshold.
    pub distinct_ideas: usize,
    /// Mean fluency (log-prob per token under the unperturbed model).
    pub mean_fluency: Option<f64>,
    /// Mean KL to the unperturbed model (nats per token).
    pub mean_kl: Option<f64>,
    /// Masked candidates over all candidates generated.
    pub masked_share: f64,
}

/// Metrics over every unmasked candidate of an item (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolMetrics {
    /// Candidates generated.
    pub candidates: usize,
    /// Candidates not masked (the pool).
    pub unmasked: usize,
    /// The pool's Vendi score.
    pub vendi: f64,
    /// Distinct ideas in the pool.
    pub distinct_ideas: usize,
    /// Mean `1 - cosine` over pairs of the pool.
    pub mean_pairwise_distance: f64,
    /// Mean fluency of the pool.
    pub mean_fluency: Option<f64>,
    /// Degenerate candidates over all candidates.
    pub degenerate_share: f64,
}

/// The mean of the finite values, `None` when there is none.
pub fn finite_mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        sum += v;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// The metrics of K ideas: their texts, embeddings, rewards (`None` for a masked one),
/// fluencies and KLs, the greedy answer's embedding, the distinct-ideas threshold, and
/// the masked share of the item's candidates.
#[allow(clippy::too_many_arguments)]
pub fn idea_metrics(
    texts: &[&str],
    embeddings: &[Vec<f32>],
    rewards: &[Option<f64>],
    fluency: &[f64],
    kl: &[f64],
    reference: Option<&[f32]>,
    threshold: f64,
    masked_share: f64,
) -> IdeaMetrics {
    let rewarded: Vec<f64> = rewards
        .iter()
        .flatten()
        .copied()
        .filter(|r| r.is_finite())
        .collect();
    IdeaMetrics {
        count: texts.len(),
        best_reward: rewarded.iter().copied().reduce(f64::max),
        mean_reward: finite_mean(rewarded.iter().copied()),
        vendi: vendi_score(embeddings),
        distinct_1: distinct_n(texts, 1),
        distinct_2: distinct_n(texts, 2),
        novelty: reference.and_then(|g| finite_mean(embeddings.iter().map(|e| 1.0 - cosine(e, g)))),
        distinct_ideas: distinct_ideas(embeddings, threshold),
        mean_fluency: finite_mean(fluency.iter().copied()),
        mean_kl: finite_mean(kl.iter().copied()),
        masked_share,
    }
}

/// The metrics of the pool: the unmasked candidates' embeddings and fluencies, the
/// number of candidates generated and how many of them are degenerate.
pub fn pool_metrics(
    embeddings: &[Vec<f32>],
    fluency: &[f64],
    candidates: usize,
    degenerate: usize,
    threshold: f64,
) -> PoolMetrics {
    let share = |n: usize| {
        if candidates == 0 {
            0.0
        } else {
            n as f64 / candidates as f64
        }
    };
    PoolMetrics {
        candidates,
        unmasked: embeddings.len(),
        vendi: vendi_score(embeddings),
        distinct_ideas: distinct_ideas(embeddings, threshold),
        mean_pairwise_distance: mean_pairwise_distance(embeddings),
        mean_fluency: finite_mean(fluency.iter().copied()),
        degenerate_share: share(degenerate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sets_give_documented_values() {
        let m = idea_metrics(&[], &[], &[], &[], &[], Some(&[1.0]), 0.85, 1.0);
        assert_eq!((m.count, m.vendi, m.distinct_ideas), (0, 0.0, 0));
        assert_eq!(
            (m.best_reward, m.mean_reward, m.novelty, m.mean_fluency),
            (None, None, None, None)
        );
        let p = pool_metrics(&[], &[], 0, 0, 0.85);
        assert_eq!((p.unmasked, p.degenerate_share, p.mean_fluency), (0, 0.0, None));
    }

    #[test]
    fn masked_ideas_count_for_diversity_not_reward() {
        // `sample` returns its first K as they come: a masked one has no reward.
        let emb = vec![vec![1.0, 0.0], vec![1.0, 0.0], vec![0.0, 1.0]];
        let m = idea_metrics(
            &["x y", "x y", "z"],
            &emb,
            &[Some(2.0), None, Some(0.5)],
            &[-1.0, f64::NAN, -3.0],
            &[0.0, 0.0, 0.0],
            None,
            0.85,
            1.0 / 3.0,
        );
        assert_eq!(m.best_reward, Some(2.0));
        assert_eq!(m.mean_reward, Some(1.25));
        assert_eq!(m.mean_fluency, Some(-2.0));
        assert_eq!(m.distinct_ideas, 2);
        assert_eq!(m.novelty, None);
        // Two identical and one orthogonal: eigenvalues of K/3 are 2/3 and 1/3.
        let h: f64 = -(2.0f64 / 3.0) * (2.0f64 / 3.0).ln() - (1.0f64 / 3.0) * (1.0f64 / 3.0).ln();
        assert!((m.vendi - h.exp()).abs() < 1e-9, "{}", m.vendi);
        let p = pool_metrics(&emb, &[-1.0, -2.0, -3.0], 4, 1, 0.85);
        assert_eq!((p.unmasked, p.distinct_ideas, p.degenerate_share), (3, 2, 0.25));
        assert_eq!(p.mean_fluency, Some(-2.0));
    }
}
