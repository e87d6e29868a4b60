//! Batched generation: greedy, or sampling with temperature and top-p from one seed per
//! sequence, stopping on end-of-sequence tokens or stop strings.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;

use crate::batch::TokenBatch;
use crate::cache::KvCache;
use crate::error::{ModelError, Result};
use crate::hooks::{Hooks, Perturbation, Routing, RoutingDrift, RoutingLock};
use crate::kernels::logits::{kl_pairs, row_stats, RowStats};
use crate::model::{ForwardOutput, LogitsMode, Model};
use crate::shared_prompt::SharedPrompt;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// The most likely token (ties: the lowest id). With greedy decoding a perturbation is
    /// the only source of variety.
    Greedy,
    /// Sample from the temperature-scaled distribution, restricted to the smallest set of
    /// tokens whose probability reaches `top_p`.
    Random {
        /// Softmax temperature (> 0).
        temperature: f64,
        /// Nucleus mass in (0, 1]; 1 disables the cut.
        top_p: f64,
        /// One seed per sequence; a single seed is shared by every sequence (common random
        /// numbers, so that differences between sequences come from their inputs).
        seeds: Vec<u64>,
    },
}

/// Settings of one generation call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Upper bound on generated tokens per sequence.
    pub max_new_tokens: usize,
    /// Token choice.
    pub sampling: Sampling,
    /// Tokens that end a sequence (kept in its tokens, dropped from its text).
    pub stop_token_ids: Vec<u32>,
    /// Strings that end a sequence; the text is cut before the first one. Needs a tokenizer.
    pub stop_strings: Vec<String>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 64,
            sampling: Sampling::Greedy,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
        }
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It produced a stop token.
    StopToken,
    /// Its text contains a stop string.
    StopString,
    /// It reached `max_new_tokens`.
    Length,
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The generated token ids (the stop token included, if any).
    pub tokens: Vec<u32>,
    /// Log-probability of each token under the model's unscaled (temperature 1) distribution.
    pub logprobs: Vec<f32>,
    /// Decoded text without special tokens, cut at a stop string (when a tokenizer was given).
    pub text: Option<String>,
    /// Why it ended.
    pub finish: FinishReason,
}

impl Generated {
    /// Mean per-token log-probability (0 for an empty continuation).
    pub fn mean_logprob(&self) -> f32 {
        if self.logprobs.is_empty() {
            0.0
        } else {
            self.logprobs.iter().sum::<f32>() / self.logprobs.len() as f32
        }
    }
}

/// The result of a generation call.
#[derive(Debug, Clone)]
pub struct GenerationOutput {
    /// One entry per sequence of the batch.
    pub sequences: Vec<Generated>,
    /// Routing of prompt and generated tokens, when recording was asked for.
    pub routing: Option<Routing>,
    /// Routing drift over every forward call.
    pub drift: RoutingDrift,
}

impl Model {
    /// Generates a continuation for each prompt (left-padded into one batch), with `hooks`
    /// applied to every forward call.
    ///
    /// ```no_run
    /// use latentevo_model::{load, GenerationConfig, Hooks};
    /// let loaded = load("models/tiny/llama", &Default::default())?;
    /// let prompt = loaded.encode("Hello world")?;
    /// let config = GenerationConfig { max_new_tokens: 8, ..Default::default() };
    /// let out = loaded.model.generate(&[prompt], &config, &Hooks::default(), loaded.tokenizer.as_ref())?;
    /// println!("{:?}", out.sequences[0].text);
    /// # Ok::<(), latentevo_model::ModelError>(())
    /// ```
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        config: &GenerationConfig,
        hooks: &Hooks,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<GenerationOutput> {
        if prompts.iter().any(Vec::is_empty) {
            return Err(ModelError::InvalidRequest("a prompt is empty".into()));
        }
        let pad = config.stop_token_ids.first().copied().unwrap_or(0);
        let mut cache = self.new_cache();
        let first = self.forward(
            &TokenBatch::left_padded(prompts, pad),
            &mut cache,
            hooks,
            LogitsMode::Last,
        )?;
        Ok(self.decode_loop(first, cache, config, hooks, tokenizer, None)?.0)
    }

