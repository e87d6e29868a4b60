//! Routed experts with quantised weights ([`ExpertFormat::Q8_0`], [`ExpertFormat::Q4K`]),
//! run by candle's quantised CPU products inside the CPU dispatch
//! ([`crate::kernels::moe::forward_with`]).
//!
//! candle's quantised product quantises each input row to 8 bits (blocks of 256 with one
//! scale, GGML's Q8_K) and, on x86 CPUs with AVX-512 VNNI, runs repacked tiles of 16
//! weight rows with `vpdpbusd` — but only when the product's inner size is a multiple of
//! 256; otherwise it takes a generic kernel several times slower (two threads, 3072 x 576
//! weight: 40 GFLOP/s against 250-450 with an inner size of 768 or 1536). So each weight
//! is quantised with its inner dimension padded by zero columns to a multiple of 256
//! (SmolLM2's hidden size 576 becomes 768: a third more work on `[gate; up]`, still far
//! quicker), and the inputs are gathered into rows of that width with zeros after the
//! real values. Zero columns quantise exactly, so the padding changes no result.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use super::Decision;
use crate::kernels::moe::{forward_with, Chunk, ExpertProducts};
use crate::layers::mlp::Mlp;
use crate::layers::CResult;
use crate::model::ExpertFormat;

/// The inner sizes of the quantised products are padded to a multiple of this.
const INNER_MULTIPLE: usize = 256;

/// One expert's quantised weights, inner dimensions padded ([`INNER_MULTIPLE`]).
#[derive(Debug, Clone)]
struct QuantizedExpert {
    /// `[2 * inter, hidden_padded]`.
    gate_up: QMatMul,
    /// `[hidden, inter_padded]`.
    down: QMatMul,
}

/// The routed experts of one MoE layer, quantised.
#[derive(Debug, Clone)]
pub(crate) struct QuantizedExperts {
    experts: Vec<QuantizedExpert>,
    hidden: usize,
    inter: usize,
    hidden_padded: usize,
    inter_padded: usize,
}

/// `w: [rows, cols]` with zero columns up to `cols_padded`, quantised to `dtype`.
fn quantize_padded(w: &Tensor, cols_padded: usize, dtype: GgmlDType) -> CResult<QMatMul> {
    let (rows, cols) = w.dims2()?;
    let w = w.to_dtype(candle_core::DType::F32)?;
    let w = if cols_padded > cols {
        let zeros = Tensor::zeros((rows, cols_padded - cols), w.dtype(), w.device())?;
        Tensor::cat(&[&w, &zeros], 1)?
    } else {
        w.contiguous()?
    };
    QMatMul::from_qtensor(QTensor::quantize(&w, dtype)?)
}

/// The weight of `m` in f32, its padding columns cut off (`cols` real columns).
fn dequantize(m: &QMatMul, cols: usize) -> CResult<Tensor> {
    let full = match m {
        QMatMul::QTensor(t) => t.dequantize(&Device::Cpu)?,
        QMatMul::Tensor(t) => t.clone(),
        QMatMul::TensorF16(t) => t.to_dtype(candle_core::DType::F32)?,
    };
    full.narrow(1, 0, cols)?.contiguous()
}

/// The weight's storage in bytes.
fn bytes(m: &QMatMul) -> usize {
    match m {
        QMatMul::QTensor(t) => t.storage_size_in_bytes(),
        QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.elem_count() * t.dtype().size_in_bytes(),
    }
}

impl QuantizedExperts {
    /// Quantises `experts` (their f32 or f16/bf16 weights) to `format`.
    pub fn new(experts: &[Mlp], format: ExpertFormat) -> CResult<Self> {
        let dtype = format
            .ggml_dtype()
            .ok_or_else(|| candle_core::Error::Msg("quantising experts needs a quantised format".into()))?;
        let (hidden, inter) = match experts.first() {
            Some(e) => e.fused_weights().1.dims2()?,
            None => candle_core::bail!("a MoE layer without experts"),
        };
        let (hidden_padded, inter_padded) = (
            hidden.next_multiple_of(INNER_MULTIPLE),
            inter.next_multiple_of(INNER_MULTIPLE),
        );
        let experts = experts
            .iter()
            .map(|e| {
                let (gate_up, down) = e.fused_weights();
                Ok(QuantizedExpert {
                    gate_up: quantize_padded(gate_up, hidden_padded, dtype)?,
                    down: quantize_padded(down, inter_padded, dtype)?,
                })
            })
            .collect::<CResult<_>>()?;
        Ok(QuantizedExperts {
            experts,
            hidden,
            inter,
            hidden_padded,
            inter_padded,
        })
    }

