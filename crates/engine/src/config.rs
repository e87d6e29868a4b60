//! The settings of one search, with their defaults and validation.

use std::fmt;
use std::str::FromStr;

use latentevo_model::{LockWeights, Routing, RoutingLock};
use latentevo_reward::RewardSpec;
use serde::Serialize;

use crate::error::{EngineError, Result};

/// Directions the latent `z` spans in the hidden space: `B` (hidden x m, orthonormal
/// columns) in `delta = s * B z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    /// A random orthonormal basis (the paper's random projection).
    Random,
    /// The top principal directions of the prompt's hidden states entering the layer.
    Pca,
    /// The top right-singular directions of the input weights (gate and up) of the experts
    /// the prompt uses at the layer: the subspace those experts read.
    Experts,
}

/// How the perturbation is scaled per hidden dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shaping {
    /// By each dimension's standard deviation over the prompt's positions (outlier
    /// dimensions get proportionally larger noise).
    PerDim,
    /// The same scale in every dimension.
    Isotropic,
}

/// Token positions that receive the perturbation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Inject {
    /// The prompt's positions only: the model reads a perturbed prompt, then writes freely.
    Prompt,
    /// The prompt and every generated token (steering-like).
    All,
}

/// Expert routing at the perturbed layer and above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoutingPolicy {
    /// Experts as the unperturbed model chooses them for the same tokens, weights
    /// recomputed from the perturbed router logits over those experts.
    Lock,
    /// As `Lock`, with the unperturbed model's weights too.
    LockWeights,
    /// The perturbed router chooses.
    Free,
}

impl RoutingPolicy {
    /// The lock this policy puts on `recorded` (none under `free`).
    pub fn lock(self, recorded: Routing) -> Option<RoutingLock> {
        let weights = match self {
            RoutingPolicy::Free => return None,
            RoutingPolicy::Lock => LockWeights::Recompute,
            RoutingPolicy::LockWeights => LockWeights::Replay,
        };
        Some(RoutingLock {
            weights,
            ..RoutingLock::new(recorded)
        })
    }
}

/// The optimiser of the latents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Diffusion Evolution (latentevo-evolve's `DiffEvo`).
    DiffEvo,
    /// CMA-ES started at `z = 0`, step size 1.
    CmaEs,
    /// OpenAI-style evolution strategy started at `z = 0`.
    OpenEs,
    /// Fresh `N(0, I)` latents every round, no update (the "random perturbation" baseline).
    Random,
}

/// How the perturbation's size is set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scale {
    /// Calibrated: `s` such that a few probe latents induce this mean KL divergence (nats
    /// per token) between perturbed and unperturbed next-token distributions along the
    /// reference answer.
    KlTarget(f64),
    /// A raw scale `s` (relative to the RMS of the hidden state).
    Fixed(f64),
    /// No perturbation at all: plain sampling (needs a temperature), scored and selected
    /// exactly like the search — the baseline it is compared with.
    None,
}

