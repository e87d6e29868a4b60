//! Selecting K diverse high-reward ideas: maximal marginal relevance with
//! near-duplicate merging.

use crate::metrics::cosine;

/// The default near-duplicate threshold of [`select_diverse`]: an item whose embedding
/// has cosine >= 0.85 with an already selected one is a duplicate of it (the threshold
/// [`crate::DEFAULT_DISTINCT_THRESHOLD`] counts distinct ideas with).
pub const DEFAULT_DEDUP_THRESHOLD: f64 = 0.85;

/// The default trade-off of [`select_diverse`]: equal weight on reward and on distance
/// from the ideas already selected.
pub const DEFAULT_LAMBDA: f64 = 0.5;

/// Up to `k` indices of diverse high-reward items, in the order chosen, by maximal
/// marginal relevance (Carbonell and Goldstein 1998):
///
/// - items with a non-finite reward are never selected (masked candidates have NaN);
///   only indices below both `rewards.len()` and `embeddings.len()` are considered;
/// - rewards are min-max normalised to [0, 1] over the eligible items (all 1 when they
///   are equal);
/// - each step picks the item maximising `lambda * reward - (1 - lambda) * max cosine
///   to the items selected so far` (the first step: best reward), ties going to the
///   lowest index;
/// - after each pick, every remaining item with cosine >= `dedup_threshold` to it is
///   merged into it (never selected).
///
/// Fewer than `k` indices come back when fewer distinct eligible items exist. With
/// `lambda = 1` it is best-first with deduplication. Defaults:
/// [`DEFAULT_DEDUP_THRESHOLD`] (0.85) and [`DEFAULT_LAMBDA`] (0.5).
///
/// ```
/// use latentevo_reward::select_diverse;
/// let rewards = [0.9, 0.8, 0.1];
/// let emb = vec![vec![1.0, 0.0], vec![0.99, 0.1], vec![0.0, 1.0]];
/// // Item 1 is a near-duplicate of item 0, so the second pick is item 2.
/// assert_eq!(select_diverse(&rewards, &emb, 2, 0.85, 0.5), vec![0, 2]);
/// ```
pub fn select_diverse(
    rewards: &[f64],
    embeddings: &[Vec<f32>],
    k: usize,
    dedup_threshold: f64,
    lambda: f64,
) -> Vec<usize> {
    let n = rewards.len().min(embeddings.len());
    let mut open: Vec<usize> = (0..n).filter(|&i| rewards[i].is_finite()).collect();
    let (lo, hi) = open
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &i| {
            (lo.min(rewards[i]), hi.max(rewards[i]))
        });
    let norm = |i: usize| {
        if hi > lo {
            (rewards[i] - lo) / (hi - lo)
        } else {
            1.0
        }
    };
    let mut kept: Vec<usize> = Vec::new();
    // The max cosine of each item to the kept ones.
    let mut max_sim = vec![f64::NEG_INFINITY; n];
    while kept.len() < k && !open.is_empty() {
        let mut best: Option<(usize, f64)> = None;
        for (pos, &i) in open.iter().enumerate() {
            let sim = if kept.is_empty() { 0.0 } else { max_sim[i] };
            let score = lambda * norm(i) - (1.0 - lambda) * sim;
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((pos, score));
            }
        }
        let Some((pos, _)) = best else { break };
        let pick = open.remove(pos);
        kept.push(pick);
        open.retain(|&j| {
            let c = cosine(&embeddings[pick], &embeddings[j]);
            let c = if c.is_finite() { c } else { 0.0 };
            max_sim[j] = max_sim[j].max(c);
            c < dedup_threshold
        });
    }
    kept
}
