//! The search loop: base pass, calibration, rounds of perturbed generation, reward,
//! fitness shaping and update, and the final selection.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::Instant;

use latentevo_model::{
    GenerationConfig, Hooks, LoadedModel, Perturbation, Positions, Routing, RoutingDrift, Sampling,
    ShadowedOutput, TokenBatch,
};
use latentevo_reward::{Embedder, RewardSpec};

use crate::calibrate::{calibrate, CalibrationKey};
use crate::config::{Basis, Inject, RoutingPolicy, Scale, SearchConfig, StrategyKind};
use crate::error::{EngineError, Result};
use crate::latent::{pca_basis, random_basis, weights_basis, LatentMap};
use crate::optimizer::Optimizer;
use crate::result::{Calibration, Candidate, Idea, IdeaSetStats, RoundStats, RoundTimings, SearchResult};
use crate::scoring::{score_round, RoundInputs};

/// What the per-round callback sees.
#[derive(Debug)]
pub struct RoundReport<'a> {
    /// The round's statistics.
    pub stats: &'a RoundStats,
    /// The round's candidates.
    pub candidates: &'a [Candidate],
    /// Rounds planned in all.
    pub rounds: usize,
}

/// A loaded model and sentence embedder, ready for many searches.
///
/// See the crate docs for a complete example.
pub struct Engine {
    loaded: LoadedModel,
    embedder: Embedder,
    scales: Mutex<HashMap<CalibrationKey, (f64, f64)>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("source", &self.loaded.source)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Wraps a loaded model (which must have a tokenizer) and an embedder.
    pub fn new(loaded: LoadedModel, embedder: Embedder) -> Result<Self> {
        if loaded.tokenizer.is_none() {
            return Err(EngineError::Unsupported(format!(
                "{} has no tokenizer (tokenizer.json): the search writes and reads text",
                loaded.source.display()
            )));
        }
        Ok(Engine {
            loaded,
            embedder,
            scales: Mutex::new(HashMap::new()),
        })
    }

    /// The model.
    pub fn model(&self) -> &LoadedModel {
        &self.loaded
    }

    /// The embedder.
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The default settings for this model ([`SearchConfig::for_layers`]).
    pub fn default_config(&self) -> SearchConfig {
        SearchConfig::for_layers(self.loaded.model.num_layers())
    }

    /// A search for `prompt` with the default settings, to adjust and [`Search::run`].
    pub fn search<'a>(&'a self, prompt: &'a str) -> Search<'a> {
        Search {
            engine: self,
            prompt,
            config: self.default_config(),
            on_round: None,
        }
    }

