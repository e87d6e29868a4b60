//! One line of the results: everything about one (prompt, method) item.
//!
//! A line is a JSON object with the item's key (`set`, `prompt_id`, `method`), the
//! prompt, the item's seed, the method's spec and full search settings (`config`), the
//! greedy answer (`reference`), the calibrated scale, the budget used, the K ideas with
//! their texts, rewards, fluencies and KLs (so an external scorer can recompute any
//! metric), the [`IdeaMetrics`] (`metrics`) and [`PoolMetrics`] (`pool`), warnings, and
//! `timing` (seconds and calibration work, the only fields that differ between two runs
//! of the same item). Missing numbers (a mean over nothing) are `null`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::metrics::{IdeaMetrics, PoolMetrics};
use crate::plan::ItemKey;

/// One idea as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdeaRecord {
    /// The text.
    pub text: String,
    /// Its reward (`null` for a masked continuation that `sample` returns as it came).
    pub reward: Option<f64>,
    /// Each reward term's value, by name.
    pub terms: Vec<(String, f64)>,
    /// Mean log-prob per token under the unperturbed model.
    pub fluency: Option<f64>,
    /// Mean KL to the unperturbed model (nats per token).
    pub kl: Option<f64>,
    /// Why it was masked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<String>,
    /// The round it came from (0-based).
    pub round: usize,
    /// Its index in that round.
    pub index: usize,
}

/// The perturbation scale an item used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleRecord {
    /// The KL target, when calibrated.
    pub target_kl: Option<f64>,
    /// The scale `s` (0 without a perturbation).
    pub scale: f64,
    /// The mean KL the scale induces on the calibration probes (`null` for a given scale).
    pub achieved_kl: Option<f64>,
}

/// What an item spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetRecord {
    /// Continuations generated.
    pub continuations: usize,
    /// Rounds run.
    pub rounds: usize,
    /// Candidates per round.
    pub population: usize,
    /// Tokens generated over all continuations (stop tokens included).
    pub tokens: usize,
}

/// Time and calibration work: the fields that differ between two runs of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingRecord {
    /// Seconds of the search (greedy pass, calibration, rounds, selection).
    pub search_seconds: f64,
    /// Seconds of the whole item (the search, embedding the ideas and pool, metrics).
    pub item_seconds: f64,
    /// Forward passes the calibration used (0 when given or found in the cache).
    pub calibration_evaluations: usize,
    /// Whether the scale came from the engine's cache (another method of the prompt
    /// calibrated it first in this process).
    pub calibration_cached: bool,
}

/// One line of the results (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The prompt set.
    pub set: String,
    /// The prompt's id.
    pub prompt_id: String,
    /// The method's label.
    pub method: String,
    /// The prompt's text.
    pub prompt: String,
    /// The item's seed (see [`crate::item_seed`]).
    pub seed: u64,
    /// The method: `kind` and `overrides`.
    pub method_spec: Value,
    /// The full search settings used.
    pub config: Value,
    /// The unperturbed model's greedy answer.
    pub reference: String,
    /// The perturbation scale.
    pub calibration: ScaleRecord,
    /// What was spent.
    pub budget: BudgetRecord,
    /// The K ideas, in the order returned.
    pub ideas: Vec<IdeaRecord>,
    /// Metrics over the K ideas.
    pub metrics: IdeaMetrics,
    /// Metrics over every unmasked candidate.
    pub pool: PoolMetrics,
    /// Messages from the search (e.g. a reward command that failed).
    pub warnings: Vec<String>,
    /// Time and calibration work.
    pub timing: TimingRecord,
}

impl Record {
    /// The item's key.
    pub fn key(&self) -> ItemKey {
        ItemKey {
            set: self.set.clone(),
            prompt_id: self.prompt_id.clone(),
            method: self.method.clone(),
        }
    }

    /// The reward spec used, as written in `config`.
    pub fn reward_spec(&self) -> Option<&str> {
        self.config.get("reward").and_then(Value::as_str)
    }
}
