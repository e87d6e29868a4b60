//! Calibrating the perturbation scale to a KL target.
//!
//! The same raw scale means very different things at different layers (outlier dimensions
//! dominate the RMS), so the user sets a target mean KL divergence between the perturbed
//! and unperturbed next-token distributions instead. Along the reference answer
//! (teacher-forced: the prompt and the unperturbed greedy answer), a few probe latents are
//! decoded into perturbations at scale `s`; `KL(s)` is their mean KL over the answer's
//! positions. `s` is bracketed by doubling/halving and then bisected in log space until
//! `KL(s)` is within [`TOLERANCE`] of the target (relative), or the iterations run out
//! (the closest scale found is used, and its KL is reported).

use latentevo_model::{kl_divergence, Hooks, LogitsMode, Model, Perturbation, Positions, TokenBatch};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::config::SearchConfig;
use crate::error::Result;
use crate::latent::LatentMap;
use crate::result::Calibration;

/// Relative tolerance of the calibrated KL: `|KL / target - 1| <= TOLERANCE`.
pub const TOLERANCE: f64 = 0.05;

const MAX_EVALUATIONS: usize = 24;

/// What a cached scale depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CalibrationKey {
    prompt: Vec<u32>,
    layer: usize,
    setting: String,
    target_bits: u64,
}

impl CalibrationKey {
    pub fn new(prompt: &[u32], cfg: &SearchConfig, target: f64) -> Self {
        CalibrationKey {
            prompt: prompt.to_vec(),
            layer: cfg.layer,
            setting: format!(
                "{} {:?} {} {} {} {} {} {}",
                cfg.basis,
                cfg.shaping,
                cfg.inject,
                cfg.routing,
                cfg.latent_dim,
                cfg.seed,
                cfg.max_new_tokens,
                cfg.calibration_probes
            ),
            target_bits: target.to_bits(),
        }
    }
}

/// Finds the scale whose probe perturbations induce mean KL `target` along the reference.
#[allow(clippy::too_many_arguments)]
pub(crate) fn calibrate(
    model: &Model,
    prompt: &[u32],
    reference: &[u32],
    cfg: &SearchConfig,
    map: &LatentMap,
    positions: &Positions,
    target: f64,
    seed: u64,
) -> Result<Calibration> {
    let probes = cfg.calibration_probes;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let latents: Vec<Vec<f64>> = (0..probes)
        .map(|_| {
            (0..map.latent_dim())
                .map(|_| StandardNormal.sample(&mut rng))
                .collect()
        })
        .collect();
    // Teacher-forced: the prompt and the reference answer, scored at the positions that
    // predict the answer's tokens (the last prompt position when the answer is empty).
    let sequence: Vec<u32> = prompt.iter().chain(reference).copied().collect();
    let batch = TokenBatch::left_padded(std::slice::from_ref(&sequence), 0);
    let first = prompt.len() - 1;
    let count = reference.len().max(1);
    let shared_prompt = model.run_lower_layers(&batch, cfg.layer, true)?;
    let record = Hooks {
        record_routing: true,
        ..Hooks::default()
    };
    let (base, _) = model.forward_upper_layers(&shared_prompt, &record, LogitsMode::All)?;
    let base_logits = base
        .logits
        .expect("LogitsMode::All returns logits")
        .narrow(1, first, count)?;
    let lock = cfg.routing.lock(base.routing.unwrap_or_default());
    let probe_prompt = shared_prompt.repeat(probes)?;
    let base_logits = base_logits.repeat((probes, 1, 1))?;
    let evaluations = std::cell::Cell::new(0usize);
    let kl_at = |scale: f64| -> Result<f64> {
        evaluations.set(evaluations.get() + 1);
        let perturb = Perturbation {
            layer: cfg.layer,
            delta: map.deltas(&latents, scale, model.device())?,
            positions: positions.clone(),
        };
        let hooks = Hooks {
            perturb: Some(&perturb),
            lock: lock.as_ref(),
            ..Hooks::default()
        };
        let (out, _) = model.forward_upper_layers(&probe_prompt, &hooks, LogitsMode::All)?;
        let logits = out
            .logits
            .expect("LogitsMode::All returns logits")
            .narrow(1, first, count)?;
        let kl = kl_divergence(&logits, &base_logits)?
            .mean_all()?
            .to_scalar::<f32>()? as f64;
        Ok(if kl.is_finite() {
            kl.max(0.0)
        } else {
            f64::INFINITY
        })
    };
    let within = |kl: f64| (kl / target - 1.0).abs() <= TOLERANCE;
    let mut best = (f64::INFINITY, 0.0, 0.0); // (|log(kl / target)|, scale, kl)
    let consider = |scale: f64, kl: f64, best: &mut (f64, f64, f64)| {
        let miss = (kl.max(1e-12) / target).ln().abs();
        if miss < best.0 {
            *best = (miss, scale, kl);
        }
    };
    // Bracket: lo has KL below the target, hi above.
    let mut scale = 0.2;
    let mut kl = kl_at(scale)?;
    consider(scale, kl, &mut best);
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    while !within(kl) && evaluations.get() < MAX_EVALUATIONS / 2 {
        if kl < target {
            lo = scale;
            if hi.is_finite() {
                break;
            }
            scale *= 2.0;
        } else {
            hi = scale;
            if lo > 0.0 {
                break;
            }
            scale /= 2.0;
        }
        kl = kl_at(scale)?;
        consider(scale, kl, &mut best);
    }
    if kl < target {
        lo = lo.max(scale);
    } else {
        hi = hi.min(scale);
    }
    // Bisect in log space.
    while !within(best.2) && lo > 0.0 && hi.is_finite() && evaluations.get() < MAX_EVALUATIONS {
        let mid = (lo * hi).sqrt();
        let kl = kl_at(mid)?;
        consider(mid, kl, &mut best);
        if kl < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Calibration {
        target_kl: Some(target),
        achieved_kl: best.2,
        scale: best.1,
        evaluations: evaluations.get(),
        cached: false,
    })
}
