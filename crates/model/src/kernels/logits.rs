//! Per-row statistics of next-token logits on the CPU: the arg-max, the log-sum-exp (so
//! any token's log-probability is one subtraction) and the KL divergence between two
//! rows, read in place from the logits tensor.

use rayon::prelude::*;

use super::simd;

/// What one row of logits yields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RowStats {
    /// The largest logit's index (the first, on ties).
    pub argmax: u32,
    /// `log sum_j e^(logit_j)`.
    pub log_sum_exp: f32,
}

impl RowStats {
    /// `log softmax(row)[token]`.
    pub fn logprob(&self, row: &[f32], token: u32) -> f32 {
        row[token as usize] - self.log_sum_exp
    }
}

/// Statistics of every row of `logits: [rows, vocab]`.
pub(crate) fn row_stats(logits: &[f32], vocab: usize) -> Vec<RowStats> {
    logits
        .par_chunks(vocab)
        .map(|row| {
            let (max, argmax) = simd::max_and_argmax(row);
            let sum = if max.is_finite() {
                simd::sum_exp(row, 1.0, max)
            } else {
                f32::NAN
            };
            RowStats {
                argmax: argmax as u32,
                log_sum_exp: max + sum.ln(),
            }
        })
        .collect()
}

/// `KL(softmax(row p) || softmax(row q))` for each pair `(p, q)` of row indices.
pub(crate) fn kl_pairs(
    logits: &[f32],
    vocab: usize,
    stats: &[RowStats],
    pairs: &[(usize, usize)],
) -> Vec<f32> {
    pairs
        .par_iter()
        .map(|&(p, q)| {
            let row = |r: usize| &logits[r * vocab..(r + 1) * vocab];
            simd::kl_rows(row(p), stats[p].log_sum_exp, row(q), stats[q].log_sum_exp).max(0.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn match_candle_log_softmax_and_kl() {
        let dev = Device::Cpu;
        let (rows, vocab) = (4, 1003);
        let logits = Tensor::randn(0f32, 3.0, (rows, vocab), &dev).unwrap();
        let data = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let stats = row_stats(&data, vocab);
        let logp = candle_nn::ops::log_softmax(&logits, 1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for r in 0..rows {
            let row = &data[r * vocab..(r + 1) * vocab];
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |(i, m), (j, &v)| if v > m { (j, v) } else { (i, m) },
                )
                .0;
            assert_eq!(stats[r].argmax as usize, best);
            for t in [0u32, 17, 1002] {
                assert!((stats[r].logprob(row, t) - logp[r][t as usize]).abs() < 1e-5);
            }
        }
        let pairs = [(0usize, 1usize), (2, 3), (1, 1)];
        let kl = kl_pairs(&data, vocab, &stats, &pairs);
        let want =
            crate::scoring::kl_divergence(&logits.narrow(0, 0, 1).unwrap(), &logits.narrow(0, 1, 1).unwrap())
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[0];
        assert!((kl[0] - want).abs() < 1e-4 * want.max(1.0), "{} vs {want}", kl[0]);
        assert!(kl[1] > 0.0);
        assert!(kl[2].abs() < 1e-6);
    }
}