    /// Expert `e`'s weights `(gate [inter, hidden], up [inter, hidden], down [hidden, inter])`
    /// as the quantised values, in f32.
    pub fn dequantized(&self, e: usize) -> CResult<(Tensor, Tensor, Tensor)> {
        let expert = &self.experts[e];
        let gate_up = dequantize(&expert.gate_up, self.hidden)?;
        Ok((
            gate_up.narrow(0, 0, self.inter)?,
            gate_up.narrow(0, self.inter, self.inter)?,
            dequantize(&expert.down, self.inter)?,
        ))
    }

    /// Number of experts.
    pub fn len(&self) -> usize {
        self.experts.len()
    }

    /// Bytes the quantised weights take.
    pub fn storage_bytes(&self) -> usize {
        self.experts
            .iter()
            .map(|e| bytes(&e.gate_up) + bytes(&e.down))
            .sum()
    }

    /// Runs each expert on the tokens routed to it and sums the weighted outputs:
    /// `xs: [n, hidden]` f32 on the CPU, one decision per row.
    pub fn dispatch(&self, xs: &Tensor, decisions: &[Decision]) -> CResult<Tensor> {
        let (n, hidden) = xs.dims2()?;
        if !xs.device().is_cpu() || xs.dtype() != candle_core::DType::F32 {
            candle_core::bail!(
                "quantised experts run on f32 inputs on the CPU, got {:?} on {:?}",
                xs.dtype(),
                xs.device()
            );
        }
        let xs = xs.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let routes: Vec<(&[u32], &[f32])> = decisions
            .iter()
            .map(|d| (d.experts.as_slice(), d.weights.as_slice()))
            .collect();
        let out = forward_with(self, &xs, hidden, self.inter, self.experts.len(), &routes)?;
        Tensor::from_vec(out, (n, hidden), &Device::Cpu)
    }

    /// Per chunk, `inputs[c]: [rows, width]` through `weight(expert)`.
    fn products(
        &self,
        chunks: &[Chunk],
        inputs: &[Vec<f32>],
        width: usize,
        weight: impl Fn(&QuantizedExpert) -> &QMatMul,
    ) -> CResult<Vec<Vec<f32>>> {
        chunks
            .iter()
            .zip(inputs)
            .map(|(&(e, rows), x)| {
                let x = Tensor::from_slice(x, (rows.len(), width), &Device::Cpu)?;
                weight(&self.experts[e])
                    .forward(&x)?
                    .flatten_all()?
                    .to_vec1::<f32>()
            })
            .collect()
    }
}

