//! Micro-benchmark of one expert's SwiGLU MLP on the CPU (SmolLM2-135M MoE shapes:
//! hidden 576, width 1536) in several weight layouts, to choose the dispatch's layout.
//!
//! `cargo bench -p latentevo-model --bench expert_matmul`

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};

fn best<F: FnMut() -> Result<Tensor>>(reps: usize, mut f: F) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let (h, i) = (576, 1536);
    let gate = Tensor::randn(0f32, 0.02, (i, h), &dev)?;
    let up = Tensor::randn(0f32, 0.02, (i, h), &dev)?;
    let down = Tensor::randn(0f32, 0.02, (h, i), &dev)?;
    let gate_up = Tensor::cat(&[&gate, &up], 0)?; // [2i, h]
    let (gt, ut, dt) = (
        gate.t()?.contiguous()?,
        up.t()?.contiguous()?,
        down.t()?.contiguous()?,
    );
    let gut = gate_up.t()?.contiguous()?; // [h, 2i]
    let q = |w: &Tensor, d: GgmlDType| -> Result<QMatMul> { QMatMul::from_qtensor(QTensor::quantize(w, d)?) };
    let (qg, qu, qd) = (
        q(&gate, GgmlDType::Q8_0)?,
        q(&up, GgmlDType::Q8_0)?,
        q(&down, GgmlDType::Q8_0)?,
    );
    for m in [8usize, 16, 64, 272, 544, 1088] {
        let x = Tensor::randn(0f32, 1.0, (m, h), &dev)?;
        let reps = if m > 300 {
            4
        } else if m > 64 {
            10
        } else {
            30
        };
        let now = best(reps, || {
            let g = x.matmul(&gate.t()?)?;
            let u = x.matmul(&up.t()?)?;
            (candle_nn::ops::silu(&g)? * u)?.matmul(&down.t()?)
        })?;
        let fused = best(reps, || {
            let gu = x.matmul(&gate_up.t()?)?;
            let (g, u) = (gu.narrow(1, 0, i)?, gu.narrow(1, i, i)?);
            (candle_nn::ops::silu(&g)? * u)?.matmul(&down.t()?)
        })?;
        let pre_t = best(reps, || {
            let g = x.matmul(&gt)?;
            let u = x.matmul(&ut)?;
            (candle_nn::ops::silu(&g)? * u)?.matmul(&dt)
        })?;
        let pre_t_fused = best(reps, || {
            let gu = x.matmul(&gut)?;
            let (g, u) = (gu.narrow(1, 0, i)?, gu.narrow(1, i, i)?);
            (candle_nn::ops::silu(&g)? * u)?.matmul(&dt)
        })?;
        let flipped = best(reps, || {
            let xt = x.t()?;
            let g = gate.matmul(&xt)?;
            let u = up.matmul(&xt)?;
            down.matmul(&(candle_nn::ops::silu(&g)? * u)?)?.t()?.contiguous()
        })?;
        let q8 = best(reps, || {
            let g = qg.forward(&x)?;
            let u = qu.forward(&x)?;
            qd.forward(&(candle_nn::ops::silu(&g)? * u)?)
        })?;
        println!(
            "{}",
            serde_json::json!({"tokens": m, "us_current": now * 1e6, "us_fused_gate_up": fused * 1e6,
                "us_pretransposed": pre_t * 1e6, "us_pretransposed_fused": pre_t_fused * 1e6,
                "us_flipped": flipped * 1e6, "us_q8_0": q8 * 1e6})
        );
    }
    Ok(())
}
