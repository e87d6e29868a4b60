//! Micro-benchmark of one expert's SwiGLU MLP on the CPU (SmolLM2-135M MoE shapes:
//! hidden 576, width 1536) in several weight layouts, to choose the dispatch's layout;
//! then candle's quantised product (`QMatMul`) against its f32 product at the experts'
//! weight shapes, with the inner size as the checkpoint has it (576) and padded to a
//! multiple of 256 (768, what `layers::moe::quantized` does): candle's repacked x86
//! kernels (AVX-512 VNNI tiles; AMX for Q4_K at 32 rows or more) take only such sizes.
//!
//! `cargo bench -p latentevo-model --bench expert_matmul` (threads: `RAYON_NUM_THREADS`)
//!
//! Prints JSON lines: microseconds per MLP and layout (`"tokens"`), then GFLOP/s of
//! `x @ w^T` per weight shape, row count and format (`"rows"`; the padded product counted
//! at its own size).

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
    quantized_products(&dev)
}

/// GFLOP/s of f32 and quantised `x @ w^T` at the experts' weight shapes.
fn quantized_products(dev: &Device) -> Result<()> {
    // [gate; up] 3072 x 576, padded 3072 x 768; down 576 x 1536.
    for (n, k) in [(3072usize, 576usize), (3072, 768), (576, 1536)] {
        let w = Tensor::randn(0f32, 0.02, (n, k), dev)?;
        let formats = [GgmlDType::Q8_0, GgmlDType::Q4K]
            .into_iter()
            .filter_map(|d| Some((d, QMatMul::from_qtensor(QTensor::quantize(&w, d).ok()?).ok()?)))
            .collect::<Vec<_>>();
        for m in [8usize, 16, 32, 64, 272, 1088] {
            let x = Tensor::randn(0f32, 1.0, (m, k), dev)?;
            let reps = if m > 300 { 5 } else { 20 };
            let gflops = |seconds: f64| 2.0 * (m * n * k) as f64 / seconds / 1e9;
            let mut line = serde_json::json!({
                "n": n, "k": k, "rows": m,
                "f32_gflops": gflops(best(reps, || x.matmul(&w.t()?))?),
            });
            for (dtype, q) in &formats {
                line[format!("{dtype:?}_gflops").to_lowercase()] =
                    gflops(best(reps, || q.forward(&x))?).into();
            }
            println!("{line}");
        }
    }
    Ok(())
}