    /// Runs one search; `on_round` is called after every round and may stop the search
    /// early (`ControlFlow::Break`), which still selects ideas from what was found.
    pub fn run(
        &self,
        prompt: &str,
        cfg: &SearchConfig,
        on_round: &mut dyn FnMut(&RoundReport) -> ControlFlow<()>,
    ) -> Result<SearchResult> {
        let started = Instant::now();
        let model = &self.loaded.model;
        cfg.validate(model.num_layers())?;
        let needs = cfg.reward.needs();
        let mut warnings = Vec::new();

        // 1. Base pass: the greedy reference answer, with the prompt's routing recorded.
        let prompt_ids = self.loaded.encode(&self.loaded.chat_prompt(prompt)?)?;
        if prompt_ids.is_empty() {
            return Err(EngineError::config("prompt", "the prompt is empty"));
        }
        let stop = model.config().eos_token_ids.clone();
        let greedy = GenerationConfig {
            max_new_tokens: cfg.max_new_tokens,
            sampling: Sampling::Greedy,
            stop_token_ids: stop.clone(),
            stop_strings: Vec::new(),
        };
        let record = Hooks {
            record_routing: true,
            ..Hooks::default()
        };
        let base = model.generate(
            std::slice::from_ref(&prompt_ids),
            &greedy,
            &record,
            self.loaded.tokenizer.as_ref(),
        )?;
        let reference = &base.sequences[0];
        let reference_text = reference.text.clone().unwrap_or_default();
        let reference_tokens = content_tokens(&reference.tokens, &stop);
        let prompt_routing = base.routing.unwrap_or_default().before(prompt_ids.len());

        // 2. The shared prompt pass (layers below L), the basis and the map from latents to perturbations.
        let prompt_batch = TokenBatch::left_padded(std::slice::from_ref(&prompt_ids), 0);
        let shared_prompt = model.run_lower_layers(&prompt_batch, cfg.layer, false)?;
        let hidden: Vec<Vec<f64>> = shared_prompt
            .hidden()
            .squeeze(0)?
            .to_dtype(candle_core::DType::F64)?
            .to_vec2::<f64>()?;
        let basis_seed = derive(cfg.seed, 1);
        let basis = match cfg.basis {
            Basis::Random => random_basis(hidden[0].len(), cfg.latent_dim, basis_seed)?,
            Basis::Pca => pca_basis(&hidden, cfg.latent_dim, basis_seed)?,
            Basis::Experts => weights_basis(
                &self.expert_inputs(cfg.layer, &prompt_routing)?,
                cfg.latent_dim,
                basis_seed,
            )?,
        };
        let map = LatentMap::new(&hidden, basis, cfg.shaping)?;
        let positions = match cfg.inject {
            Inject::Prompt => Positions::first(prompt_ids.len()),
            Inject::All => Positions::All,
        };
        let lock = cfg.routing.lock(prompt_routing.clone());

        // 3. The scale: given, or calibrated to the KL target (cached per prompt and setting).
        let calibration = match cfg.scale {
            Scale::Fixed(s) => Calibration {
                target_kl: None,
                achieved_kl: f64::NAN,
                scale: s,
                evaluations: 0,
                cached: false,
            },
            Scale::None => Calibration {
                target_kl: None,
                achieved_kl: 0.0,
                scale: 0.0,
                evaluations: 0,
                cached: false,
            },
            Scale::KlTarget(target) => {
                let key = CalibrationKey::new(&prompt_ids, cfg, target);
                let cached = self.scales.lock().ok().and_then(|c| c.get(&key).copied());
                match cached {
                    Some((scale, achieved)) => Calibration {
                        target_kl: Some(target),
                        achieved_kl: achieved,
                        scale,
                        evaluations: 0,
                        cached: true,
                    },
                    None => {
                        let c = calibrate(
                            model,
                            &prompt_ids,
                            &reference_tokens,
                            cfg,
                            &map,
                            &positions,
                            target,
                            derive(cfg.seed, 2),
                        )?;
                        if let Ok(mut cache) = self.scales.lock() {
                            cache.insert(key, (c.scale, c.achieved_kl));
                        }
                        c
                    }
                }
            }
        };

        // Inputs every round shares.
        let reference_embedding = if needs.embeddings {
            self.embedder.embed(&[reference_text.as_str()])?.pop()
        } else {
            None
        };
        let null_context = self.null_context()?;
        let shared = RoundInputs {
            engine_model: &self.loaded,
            embedder: &self.embedder,
            spec: &cfg.reward,
            prompt,
            reference_text: &reference_text,
            reference_embedding: reference_embedding.as_deref(),
            null_context: &null_context,
            prompt_ids: &prompt_ids,
            min_relevance: cfg.min_relevance,
            min_words: cfg.min_words,
            stop: &stop,
        };

        // 4. Rounds.
        let mut optimizer = Optimizer::new(cfg, derive(cfg.seed, 3))?;
        // Sampling: candidate i keeps its seed across rounds (common random numbers, so a
        // change in its fitness comes from its latent) — except without a perturbation,
        // where every round draws fresh samples.
        let generation_for = |round: usize| {
            let stream = if cfg.scale == Scale::None {
                round * cfg.population
            } else {
                0
            };
            GenerationConfig {
                sampling: match cfg.temperature {
                    None => Sampling::Greedy,
                    Some(temperature) => Sampling::Random {
                        temperature,
                        top_p: cfg.top_p,
                        seeds: (0..cfg.population)
                            .map(|i| derive(cfg.seed, 1000 + (stream + i) as u64))
                            .collect(),
                    },
                },
                ..greedy.clone()
            }
        };
        let mut pool: Vec<(Candidate, Vec<f32>)> = Vec::new();
        let mut rounds = Vec::new();
        let mut stopped_early = false;
        for round in 0..cfg.rounds {
            let latents = optimizer.population()?;
            let delta = map.deltas(&latents, calibration.scale, model.device())?;
            let perturb = Perturbation {
                layer: cfg.layer,
                delta,
                positions: positions.clone(),
            };
            let hooks = Hooks {
                perturb: Some(&perturb),
                lock: lock.as_ref(),
                ..Hooks::default()
            };
            let out: ShadowedOutput = if cfg.scale == Scale::None {
                // Plain sampling: the unperturbed model is its own shadow (its log-probs
                // are the base log-probs, its KL is 0), so no shadow rows are decoded.
                let started = Instant::now();
                let out = model.generate_samples(
                    &shared_prompt,
                    cfg.population,
                    &generation_for(round),
                    &Hooks::default(),
                    self.loaded.tokenizer.as_ref(),
                )?;
                ShadowedOutput {
                    base_logprobs: out.sequences.iter().map(|s| s.logprobs.clone()).collect(),
                    kl: out.sequences.iter().map(|s| vec![0.0; s.tokens.len()]).collect(),
                    sequences: out.sequences,
                    drift: RoutingDrift::default(),
                    routing: out.routing,
                    prefill_seconds: 0.0,
                    decode_seconds: started.elapsed().as_secs_f64(),
                }
            } else {
                model.generate_shadowed(
                    &shared_prompt,
                    &generation_for(round),
                    &hooks,
                    self.loaded.tokenizer.as_ref(),
                )?
            };
            let reward_started = Instant::now();
            let scored = score_round(&shared, round, &latents, &out)?;
            warnings.extend(scored.warnings);
            let reward_seconds = reward_started.elapsed().as_secs_f64();
            let update_started = Instant::now();
            let mut batch = scored.candidates;
            let fitness = shape_fitness(&mut batch, cfg.kl_guard);
            if round + 1 < cfg.rounds {
                optimizer.update(&fitness)?;
            }
            let timings = RoundTimings {
                prefill: out.prefill_seconds,
                generation: out.decode_seconds,
                reward: reward_seconds,
                update: update_started.elapsed().as_secs_f64(),
            };
            let stats = round_stats(round, &batch, &scored.embeddings, out.drift.share(), timings);
            let flow = on_round(&RoundReport {
                stats: &stats,
                candidates: &batch,
                rounds: cfg.rounds,
            });
            pool.extend(batch.into_iter().zip(scored.embeddings));
            rounds.push(stats);
            if flow.is_break() && round + 1 < cfg.rounds {
                stopped_early = true;
                break;
            }
        }

        // 5. Selection over every unmasked candidate.
        let (candidates, embeddings): (Vec<Candidate>, Vec<Vec<f32>>) = pool.into_iter().unzip();
        let (ideas, idea_stats) = select_ideas(&candidates, &embeddings, cfg);
        if ideas.is_empty() {
            warnings.push("every candidate was masked: no ideas to show (try a smaller --kl-target)".into());
        }
        Ok(SearchResult {
            prompt: prompt.to_string(),
            reference: reference_text,
            config: cfg.clone(),
            calibration,
            rounds,
            ideas,
            idea_stats,
            candidates,
            stopped_early,
            seconds: started.elapsed().as_secs_f64(),
            warnings,
        })
    }

