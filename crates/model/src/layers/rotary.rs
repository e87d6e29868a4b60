//! Rotary position embedding (RoPE), with Llama-3 frequency scaling.

use candle_core::{DType, Device, Tensor};

use super::{CResult, TokenLayout};
use crate::config::{Llama3RopeScaling, ModelConfig};

/// Rotary position embedding with per-token positions (so left-padded rows rotate correctly).
#[derive(Debug, Clone)]
pub(crate) struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    pub fn new(cfg: &ModelConfig) -> Self {
        let d = cfg.head_dim;
        let mut inv_freq: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / d as f32))
            .collect();
        if let Some(s) = cfg.rope_llama3 {
            inv_freq = inv_freq.into_iter().map(|f| llama3_frequency(f, &s)).collect();
        }
        Rotary { inv_freq }
    }

    /// `(cos, sin)`, each `[batch, seq, head_dim / 2]`.
    pub fn cos_sin(&self, layout: &TokenLayout, device: &Device, dtype: DType) -> CResult<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut angles = Vec::with_capacity(layout.positions.len() * half);
        for &p in &layout.positions {
            angles.extend(self.inv_freq.iter().map(|f| p as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (layout.batch, layout.seq, half), device)?;
        Ok((angles.cos()?.to_dtype(dtype)?, angles.sin()?.to_dtype(dtype)?))
    }
}

fn llama3_frequency(freq: f32, s: &Llama3RopeScaling) -> f32 {
    let wavelen = 2.0 * std::f64::consts::PI / freq as f64;
    let low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    if wavelen < high_freq_wavelen {
        freq
    } else if wavelen > low_freq_wavelen {
        (freq as f64 / s.factor) as f32
    } else {
        let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
            / (s.high_freq_factor - s.low_freq_factor);
        ((1.0 - smooth) * freq as f64 / s.factor + smooth * freq as f64) as f32
    }
}