impl ExpertProducts for QuantizedExperts {
    fn chunk_rows(&self) -> usize {
        // candle's product tiles the rows itself and spreads the work over its threads.
        usize::MAX
    }
    fn input_width(&self, _hidden: usize) -> usize {
        self.hidden_padded
    }
    fn activation_width(&self, _inter: usize) -> usize {
        self.inter_padded
    }
    fn gate_up(&self, chunks: &[Chunk], inputs: &[Vec<f32>]) -> CResult<Vec<Vec<f32>>> {
        self.products(chunks, inputs, self.hidden_padded, |e| &e.gate_up)
    }
    fn down(&self, chunks: &[Chunk], activations: &[Vec<f32>]) -> CResult<Vec<Vec<f32>>> {
        self.products(chunks, activations, self.inter_padded, |e| &e.down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::moe::dispatch;

    /// Relative RMS difference `|a - b| / |b|`.
    fn relative_rms(a: &Tensor, b: &Tensor) -> f32 {
        let diff = (a - b)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let norm = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        (diff / norm).sqrt()
    }

    /// Gaussian values from a seeded generator.
    fn normal(rng: &mut rand_chacha::ChaCha8Rng, std: f32, shape: (usize, usize)) -> Tensor {
        use rand_distr::Distribution;
        let dist = rand_distr::Normal::new(0f32, std).unwrap();
        let values: Vec<f32> = (0..shape.0 * shape.1).map(|_| dist.sample(rng)).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// Random experts (hidden and width not multiples of 256, so both get padded) and
    /// routes over `n` tokens, expert 5 with no token.
    fn setup(n: usize) -> (Vec<Mlp>, Tensor, Vec<Decision>) {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(n as u64);
        let (hidden, inter, num_experts) = (96, 160, 6);
        let experts: Vec<Mlp> = (0..num_experts)
            .map(|_| {
                Mlp::from_weights(
                    &normal(&mut rng, 0.1, (inter, hidden)),
                    &normal(&mut rng, 0.1, (inter, hidden)),
                    normal(&mut rng, 0.1, (hidden, inter)),
                )
                .unwrap()
            })
            .collect();
        let xs = normal(&mut rng, 1.0, (n, hidden));
        let decisions = (0..n)
            .map(|t| Decision {
                experts: vec![(t % 3) as u32, (3 + t % 2) as u32],
                weights: vec![0.6, 0.4],
            })
            .collect();
        (experts, xs, decisions)
    }

    /// The quantised dispatch equals the f32 dispatch over the dequantised weights up to
    /// the 8-bit quantisation of each product's input (about 0.7% relative RMS a product
    /// for Gaussian inputs; the down product's input `silu(gate) * up` is heavier-tailed,
    /// 1.2-1.7% in all here: tolerance 3%). The dequantised weights are close to the
    /// originals (measured 0.5% for Q8_0, 7.4% for Q4_K: tolerances 1% and 9%), and so is
    /// the output (1.7-1.9% and 13-15%: tolerances 3% and 20%).
    #[test]
    fn matches_the_f32_dispatch_of_the_dequantised_weights() {
        for (format, weight_tolerance, output_tolerance) in
            [(ExpertFormat::Q8_0, 0.01, 0.03), (ExpertFormat::Q4K, 0.09, 0.2)]
        {
            for n in [1usize, 9, 70] {
                let (experts, xs, decisions) = setup(n);
                let quantized = QuantizedExperts::new(&experts, format).unwrap();
                let dequantized: Vec<Mlp> = (0..quantized.len())
                    .map(|e| {
                        let (g, u, d) = quantized.dequantized(e).unwrap();
                        let (g0, u0, d0) = experts[e].weights();
                        for (got, want) in [(&g, g0), (&u, u0), (&d, d0)] {
                            let err = relative_rms(got, want);
                            assert!(err < weight_tolerance, "{format}: weight error {err}");
                        }
                        Mlp::from_weights(&g, &u, d).unwrap()
                    })
                    .collect();
                let want = dispatch(&dequantized, &xs, &decisions).unwrap();
                let got = quantized.dispatch(&xs, &decisions).unwrap();
                let err = relative_rms(&got, &want);
                assert!(err < 0.03, "{format}, {n} tokens: relative error {err}");
                let exact = dispatch(&experts, &xs, &decisions).unwrap();
                let err = relative_rms(&got, &exact);
                assert!(
                    err < output_tolerance,
                    "{format}, {n} tokens: error {err} against the f32 experts"
                );
            }
        }
    }

    #[test]
    fn storage_is_smaller_than_f32() {
        let (experts, _, _) = setup(1);
        let q8 = QuantizedExperts::new(&experts, ExpertFormat::Q8_0).unwrap();
        let q4 = QuantizedExperts::new(&experts, ExpertFormat::Q4K).unwrap();
        // Padded to 256 x 256 here (a 6.7x larger matrix): 34 and 18 bytes per 32 values.
        let padded = experts.len() * (2 * 160 * 256 + 96 * 256);
        let f32_bytes = experts.len() * 3 * 96 * 160 * 4;
        assert_eq!(q8.storage_bytes(), padded / 32 * 34);
        assert_eq!(q4.storage_bytes(), padded / 256 * 144);
        assert!(q4.storage_bytes() < q8.storage_bytes() && q8.storage_bytes() < 2 * f32_bytes);
    }
}