    /// The context that stands for "no prompt" when measuring pointwise mutual
    /// information: the chat template around an empty user message, or the BOS token.
    fn null_context(&self) -> Result<Vec<u32>> {
        let ids = match &self.loaded.chat_template {
            Some(_) => self.loaded.encode(&self.loaded.chat_prompt("")?)?,
            None => Vec::new(),
        };
        if !ids.is_empty() {
            return Ok(ids);
        }
        let cfg = self.loaded.model.config();
        Ok(vec![cfg
            .bos_token_id
            .or(cfg.eos_token_ids.first().copied())
            .unwrap_or(0)])
    }

    /// The input weights (gate and up rows) of the experts the prompt uses at `layer`.
    fn expert_inputs(&self, layer: usize, routing: &Routing) -> Result<Vec<Vec<Vec<f64>>>> {
        let model = &self.loaded.model;
        let experts = model.expert_weights(layer)?.ok_or_else(|| {
            EngineError::config(
                "basis",
                format!("`experts` needs a MoE layer, and layer {layer} is dense"),
            )
        })?;
        let mut used: Vec<u32> = routing
            .layer(layer)
            .map(|l| {
                l.rows
                    .iter()
                    .flatten()
                    .flat_map(|r| r.experts.iter().copied())
                    .collect()
            })
            .unwrap_or_default();
        used.sort_unstable();
        used.dedup();
        used.iter()
            .flat_map(|&e| {
                let (gate, up, _) = &experts[e as usize];
                [gate, up]
            })
            .map(|w| Ok(w.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?))
            .collect()
    }
}