macro_rules! named_enum {
    ($ty:ty, $what:literal, $($name:literal => $value:expr),+ $(,)?) => {
        impl FromStr for $ty {
            type Err = EngineError;
            fn from_str(text: &str) -> Result<Self> {
                match text {
                    $($name => Ok($value),)+
                    other => Err(EngineError::config(
                        $what,
                        format!("unknown value `{other}` (expected one of: {})", [$($name),+].join(", ")),
                    )),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let name = match self { $(v if *v == $value => $name,)+ _ => unreachable!() };
                f.write_str(name)
            }
        }
    };
}

named_enum!(Basis, "basis", "random" => Basis::Random, "pca" => Basis::Pca, "experts" => Basis::Experts);
named_enum!(Shaping, "shaping", "per-dim" => Shaping::PerDim, "isotropic" => Shaping::Isotropic);
named_enum!(Inject, "inject", "prompt" => Inject::Prompt, "all" => Inject::All);
named_enum!(RoutingPolicy, "routing", "lock" => RoutingPolicy::Lock, "lock-weights" => RoutingPolicy::LockWeights, "free" => RoutingPolicy::Free);
named_enum!(StrategyKind, "strategy", "diffevo" => StrategyKind::DiffEvo, "cmaes" => StrategyKind::CmaEs, "openes" => StrategyKind::OpenEs, "random" => StrategyKind::Random);

/// Every setting of a search. [`SearchConfig::for_layers`] gives the defaults for a model
/// of a given depth.
#[derive(Debug, Clone, Serialize)]
pub struct SearchConfig {
    /// The decoder layer whose input is perturbed.
    pub layer: usize,
    /// Candidates per round.
    pub population: usize,
    /// Rounds (populations evaluated); the budget is `population * rounds` continuations.
    pub rounds: usize,
    /// Dimension `m` of the latent `z`.
    pub latent_dim: usize,
    /// The directions `B`.
    pub basis: Basis,
    /// Per-dimension shaping of the perturbation.
    pub shaping: Shaping,
    /// Where the perturbation is added.
    pub inject: Inject,
    /// The perturbation's size.
    pub scale: Scale,
    /// Expert routing at the perturbed layer and above.
    pub routing: RoutingPolicy,
    /// The optimiser.
    pub strategy: StrategyKind,
    /// The reward, a weighted sum of terms.
    #[serde(serialize_with = "display")]
    pub reward: RewardSpec,
    /// Tokens generated per candidate (at most).
    pub max_new_tokens: usize,
    /// `None`: greedy decoding (the perturbation is the only source of variety); else
    /// sampling at this temperature with one seed per candidate.
    pub temperature: Option<f64>,
    /// Nucleus mass when sampling.
    pub top_p: f64,
    /// The one seed every random choice flows from.
    pub seed: u64,
    /// Ideas returned.
    pub ideas: usize,
    /// Two answers whose embeddings have cosine similarity at or above this are the same
    /// idea (merged; only the better one can be selected).
    pub dedup_threshold: f64,
    /// Maximal marginal relevance trade-off of the final selection (1 = reward only).
    pub mmr_lambda: f64,
    /// Guardrail: a candidate with negative advantage whose mean per-token k3 KL estimate
    /// exceeds this gets weight 0 (a "lethal mutation").
    pub kl_guard: f64,
    /// Guardrail: with a reward that measures relevance, a candidate whose pointwise
    /// mutual information with the prompt is below this is masked as off-topic (the
    /// prompt made it less likely than no prompt does: it does not answer it). `None`
    /// keeps every candidate.
    pub min_relevance: Option<f64>,
    /// Guardrail: a candidate of fewer words than this is masked as too short to be an
    /// idea (a lone `perplexing` can otherwise win on novelty).
    pub min_words: usize,
    /// Temperature of Diffusion Evolution's fitness mapping `exp(advantage / T)`.
    pub fitness_temperature: f64,
    /// Diffusion Evolution: dimension of the random projection its kernel distances are
    /// computed in (its latent variant); `None` = the full latent.
    pub kernel_dim: Option<usize>,
    /// Probe latents used to calibrate the scale.
    pub calibration_probes: usize,
}

fn display<S: serde::Serializer>(spec: &RewardSpec, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(spec)
}

/// The default reward: relevance (pointwise mutual information with the prompt, so an
/// answer that leaves the topic loses) plus novelty against the other candidates plus a
/// little fluency, and a length term so that a two-word answer (whose per-token PMI can
/// be high) does not pass for an idea.
pub const DEFAULT_REWARD: &str = "relevance + novelty:population + 0.1*fluency + length(30)";

impl SearchConfig {
    /// The defaults for a model of `num_layers` layers: layer at ~27% of the depth (the
    /// working band measured on the default model), 16 candidates x 4 rounds, `m = 16`,
    /// random basis shaped per dimension, prompt-only injection, KL target 0.1, routing
    /// lock, Diffusion Evolution, the [`DEFAULT_REWARD`], 48 greedy tokens, 6 ideas.
    pub fn for_layers(num_layers: usize) -> Self {
        let layer = ((num_layers as f64 * 0.27).round() as usize)
            .clamp(usize::from(num_layers > 1), num_layers.saturating_sub(1));
        SearchConfig {
            layer,
            population: 16,
            rounds: 4,
            latent_dim: 16,
            basis: Basis::Random,
            shaping: Shaping::PerDim,
            inject: Inject::Prompt,
            scale: Scale::KlTarget(0.1),
            routing: RoutingPolicy::Lock,
            strategy: StrategyKind::DiffEvo,
            reward: DEFAULT_REWARD.parse().expect("the default reward parses"),
            max_new_tokens: 48,
            temperature: None,
            top_p: 1.0,
            seed: 0,
            ideas: 6,
            dedup_threshold: 0.85,
            mmr_lambda: 0.5,
            kl_guard: 0.5,
            min_relevance: Some(0.0),
            min_words: 3,
            fitness_temperature: 1.0,
            kernel_dim: Some(2),
            calibration_probes: 4,
        }
    }

    /// Checks every field against the model's depth; the error names the field as its
    /// command-line flag.
    pub fn validate(&self, num_layers: usize) -> Result<()> {
        if self.layer >= num_layers {
            return Err(EngineError::config(
                "layer",
                format!(
                    "{} is out of range: the model has {num_layers} layers (0..={})",
                    self.layer,
                    num_layers.saturating_sub(1)
                ),
            ));
        }
        if self.population < 2 {
            return Err(EngineError::config(
                "population",
                format!("must be at least 2, got {}", self.population),
            ));
        }
        if self.rounds < 1 {
            return Err(EngineError::config("rounds", "must be at least 1, got 0"));
        }
        if self.latent_dim < 1 {
            return Err(EngineError::config("latent-dim", "must be at least 1, got 0"));
        }
        match self.scale {
            Scale::KlTarget(v) => positive("kl-target", v)?,
            Scale::Fixed(v) => positive("scale", v)?,
            Scale::None => {
                if self.temperature.is_none() {
                    return Err(EngineError::config(
                        "temperature",
                        "plain sampling (no perturbation) needs a temperature",
                    ));
                }
            }
        }
        if self.max_new_tokens < 1 {
            return Err(EngineError::config("max-new-tokens", "must be at least 1, got 0"));
        }
        if let Some(t) = self.temperature {
            positive("temperature", t)?;
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(EngineError::config(
                "top-p",
                format!("must be in (0, 1], got {}", self.top_p),
            ));
        }
        if self.ideas < 1 {
            return Err(EngineError::config("top-k", "must be at least 1, got 0"));
        }
        if !(self.dedup_threshold > 0.0 && self.dedup_threshold <= 1.0) {
            return Err(EngineError::config(
                "dedup-threshold",
                format!("must be in (0, 1], got {}", self.dedup_threshold),
            ));
        }
        if !(0.0..=1.0).contains(&self.mmr_lambda) {
            return Err(EngineError::config(
                "mmr-lambda",
                format!("must be in [0, 1], got {}", self.mmr_lambda),
            ));
        }
        positive("kl-guard", self.kl_guard)?;
        if let Some(v) = self.min_relevance {
            if !v.is_finite() {
                return Err(EngineError::config(
                    "min-relevance",
                    format!("must be a finite number, got {v}"),
                ));
            }
        }
        positive("fitness-temperature", self.fitness_temperature)?;
        if self.kernel_dim == Some(0) {
            return Err(EngineError::config("kernel-dim", "must be at least 1, got 0"));
        }
        if self.calibration_probes < 1 {
            return Err(EngineError::config(
                "calibration-probes",
                "must be at least 1, got 0",
            ));
        }
        Ok(())
    }

    /// Continuations generated by the search (`population * rounds`).
    pub fn budget(&self) -> usize {
        self.population * self.rounds
    }
}

fn positive(field: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(EngineError::config(
            field,
            format!("must be a finite number > 0, got {v}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_sit_in_the_working_band() {
        let c = SearchConfig::for_layers(30);
        assert_eq!(c.layer, 8);
        c.validate(30).unwrap();
        assert_eq!(SearchConfig::for_layers(2).layer, 1);
        assert_eq!(c.budget(), 64);
    }

    #[test]
    fn bad_values_name_their_flag() {
        let base = SearchConfig::for_layers(4);
        let cases: Vec<(SearchConfig, &str)> = vec![
            (
                SearchConfig {
                    population: 1,
                    ..base.clone()
                },
                "population",
            ),
            (
                SearchConfig {
                    rounds: 0,
                    ..base.clone()
                },
                "rounds",
            ),
            (
                SearchConfig {
                    layer: 4,
                    ..base.clone()
                },
                "layer",
            ),
            (
                SearchConfig {
                    scale: Scale::KlTarget(0.0),
                    ..base.clone()
                },
                "kl-target",
            ),
            (
                SearchConfig {
                    scale: Scale::KlTarget(f64::NAN),
                    ..base.clone()
                },
                "kl-target",
            ),
            (
                SearchConfig {
                    scale: Scale::Fixed(-1.0),
                    ..base.clone()
                },
                "scale",
            ),
        ];
        for (cfg, flag) in cases {
            let err = cfg.validate(4).unwrap_err();
            assert!(
                matches!(&err, EngineError::InvalidConfig { field, .. } if *field == flag),
                "{err}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for s in ["random", "pca", "experts"] {
            assert_eq!(s.parse::<Basis>().unwrap().to_string(), s);
        }
        for s in ["lock", "lock-weights", "free"] {
            assert_eq!(s.parse::<RoutingPolicy>().unwrap().to_string(), s);
        }
        assert!("nope"
            .parse::<StrategyKind>()
            .unwrap_err()
            .to_string()
            .contains("diffevo"));
    }
}
