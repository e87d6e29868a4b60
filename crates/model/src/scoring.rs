//! Scoring under a model, on the model's device: log-probabilities of given tokens, KL
//! divergence between next-token distributions, and continuations scored after a shared
//! context.

use candle_core::{DType, IndexOp, Tensor, D};

use crate::batch::TokenBatch;
use crate::error::{ModelError, Result};
use crate::hooks::Hooks;
use crate::model::{LogitsMode, Model};

/// `log softmax(logits)[target]` along the last dimension: `logits` is `[.., vocab]`,
/// `targets` (u32) has the leading shape of `logits`; the result has that shape, in f32.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let logits = Tensor::new(&[[0f32, 0.0], [2.0, 0.0]], &Device::Cpu)?;
/// let targets = Tensor::new(&[1u32, 0], &Device::Cpu)?;
/// let lp = latentevo_model::gather_logprobs(&logits, &targets)?.to_vec1::<f32>()?;
/// assert!((lp[0] - 0.5f32.ln()).abs() < 1e-6);
/// # Ok::<(), latentevo_model::ModelError>(())
/// ```
pub fn gather_logprobs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let lead = &logits.dims()[..logits.rank().saturating_sub(1)];
    if logits.rank() == 0 || targets.dims() != lead {
        return Err(ModelError::InvalidRequest(format!(
            "targets of shape {:?} do not match logits of shape {:?}",
            targets.dims(),
            logits.dims()
        )));
    }
    let logprobs = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let targets = targets.to_dtype(DType::U32)?.unsqueeze(D::Minus1)?;
    Ok(logprobs.gather(&targets, D::Minus1)?.squeeze(D::Minus1)?)
}

/// `KL(p || q) = sum_v p(v) (log p(v) - log q(v))` per row, from logits `p` and `q` of the
/// same shape `[.., vocab]` (nats, f32, shape `[..]`).
///
/// ```
/// use candle_core::{Device, Tensor};
/// let p = Tensor::new(&[[1f32, 2.0, 3.0]], &Device::Cpu)?;
/// let kl = latentevo_model::kl_divergence(&p, &p)?.to_vec1::<f32>()?;
/// assert!(kl[0].abs() < 1e-6);
/// # Ok::<(), latentevo_model::ModelError>(())
/// ```
pub fn kl_divergence(p: &Tensor, q: &Tensor) -> Result<Tensor> {
    if p.dims() != q.dims() || p.rank() == 0 {
        return Err(ModelError::InvalidRequest(format!(
            "KL divergence of logits with shapes {:?} and {:?}",
            p.dims(),
            q.dims()
        )));
    }
    let lp = candle_nn::ops::log_softmax(&p.to_dtype(DType::F32)?, D::Minus1)?;
    let lq = candle_nn::ops::log_softmax(&q.to_dtype(DType::F32)?, D::Minus1)?;
    Ok((lp.exp()? * (&lp - &lq)?)?.sum(D::Minus1)?)
}

impl Model {
    /// The log-probability of every token of each continuation, given `context` followed by
    /// the continuation's earlier tokens, with `hooks` applied to every forward call.
    ///
    /// The context is run once and its cache shared by all continuations, which then run
    /// together in one call over that non-empty cache (right-padded; padding is masked).
    /// Log-softmax and the gather of the scored tokens run on the device; only the scores
    /// come back. `context` must not be empty (its last position predicts each
    /// continuation's first token); an empty continuation gets an empty score list.
    ///
    /// ```no_run
    /// let loaded = latentevo_model::load("models/tiny/llama", &Default::default())?;
    /// let scores = loaded.model.score_continuations(&[1, 2, 3], &[vec![4, 5], vec![6]], &Default::default())?;
    /// assert_eq!(scores[0].len(), 2);
    /// # Ok::<(), latentevo_model::ModelError>(())
    /// ```
    pub fn score_continuations(
        &self,
        context: &[u32],
        continuations: &[Vec<u32>],
        hooks: &Hooks,
    ) -> Result<Vec<Vec<f32>>> {
        if context.is_empty() {
            return Err(ModelError::InvalidRequest(
                "scoring needs a non-empty context (it predicts the first token)".into(),
            ));
        }
        let rows = continuations.len();
        let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
        if longest == 0 {
            return Ok(vec![Vec::new(); rows]);
        }
        let mut cache = self.new_cache();
        let first = self
            .forward(
                &TokenBatch::left_padded(&[context.to_vec()], 0),
                &mut cache,
                hooks,
                LogitsMode::Last,
            )?
            .logits
            .expect("LogitsMode::Last returns logits");
        let mut cache = cache.repeat(rows)?;
        let batch = TokenBatch::right_padded(continuations, 0);
        let logits = self
            .forward(&batch, &mut cache, hooks, LogitsMode::All)?
            .logits
            .expect("LogitsMode::All returns logits");
        // Position j of a row is predicted by the logits at j - 1; position 0 by the context.
        let first = first.unsqueeze(1)?.repeat((rows, 1, 1))?;
        let predicting = Tensor::cat(&[&first, &logits.i((.., ..longest - 1, ..))?], 1)?;
        let targets: Vec<u32> = batch.ids().iter().flatten().copied().collect();
        let targets = Tensor::from_vec(targets, (rows, longest), self.device())?;
        let scores = gather_logprobs(&predicting, &targets)?.to_vec2::<f32>()?;
        Ok(scores
            .into_iter()
            .zip(continuations)
            .map(|(mut row, c)| {
                row.truncate(c.len());
                row
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn kl_matches_a_hand_computation() {
        let p = Tensor::new(&[[0f32, 1.0f32.ln()], [3.0f32.ln(), 0.0]], &Device::Cpu).unwrap();
        let q = Tensor::new(&[[3.0f32.ln(), 0.0], [0f32, 0.0]], &Device::Cpu).unwrap();
        let kl = kl_divergence(&p, &q).unwrap().to_vec1::<f32>().unwrap();
        // Row 0: p = (1/2, 1/2), q = (3/4, 1/4). Row 1: p = (3/4, 1/4), q = (1/2, 1/2).
        let row0 = 0.5 * (0.5f64 / 0.75).ln() + 0.5 * (0.5f64 / 0.25).ln();
        let row1 = 0.75 * (0.75f64 / 0.5).ln() + 0.25 * (0.25f64 / 0.5).ln();
        assert!(
            (kl[0] as f64 - row0).abs() < 1e-6 && (kl[1] as f64 - row1).abs() < 1e-6,
            "{kl:?}"
        );
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let p = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let q = Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(kl_divergence(&p, &q).is_err());
        let t = Tensor::zeros(3, DType::U32, &Device::Cpu).unwrap();
        assert!(gather_logprobs(&p, &t).is_err());
    }
}