/// The per-round callback of a [`Search`].
type RoundCallback<'a> = Box<dyn FnMut(&RoundReport) -> ControlFlow<()> + 'a>;

/// A search being set up: adjust settings, then [`Search::run`].
pub struct Search<'a> {
    engine: &'a Engine,
    prompt: &'a str,
    config: SearchConfig,
    on_round: Option<RoundCallback<'a>>,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $field:ident),+ $(,)?) => {
        $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Self { self.config.$field = value; self })+
    };
}

impl<'a> Search<'a> {
    setters! {
        /// The perturbed layer.
        layer: usize => layer,
        /// Candidates per round.
        population: usize => population,
        /// Rounds.
        rounds: usize => rounds,
        /// Latent dimension.
        latent_dim: usize => latent_dim,
        /// The basis.
        basis: Basis => basis,
        /// Where the perturbation is added.
        inject: Inject => inject,
        /// Scale: KL target or fixed.
        scale: Scale => scale,
        /// Routing policy.
        routing: RoutingPolicy => routing,
        /// The optimiser.
        strategy: StrategyKind => strategy,
        /// The reward.
        reward: RewardSpec => reward,
        /// Tokens per candidate.
        max_new_tokens: usize => max_new_tokens,
        /// Sampling temperature (`None` = greedy).
        temperature: Option<f64> => temperature,
        /// The seed.
        seed: u64 => seed,
        /// Ideas returned.
        ideas: usize => ideas,
    }

    /// Replaces all settings.
    pub fn config(mut self, config: SearchConfig) -> Self {
        self.config = config;
        self
    }

    /// The settings as they stand.
    pub fn settings(&self) -> &SearchConfig {
        &self.config
    }

    /// Called after every round (e.g. for a live plot); `ControlFlow::Break` stops early.
    pub fn on_round(mut self, f: impl FnMut(&RoundReport) -> ControlFlow<()> + 'a) -> Self {
        self.on_round = Some(Box::new(f));
        self
    }

    /// Runs the search.
    pub fn run(self) -> Result<SearchResult> {
        let mut callback = self
            .on_round
            .unwrap_or_else(|| Box::new(|_: &RoundReport| ControlFlow::Continue(())));
        self.engine.run(self.prompt, &self.config, &mut *callback)
    }
}

