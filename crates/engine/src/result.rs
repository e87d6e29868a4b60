//! What a search returns: every candidate, per-round statistics, and the selected ideas.

use serde::Serialize;

use crate::config::SearchConfig;

/// One evaluated candidate (a latent and the continuation it produced).
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// Round it was evaluated in (0-based).
    pub round: usize,
    /// Its index in that round's population.
    pub index: usize,
    /// The latent `z`.
    pub latent: Vec<f64>,
    /// The continuation's text.
    pub text: String,
    /// Generated tokens (the stop token included, if any).
    pub tokens: usize,
    /// The reward (weighted sum of the terms); `None` (null in JSON) when masked before
    /// scoring or a term was not a number.
    pub reward: Option<f64>,
    /// Each reward term's value, by name.
    pub terms: Vec<(String, f64)>,
    /// Mean log-probability of the continuation under the unperturbed model.
    pub fluency: f64,
    /// Mean `KL(perturbed || unperturbed)` of the next-token distributions (nats/token).
    pub kl: f64,
    /// Mean k3 estimate of the KL at the chosen tokens: `r - ln r - 1`, `r = p0 / p`.
    pub k3: f64,
    /// Share of locked top-k expert choices the free router would have changed.
    pub drift: f64,
    /// Group-relative advantage `(r - mean) / std` over the round's unmasked candidates.
    pub advantage: Option<f64>,
    /// Why the candidate got weight 0, if it did.
    pub masked: Option<String>,
}

/// Seconds spent in each phase of a round.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RoundTimings {
    /// The population's forward pass over the prompt from the shared prompt pass (perturbed
    /// rows and their unperturbed shadows).
    pub prefill: f64,
    /// Decoding the continuations.
    pub generation: f64,
    /// Embeddings, model-based reward inputs and the reward terms.
    pub reward: f64,
    /// Fitness shaping and the optimiser's update.
    pub update: f64,
}

/// Statistics of one round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundStats {
    /// Round index (0-based).
    pub round: usize,
    /// Mean reward over unmasked candidates (NaN/null if none).
    pub mean_reward: f64,
    /// Best reward.
    pub max_reward: f64,
    /// Mean pairwise embedding distance (1 - cosine) of the unmasked candidates.
    pub diversity: f64,
    /// Mean KL to the unperturbed model (nats/token), over all candidates.
    pub mean_kl: f64,
    /// Candidates given weight 0.
    pub masked: usize,
    /// Routing drift over the round (share of locked choices the free router would change).
    pub drift: f64,
    /// Time per phase.
    pub seconds: RoundTimings,
}

/// One selected idea.
#[derive(Debug, Clone, Serialize)]
pub struct Idea {
    /// The text.
    pub text: String,
    /// Its reward.
    pub reward: f64,
    /// Its reward terms.
    pub terms: Vec<(String, f64)>,
    /// Its fluency.
    pub fluency: f64,
    /// Its mean KL to the unperturbed model.
    pub kl: f64,
    /// Where it came from: round and index.
    pub round: usize,
    /// Index in its round.
    pub index: usize,
    /// Its latent.
    pub latent: Vec<f64>,
}

/// Diversity and quality of a set of ideas.
#[derive(Debug, Clone, Serialize)]
pub struct IdeaSetStats {
    /// Ideas in the set.
    pub count: usize,
    /// Distinct ideas: groups of a greedy partition at the search's `dedup_threshold`
    /// (embedding cosine), as NoveltyBench counts distinct generations.
    pub distinct: usize,
    /// Mean pairwise embedding distance (1 - cosine).
    pub mean_pairwise_distance: f64,
    /// Vendi score of the embeddings (the effective number of different ideas).
    pub vendi: f64,
    /// Mean fluency (log-prob per token under the unperturbed model).
    pub mean_fluency: f64,
    /// Mean reward.
    pub mean_reward: f64,
}

/// How the perturbation scale was set.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// The requested mean KL (nats/token), if calibrated.
    pub target_kl: Option<f64>,
    /// The mean KL the chosen scale induces on the probe latents.
    pub achieved_kl: f64,
    /// The scale `s`.
    pub scale: f64,
    /// Forward passes the bisection used (0 when the scale was given or cached).
    pub evaluations: usize,
    /// Whether the scale came from the engine's cache.
    pub cached: bool,
}

/// The result of a search.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// The user's prompt.
    pub prompt: String,
    /// The unperturbed model's greedy answer.
    pub reference: String,
    /// The settings used.
    pub config: SearchConfig,
    /// The perturbation scale.
    pub calibration: Calibration,
    /// Statistics of every round run.
    pub rounds: Vec<RoundStats>,
    /// The selected ideas, best first.
    pub ideas: Vec<Idea>,
    /// Diversity and quality of the selected ideas.
    pub idea_stats: IdeaSetStats,
    /// Every candidate of every round.
    pub candidates: Vec<Candidate>,
    /// Whether the search was stopped before its last round (by the callback).
    pub stopped_early: bool,
    /// Wall-clock seconds of the whole search (base pass and calibration included).
    pub seconds: f64,
    /// Messages worth showing the user (e.g. a reward command that failed).
    pub warnings: Vec<String>,
}