    /// Generates from a shared prompt pass (see [`Model::run_lower_layers`]): the layers
    /// below its layer are not recomputed for the population.
    pub fn generate_from_shared(
        &self,
        shared: &SharedPrompt,
        config: &GenerationConfig,
        hooks: &Hooks,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<GenerationOutput> {
        let (first, cache) = self.forward_upper_layers(shared, hooks, LogitsMode::Last)?;
        Ok(self.decode_loop(first, cache, config, hooks, tokenizer, None)?.0)
    }

    /// `rows` continuations of one prompt (a one-row shared prompt pass), e.g. samples
    /// with one seed each: the prompt's upper layers run once and its cache is copied to
    /// the rows, instead of computing `rows` identical prompt passes. `hooks` apply to the
    /// decoding steps (a perturbation must not enter at the prompt; use
    /// [`Model::generate_shadowed`] for perturbed rows).
    ///
    /// ```no_run
    /// use latentevo_model::{load, GenerationConfig, Hooks, Sampling, TokenBatch};
    /// let loaded = load("models/tiny/llama", &Default::default())?;
    /// let model = &loaded.model;
    /// let prompt = TokenBatch::left_padded(&[loaded.encode("Hello world")?], 0);
    /// let shared = model.run_lower_layers(&prompt, 1, false)?;
    /// let config = GenerationConfig {
    ///     max_new_tokens: 8,
    ///     sampling: Sampling::Random { temperature: 0.7, top_p: 1.0, seeds: (0..4).collect() },
    ///     ..Default::default()
    /// };
    /// let out = model.generate_samples(&shared, 4, &config, &Hooks::default(), loaded.tokenizer.as_ref())?;
    /// assert_eq!(out.sequences.len(), 4);
    /// # Ok::<(), latentevo_model::ModelError>(())
    /// ```
    pub fn generate_samples(
        &self,
        shared: &SharedPrompt,
        rows: usize,
        config: &GenerationConfig,
        hooks: &Hooks,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<GenerationOutput> {
        if rows == 0 {
            return Err(ModelError::InvalidRequest("zero continuations asked for".into()));
        }
        if shared.batch_size() != 1 {
            return Err(ModelError::InvalidRequest(format!(
                "generate_samples takes a one-row shared prompt, this one has {} rows",
                shared.batch_size()
            )));
        }
        if hooks.perturb.is_some() {
            return Err(ModelError::InvalidRequest(
                "generate_samples runs the prompt once for every row, so it takes no perturbation \
                 (use generate_shadowed)"
                    .into(),
            ));
        }
        let (first, cache) = self.forward_upper_layers(shared, hooks, LogitsMode::Last)?;
        let map = vec![0; rows];
        let first = first.select_rows(&map)?;
        let cache = cache.select_rows_split(&map, 0, rows)?;
        Ok(self.decode_loop(first, cache, config, hooks, tokenizer, None)?.0)
    }

    /// Generates from a one-row shared prompt pass for `hooks.perturb`'s rows, each decoded
    /// beside an unperturbed *shadow* row that is fed the same tokens.
    ///
    /// The perturbation (`[rows, hidden]`, one vector per perturbed row) applies to the
    /// perturbed rows only. Each step yields, for every perturbed row, its token's
    /// log-probability under the unperturbed model and the KL divergence between the two
    /// next-token distributions, with no extra pass. With `hooks.lock`, a perturbed row
    /// uses its recorded routes where they exist (the prompt) and, at every other locked
    /// position (its generated tokens), the experts its shadow — the unperturbed model on
    /// the same tokens — chooses ([`RoutingLock::follow`](crate::RoutingLock::follow));
    /// the drift counts both. The shadows route free (their recorded routes at the prompt
    /// are the free choice), and a lock's own `follow` is replaced.
    ///
    /// ```no_run
    /// use latentevo_model::{load, GenerationConfig, Hooks, Perturbation, Positions, RoutingLock, TokenBatch};
    /// use candle_core::Tensor;
    /// let loaded = load("models/tiny/mixtral", &Default::default())?;
    /// let model = &loaded.model;
    /// let prompt = TokenBatch::left_padded(&[loaded.encode("Give me an idea")?], 0);
    /// let base = model.generate(prompt.ids(), &GenerationConfig::default(),
    ///     &Hooks { record_routing: true, ..Hooks::default() }, None)?;
    /// let lock = RoutingLock::new(base.routing.unwrap());
    /// let shared = model.run_lower_layers(&prompt, 1, false)?;
    /// let delta = Tensor::randn(0f32, 0.5, (4, model.config().hidden_size), model.device())?;
    /// let perturb = Perturbation { layer: 1, delta, positions: Positions::All };
    /// let hooks = Hooks { perturb: Some(&perturb), lock: Some(&lock), ..Hooks::default() };
    /// let out = model.generate_shadowed(&shared, &GenerationConfig::default(), &hooks, None)?;
    /// assert_eq!(out.sequences.len(), 4);
    /// # Ok::<(), latentevo_model::ModelError>(())
    /// ```
    pub fn generate_shadowed(
        &self,
        shared: &SharedPrompt,
        config: &GenerationConfig,
        hooks: &Hooks,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<ShadowedOutput> {
        let perturb = hooks.perturb.ok_or_else(|| {
            ModelError::InvalidRequest("shadowed generation needs a perturbation (one vector per row)".into())
        })?;
        let (rows, hidden) = perturb.delta.dims2().map_err(|_| {
            ModelError::InvalidRequest(format!(
                "shadowed generation takes one perturbation vector per row ([rows, hidden]), got shape {:?}",
                perturb.delta.dims()
            ))
        })?;
        if rows == 0 {
            return Err(ModelError::InvalidRequest(
                "shadowed generation of zero rows".into(),
            ));
        }
        if let Sampling::Random { seeds, .. } = &config.sampling {
            if seeds.len() != 1 && seeds.len() != rows {
                return Err(ModelError::InvalidRequest(format!(
                    "{} seeds given for {rows} perturbed rows (give one, or one per row)",
                    seeds.len()
                )));
            }
        }
        // The prompt pass: every shadow sees the same prompt with no perturbation, so one
        // shadow row (row `rows`) is computed and then copied to all `rows` shadows.
        let started = std::time::Instant::now();
        let (first, cache) = {
            let single = shared.repeat(rows + 1)?;
            let zero = Tensor::zeros((1, hidden), perturb.delta.dtype(), perturb.delta.device())?;
            let with_shadow = Perturbation {
                layer: perturb.layer,
                delta: Tensor::cat(&[&perturb.delta, &zero], 0)?,
                positions: perturb.positions.clone(),
            };
            let lock = hooks.lock.map(|l| RoutingLock {
                follow: Some(vec![rows; rows + 1]),
                ..l.clone()
            });
            let hooks = Hooks {
                perturb: Some(&with_shadow),
                lock: lock.as_ref(),
                ..hooks.clone()
            };
            let (first, cache) = self.forward_upper_layers(&single, &hooks, LogitsMode::Last)?;
            // Rows 0..rows stay, row `rows` becomes rows..2 * rows; below the perturbed
            // layer a candidate and its shadow are one row (see `Model::forward_twinned`).
            let map: Vec<usize> = (0..rows).chain(std::iter::repeat_n(rows, rows)).collect();
            (
                first.select_rows(&map)?,
                cache.select_rows_split(&map, perturb.layer, rows)?,
            )
        };
        let prefill_seconds = started.elapsed().as_secs_f64();
        let zeros = Tensor::zeros((rows, hidden), perturb.delta.dtype(), perturb.delta.device())?;
        let doubled = Perturbation {
            layer: perturb.layer,
            delta: Tensor::cat(&[&perturb.delta, &zeros], 0)?,
            positions: perturb.positions.clone(),
        };
        let lock = hooks.lock.map(|l| RoutingLock {
            follow: Some((rows..2 * rows).chain(rows..2 * rows).collect()),
            ..l.clone()
        });
        let hooks = Hooks {
            perturb: Some(&doubled),
            lock: lock.as_ref(),
            ..hooks.clone()
        };
        // Below the perturbed layer a candidate and its shadow compute the same thing; the
        // lock there needs no following (each row is its own shadow).
        let lower_lock = hooks.lock.map(|l| RoutingLock {
            follow: None,
            ..l.clone()
        });
        let lower_hooks = Hooks {
            perturb: None,
            lock: lower_lock.as_ref(),
            ..hooks.clone()
        };
        let twins = Twins {
            rows,
            split: perturb.layer,
            lower_hooks,
        };
        let started = std::time::Instant::now();
        let (out, kl) = self.decode_loop(first, cache, config, &hooks, tokenizer, Some(twins))?;
        let decode_seconds = started.elapsed().as_secs_f64();
        let mut sequences = out.sequences;
        let shadows = sequences.split_off(rows);
        let mut drift = out.drift;
        drift.rows.truncate(rows);
        Ok(ShadowedOutput {
            sequences,
            base_logprobs: shadows.into_iter().map(|s| s.logprobs).collect(),
            kl: kl.unwrap_or_default(),
            drift,
            routing: out.routing,
            prefill_seconds,
            decode_seconds,
        })
    }

    /// The decoding loop after the first forward call. With `twins = Some(n)`, rows `n..2n`
    /// are shadows: row `n + i` is fed row `i`'s tokens and finishes with it, and the
    /// per-step `KL(row i || row n + i)` is returned.
    #[allow(clippy::type_complexity)]
    fn decode_loop(
        &self,
        first: ForwardOutput,
        cache: KvCache,
        config: &GenerationConfig,
        hooks: &Hooks,
        tokenizer: Option<&Tokenizer>,
        shadows: Option<Twins>,
    ) -> Result<(GenerationOutput, Option<Vec<Vec<f32>>>)> {
        crate::kernels::in_pool(|| self.decode_steps(first, cache, config, hooks, tokenizer, shadows))
    }

    /// [`Model::decode_loop`]'s body, on a thread of the CPU kernels' pool.
    #[allow(clippy::type_complexity)]
    fn decode_steps(
        &self,
        first: ForwardOutput,
        mut cache: KvCache,
        config: &GenerationConfig,
        hooks: &Hooks,
        tokenizer: Option<&Tokenizer>,
        shadows: Option<Twins>,
    ) -> Result<(GenerationOutput, Option<Vec<Vec<f32>>>)> {
        let twins = shadows.as_ref().map(|t| t.rows);
        let rows = cache.batch_size();
        let leaders = twins.unwrap_or(rows);
        if !config.stop_strings.is_empty() && tokenizer.is_none() {
            return Err(ModelError::InvalidRequest("stop strings need a tokenizer".into()));
        }
        if let Some(p) = hooks.perturb {
            if p.delta.rank() != 2 {
                return Err(ModelError::InvalidRequest(
                    "generation takes one perturbation vector per sequence ([batch, hidden])".into(),
                ));
            }
        }
        let mut choosers = Chooser::for_rows(&config.sampling, leaders)?;
        let mut kl: Option<Vec<Vec<f32>>> = twins.map(|n| vec![Vec::new(); n]);
        let mut sequences: Vec<Generated> = (0..rows)
            .map(|_| Generated {
                tokens: Vec::new(),
                logprobs: Vec::new(),
                text: None,
                finish: FinishReason::Length,
            })
            .collect();
        let mut finished = vec![false; rows];
        let mut routing = first.routing;
        let mut drift = first.drift;
        let mut logits = first.logits.expect("LogitsMode::Last returns logits");
        for step in 0..config.max_new_tokens {
            let sampling_started = std::time::Instant::now();
            let vocab = logits.dim(1)?;
            // The logits in place when they are f32 on the CPU, else one copy to the host.
            let view = crate::kernels::F32View::new(&logits);
            let copied;
            let table: &[f32] = match &view {
                Some(v) => v.as_slice(),
                None => {
                    copied = logits
                        .to_dtype(candle_core::DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?;
                    &copied
                }
            };
            let row_of = |r: usize| &table[r * vocab..(r + 1) * vocab];
            let stats = row_stats(table, vocab);
            let step_kl = twins.map(|n| {
                let pairs: Vec<(usize, usize)> =
                    (0..n).filter(|&i| !finished[i]).map(|i| (i, n + i)).collect();
                let values = kl_pairs(table, vocab, &stats, &pairs);
                let mut by_row = vec![0f32; n];
                for (&(i, _), v) in pairs.iter().zip(values) {
                    by_row[i] = v;
                }
                by_row
            });
            let mut next = Vec::with_capacity(rows);
            for row in 0..rows {
                if finished[row] {
                    next.push(*sequences[row].tokens.last().unwrap_or(&0));
                    continue;
                }
                if row >= leaders {
                    // A shadow: its leader's token, scored under its own distribution.
                    let leader = row - leaders;
                    let token = next[leader];
                    let logprob = stats[row].logprob(row_of(row), token);
                    let leader_finish = sequences[leader].finish;
                    let seq = &mut sequences[row];
                    seq.tokens.push(token);
                    seq.logprobs.push(logprob);
                    if finished[leader] {
                        finished[row] = true;
                        seq.finish = leader_finish;
                    }
                    next.push(token);
                    continue;
                }
                let (token, logprob) = choosers[row].choose(row_of(row), &stats[row]);
                if let (Some(kl), Some(step_kl)) = (kl.as_mut(), step_kl.as_ref()) {
                    kl[row].push(step_kl[row]);
                }
                let seq = &mut sequences[row];
                seq.tokens.push(token);
                seq.logprobs.push(logprob);
                if config.stop_token_ids.contains(&token) {
                    finished[row] = true;
                    seq.finish = FinishReason::StopToken;
                } else if !config.stop_strings.is_empty() {
                    let text = decode(tokenizer, &seq.tokens)?;
                    if config.stop_strings.iter().any(|s| text.contains(s.as_str())) {
                        finished[row] = true;
                        seq.finish = FinishReason::StopString;
                    }
                }
                next.push(token);
            }
            crate::profile::add_since(crate::profile::Part::Sampling, sampling_started);
            drop(view); // releases `logits` for the next step
            if finished.iter().all(|&f| f) || step + 1 == config.max_new_tokens {
                break;
            }
            let column = TokenBatch::column(&next);
            let out = match &shadows {
                Some(t) if t.split > 0 => self.forward_twinned(
                    &column,
                    &mut cache,
                    hooks,
                    &t.lower_hooks,
                    LogitsMode::Last,
                    t.split,
                )?,
                _ => self.forward(&column, &mut cache, hooks, LogitsMode::Last)?,
            };
            if let (Some(all), Some(more)) = (routing.as_mut(), out.routing) {
                all.extend(more);
            }
            drift.merge(&out.drift);
            logits = out.logits.expect("LogitsMode::Last returns logits");
        }
        if let Some(tok) = tokenizer {
            for seq in sequences.iter_mut().take(leaders) {
                let mut text = decode(Some(tok), &seq.tokens)?;
                if let Some(cut) = config
                    .stop_strings
                    .iter()
                    .filter_map(|s| text.find(s.as_str()))
                    .min()
                {
                    text.truncate(cut);
                }
                seq.text = Some(text);
            }
        }
        Ok((
            GenerationOutput {
                sequences,
                routing,
                drift,
            },
            kl,
        ))
    }
}

/// The shadow rows of a decoding loop: rows `rows..2 * rows` are fed rows `0..rows`'s
/// tokens and share their computation below layer `split` ([`Model::forward_twinned`]).
struct Twins<'a> {
    rows: usize,
    split: usize,
    lower_hooks: Hooks<'a>,
}

/// What [`Model::generate_shadowed`] returns.
#[derive(Debug, Clone)]
pub struct ShadowedOutput {
    /// The perturbed rows' continuations (`logprobs` under the perturbed model).
    pub sequences: Vec<Generated>,
    /// Per perturbed row and generated token: the token's log-probability under the
    /// unperturbed model, given the same preceding tokens.
    pub base_logprobs: Vec<Vec<f32>>,
    /// Per perturbed row and generated token: `KL(perturbed || unperturbed)` of the two
    /// next-token distributions the token was chosen from (nats).
    pub kl: Vec<Vec<f32>>,
    /// Routing drift of the perturbed rows (prompt and generated tokens).
    pub drift: RoutingDrift,
    /// With `record_routing`: the routing of all `2 * rows` rows, perturbed rows first,
    /// then their shadows in the same order.
    pub routing: Option<Routing>,
    /// Wall-clock seconds of the prompt's pass through the upper layers (all rows).
    pub prefill_seconds: f64,
    /// Wall-clock seconds of decoding.
    pub decode_seconds: f64,
}

fn decode(tokenizer: Option<&Tokenizer>, ids: &[u32]) -> Result<String> {
    let tokenizer = tokenizer.ok_or(ModelError::NoTokenizer)?;
    tokenizer
        .decode(ids, true)
        .map_err(|e| ModelError::InvalidRequest(format!("cannot decode generated tokens: {e}")))
}

/// Per-sequence token choice, with its own random stream when sampling.
struct Chooser {
    sampling: Sampling,
    rng: Option<ChaCha8Rng>,
}

impl Chooser {
    fn for_rows(sampling: &Sampling, rows: usize) -> Result<Vec<Chooser>> {
        match sampling {
            Sampling::Greedy => Ok((0..rows)
                .map(|_| Chooser {
                    sampling: sampling.clone(),
                    rng: None,
                })
                .collect()),
            Sampling::Random {
                temperature,
                top_p,
                seeds,
            } => {
                if !(*temperature > 0.0 && temperature.is_finite()) {
                    return Err(ModelError::InvalidRequest(format!(
                        "temperature must be > 0, got {temperature}"
                    )));
                }
                if !(*top_p > 0.0 && *top_p <= 1.0) {
                    return Err(ModelError::InvalidRequest(format!(
                        "top_p must be in (0, 1], got {top_p}"
                    )));
                }
                if seeds.len() != 1 && seeds.len() != rows {
                    return Err(ModelError::InvalidRequest(format!(
                        "{} seeds given for {rows} sequences (give one, or one per sequence)",
                        seeds.len()
                    )));
                }
                Ok((0..rows)
                    .map(|r| Chooser {
                        sampling: sampling.clone(),
                        rng: Some(ChaCha8Rng::seed_from_u64(
                            seeds[if seeds.len() == 1 { 0 } else { r }],
                        )),
                    })
                    .collect())
            }
        }
    }

    /// The next token from one row of logits and its log-probability at temperature 1
    /// (the model's own distribution, whatever the sampling temperature).
    fn choose(&mut self, logits: &[f32], stats: &RowStats) -> (u32, f32) {
        let token = match (&self.sampling, self.rng.as_mut()) {
            (
                Sampling::Random {
                    temperature, top_p, ..
                },
                Some(rng),
            ) => sample(logits, stats, *temperature, *top_p, rng.random::<f64>()),
            _ => stats.argmax,
        };
        (token, stats.logprob(logits, token))
    }
}

/// Inverse-CDF sampling at `temperature` from the nucleus of mass `top_p`: `u` in [0, 1)
/// picks the token. With the whole distribution (`top_p = 1`) tokens are taken in
/// vocabulary order, summed in blocks, so no sort is needed; a nucleus sorts only the
/// tokens that can belong to it.
fn sample(logits: &[f32], stats: &RowStats, temperature: f64, top_p: f64, u: f64) -> u32 {
    use crate::kernels::simd;
    let inv_t = (1.0 / temperature) as f32;
    let max = logits[stats.argmax as usize];
    let shift = max * inv_t;
    if top_p >= 1.0 {
        const BLOCK: usize = 512;
        let sums: Vec<f32> = logits
            .chunks(BLOCK)
            .map(|b| simd::sum_exp(b, inv_t, shift))
            .collect();
        let total: f64 = sums.iter().map(|&s| s as f64).sum();
        let mut target = u * total;
        for (b, &s) in sums.iter().enumerate() {
            if target < s as f64 || b + 1 == sums.len() {
                let start = b * BLOCK;
                let block = &logits[start..(start + BLOCK).min(logits.len())];
                for (i, &x) in block.iter().enumerate() {
                    target -= simd::exp(x.mul_add(inv_t, -shift)) as f64;
                    if target < 0.0 {
                        return (start + i) as u32;
                    }
                }
                return (start + block.len() - 1) as u32;
            }
            target -= s as f64;
        }
        return stats.argmax;
    }
    let weights: Vec<f64> = logits
        .iter()
        .map(|&x| (x.mul_add(inv_t, -shift) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).filter(|&i| weights[i] > 0.0).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
    let mut kept = Vec::new();
    let mut mass = 0.0;
    for &i in &order {
        let p = weights[i] / total;
        kept.push((i, p));
        mass += p;
        if mass >= top_p {
            break;
        }
    }
    let target = u * mass;
    let mut acc = 0.0;
    for &(i, p) in &kept {
        acc += p;
        if target < acc {
            return i as u32;
        }
    }
    kept.last().map_or(stats.argmax, |&(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::logits::row_stats;

    fn stats(logits: &[f32]) -> RowStats {
        row_stats(logits, logits.len())[0]
    }

    #[test]
    fn nucleus_keeps_the_top_mass() {
        // probabilities ~ [0.64, 0.24, 0.09, 0.03]
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let st = stats(&logits);
        // top_p 0.5 keeps only the first token, whatever u is.
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(sample(&logits, &st, 1.0, 0.5, u), 0);
        }
        // With the full distribution, a u near 1 reaches the last token.
        assert_eq!(sample(&logits, &st, 1.0, 1.0, 0.9999), 3);
    }

    /// The share of a uniform grid of `u` mapped to each token is its probability at the
    /// temperature (inverse-CDF sampling), over several of the 512-token blocks.
    #[test]
    fn sampling_follows_the_tempered_distribution() {
        let vocab = 1500;
        let logits: Vec<f32> = (0..vocab)
            .map(|i| ((i * 7919 % 1000) as f32 / 100.0) - 5.0)
            .collect();
        let st = stats(&logits);
        for (temperature, top_p) in [(1.0, 1.0), (0.5, 1.0), (0.7, 0.9)] {
            let weights: Vec<f64> = logits.iter().map(|&x| (x as f64 / temperature).exp()).collect();
            let total: f64 = weights.iter().sum();
            let grid = 20_000;
            let mut counts = vec![0usize; vocab];
            for g in 0..grid {
                let u = (g as f64 + 0.5) / grid as f64;
                counts[sample(&logits, &st, temperature, top_p, u) as usize] += 1;
            }
            if top_p >= 1.0 {
                for i in 0..vocab {
                    let p = weights[i] / total;
                    let share = counts[i] as f64 / grid as f64;
                    assert!(
                        (share - p).abs() < 2e-4,
                        "T {temperature}: token {i}: {share} vs {p}"
                    );
                }
            } else {
                // Only the most likely tokens, up to the mass, ever come out.
                let mut order: Vec<usize> = (0..vocab).collect();
                order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]));
                let mut mass = 0.0;
                let mut nucleus = std::collections::HashSet::new();
                for &i in &order {
                    nucleus.insert(i);
                    mass += weights[i] / total;
                    if mass >= top_p {
                        break;
                    }
                }
                assert!((0..vocab).all(|i| counts[i] == 0 || nucleus.contains(&i)));
            }
        }
    }
}