/// A seed for one purpose, derived from the search's seed (SplitMix64).
pub(crate) fn derive(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The tokens of a continuation without its final stop token.
pub(crate) fn content_tokens(tokens: &[u32], stop: &[u32]) -> Vec<u32> {
    match tokens.split_last() {
        Some((last, rest)) if stop.contains(last) => rest.to_vec(),
        _ => tokens.to_vec(),
    }
}

/// Group-relative advantage and the guardrail mask; returns the fitness the optimiser
/// sees (the advantage, NaN for masked candidates).
fn shape_fitness(batch: &mut [Candidate], kl_guard: f64) -> Vec<f64> {
    let rewards: Vec<f64> = batch
        .iter()
        .filter(|c| c.masked.is_none())
        .filter_map(|c| c.reward)
        .filter(|r| r.is_finite())
        .collect();
    let n = rewards.len().max(1) as f64;
    let mean = rewards.iter().sum::<f64>() / n;
    let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
    batch
        .iter_mut()
        .map(|c| {
            let reward = c.reward.filter(|r| r.is_finite() && c.masked.is_none());
            let Some(r) = reward else {
                c.masked.get_or_insert_with(|| "reward is not a number".into());
                return f64::NAN;
            };
            let advantage = if std > 0.0 { (r - mean) / std } else { 0.0 };
            c.advantage = Some(advantage);
            if advantage < 0.0 && c.k3 > kl_guard {
                c.masked = Some(format!(
                    "lethal mutation: below-average reward with mean k3 KL {:.3} > {kl_guard}",
                    c.k3
                ));
                return f64::NAN;
            }
            advantage
        })
        .collect()
}

fn round_stats(
    round: usize,
    batch: &[Candidate],
    embeddings: &[Vec<f32>],
    drift: f64,
    seconds: RoundTimings,
) -> RoundStats {
    let kept: Vec<usize> = (0..batch.len()).filter(|&i| batch[i].masked.is_none()).collect();
    let rewards: Vec<f64> = kept.iter().filter_map(|&i| batch[i].reward).collect();
    let kept_embeddings: Vec<Vec<f32>> = kept.iter().map(|&i| embeddings[i].clone()).collect();
    RoundStats {
        round,
        mean_reward: if rewards.is_empty() {
            f64::NAN
        } else {
            rewards.iter().sum::<f64>() / rewards.len() as f64
        },
        max_reward: rewards.iter().copied().fold(f64::NAN, f64::max),
        diversity: latentevo_reward::metrics::mean_pairwise_distance(&kept_embeddings),
        mean_kl: batch.iter().map(|c| c.kl).sum::<f64>() / batch.len().max(1) as f64,
        masked: batch.len() - kept.len(),
        drift,
        seconds,
    }
}

fn select_ideas(
    candidates: &[Candidate],
    embeddings: &[Vec<f32>],
    cfg: &SearchConfig,
) -> (Vec<Idea>, IdeaSetStats) {
    let rewards: Vec<f64> = candidates
        .iter()
        .map(|c| match (c.masked.as_ref(), c.reward) {
            (None, Some(r)) => r,
            _ => f64::NAN,
        })
        .collect();
    let chosen = latentevo_reward::select_diverse(
        &rewards,
        embeddings,
        cfg.ideas,
        cfg.dedup_threshold,
        cfg.mmr_lambda,
    );
    let ideas: Vec<Idea> = chosen
        .iter()
        .map(|&i| {
            let c = &candidates[i];
            Idea {
                text: c.text.clone(),
                reward: rewards[i],
                terms: c.terms.clone(),
                fluency: c.fluency,
                kl: c.kl,
                round: c.round,
                index: c.index,
                latent: c.latent.clone(),
            }
        })
        .collect();
    let chosen_embeddings: Vec<Vec<f32>> = chosen.iter().map(|&i| embeddings[i].clone()).collect();
    let mean = |values: Vec<f64>| {
        if values.is_empty() {
            f64::NAN
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        }
    };
    let stats = IdeaSetStats {
        count: ideas.len(),
        distinct: latentevo_reward::metrics::distinct_ideas(&chosen_embeddings, cfg.dedup_threshold),
        mean_pairwise_distance: latentevo_reward::metrics::mean_pairwise_distance(&chosen_embeddings),
        vendi: latentevo_reward::metrics::vendi_score(&chosen_embeddings),
        mean_fluency: mean(ideas.iter().map(|i| i.fluency).collect()),
        mean_reward: mean(ideas.iter().map(|i| i.reward).collect()),
    };
    (ideas, stats)
}
