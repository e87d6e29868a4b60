//! The routed experts of one MoE layer on the CPU.
//!
//! Tokens are grouped by expert once; each expert's tokens are cut into chunks of at
//! most [`CHUNK_ROWS`] rows. Then two parallel phases, each a list of (expert, row chunk,
//! column block) work items over rayon's threads: the product with the fused
//! `[gate; up]` weight, followed per row by `silu(gate) * up * routing weight`; then the
//! product with `down`. Cutting the columns as well as the rows keeps both threads busy
//! when the tokens of a decoding step crowd onto one or two experts, and each item's
//! weight block is read once. The weighted outputs are summed per token at the end, in
//! the order of the token's choices, so the result does not depend on the threads' timing.
//!
//! The two products are an [`ExpertProducts`]: [`PackedExperts`] (the weights packed
//! into panels, [`super::packed`]; what f32 experts on an AVX-512 CPU use), [`F32Experts`]
//! (the weights as loaded, [`super::matmul`]), or the quantised experts of
//! `layers::moe::quantized` (candle's quantised products), around the same grouping,
//! activation and sum.

use rayon::prelude::*;

use super::matmul::{matmul_nt, NR};
use super::packed::{PackedWeight, PANEL};
use super::{simd, Outputs, SendPtr};

/// Rows per chunk: the chunk's inputs stay in the core's cache while an item's weight
/// block streams past.
pub(crate) const CHUNK_ROWS: usize = 64;

/// One expert's weights, f32 row-major.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExpertWeights<'a> {
    /// `[2 * inter, hidden]`: the gate rows, then the up rows.
    pub gate_up: &'a [f32],
    /// `[hidden, inter]`.
    pub down: &'a [f32],
}

/// One chunk of one expert's tokens: `(token, slot among the token's choices, weight)`.
pub(crate) type Chunk<'a> = (usize, &'a [(usize, usize, f32)]);

simd::vectorized! {
    /// The router's softmax over experts for each row of `xs: [n, hidden]` against
    /// `weight: [experts, hidden]`: a decoding step's router is 32 rows by a handful of
    /// experts, where a tensor product's setup and copies cost more than the arithmetic.
    /// (Loops, not closures: a closure would not take the vector extensions, and its
    /// `mul_add` would be a library call.)
    fn router_probabilities(xs: &[f32], weight: &[f32], hidden: usize) -> Vec<Vec<f32>> {
        let experts = weight.len() / hidden;
        let mut all = Vec::with_capacity(xs.len() / hidden);
        for x in xs.chunks_exact(hidden) {
            let mut p = vec![0f32; experts];
            for (e, w) in weight.chunks_exact(hidden).enumerate() {
                p[e] = simd::dot_inline(x, w);
            }
            let mut max = f32::NEG_INFINITY;
            for &v in &p {
                max = max.max(v);
            }
            let mut sum = 0f32;
            for v in p.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            for v in p.iter_mut() {
                *v /= sum;
            }
            all.push(p);
        }
        all
    }
}

/// The two products of the routed experts, for [`forward_with`]: the f32 weights here
/// ([`PackedExperts`], [`F32Experts`]), or quantised ones (`layers::moe::quantized`).
pub(crate) trait ExpertProducts {
    /// Rows per chunk of one expert's tokens ([`CHUNK_ROWS`] unless a product says).
    fn chunk_rows(&self) -> usize {
        CHUNK_ROWS
    }
    /// Columns of a gathered input row: the hidden size, or more (zeros after it).
    fn input_width(&self, hidden: usize) -> usize {
        hidden
    }
    /// Columns of an activation row: the expert width, or more (zeros after it).
    fn activation_width(&self, inter: usize) -> usize {
        inter
    }
    /// Per chunk, its inputs `[rows, input_width]` times the expert's `[gate; up]`
    /// weight: `[rows, 2 * inter]`.
    fn gate_up(&self, chunks: &[Chunk], inputs: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>>;
    /// Per chunk, its activations `[rows, activation_width]` times the expert's `down`
    /// weight: `[rows, hidden]`.
    fn down(&self, chunks: &[Chunk], activations: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>>;
}

/// The f32 experts' products with [`matmul_nt`], as (chunk, column block) items over
/// rayon's threads.
pub(crate) struct F32Experts<'a> {
    /// The experts' weights.
    pub experts: &'a [ExpertWeights<'a>],
    /// The hidden size.
    pub hidden: usize,
    /// The experts' width.
    pub inter: usize,
}

/// Column block of an item over `cols` output columns with `chunks` chunks: enough items
/// for the threads to share evenly, each at least 64 weight rows.
fn column_block(cols: usize, chunks: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let per_chunk = (threads * 4).div_ceil(chunks.max(1));
    cols.div_ceil(per_chunk).max(64).next_multiple_of(NR).min(cols)
}

impl ExpertProducts for F32Experts<'_> {
    fn gate_up(&self, chunks: &[Chunk], inputs: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let cols = 2 * self.inter;
        Ok(blocked_products(
            chunks,
            inputs,
            cols,
            self.hidden,
            column_block(cols, chunks.len()),
            |e| self.experts[e].gate_up,
        ))
    }
    fn down(&self, chunks: &[Chunk], activations: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let cols = self.hidden;
        Ok(blocked_products(
            chunks,
            activations,
            cols,
            self.inter,
            column_block(cols, chunks.len()),
            |e| self.experts[e].down,
        ))
    }
}

/// `xs: [n, hidden]` through the experts `routes[t] = (ids, weights)` names for each
/// token `t`, each output scaled by its weight and summed; returns `[n, hidden]`.
pub(crate) fn forward(
    xs: &[f32],
    hidden: usize,
    inter: usize,
    experts: &[ExpertWeights],
    routes: &[(&[u32], &[f32])],
) -> candle_core::Result<Vec<f32>> {
    let products = F32Experts {
        experts,
        hidden,
        inter,
    };
    forward_with(&products, xs, hidden, inter, experts.len(), routes)
}

/// [`forward`] with the products of `products`.
pub(crate) fn forward_with(
    products: &impl ExpertProducts,
    xs: &[f32],
    hidden: usize,
    inter: usize,
    num_experts: usize,
    routes: &[(&[u32], &[f32])],
) -> candle_core::Result<Vec<f32>> {
    let n = routes.len();
    debug_assert_eq!(xs.len(), n * hidden);
    let mut assigned: Vec<Vec<(usize, usize, f32)>> = vec![Vec::new(); num_experts];
    for (t, &(ids, ws)) in routes.iter().enumerate() {
        for (slot, (&e, &w)) in ids.iter().zip(ws).enumerate() {
            assigned[e as usize].push((t, slot, w));
        }
    }
    let chunk_rows = products.chunk_rows();
    let chunks: Vec<Chunk> = assigned
        .iter()
        .enumerate()
        .flat_map(|(e, rows)| rows.chunks(chunk_rows).map(move |c| (e, c)))
        .collect();
    let (input_width, activation_width) = (products.input_width(hidden), products.activation_width(inter));

    // Phase 1: gathered inputs, then [gate | up] per chunk, then the weighted activation.
    let inputs: Vec<Vec<f32>> = chunks
        .par_iter()
        .map(|&(_, rows)| {
            let mut x = vec![0f32; rows.len() * input_width];
            for (r, &(t, _, _)) in rows.iter().enumerate() {
                x[r * input_width..r * input_width + hidden]
                    .copy_from_slice(&xs[t * hidden..(t + 1) * hidden]);
            }
            x
        })
        .collect();
    let gate_up = products.gate_up(&chunks, &inputs)?;
    drop(inputs);
    let activations: Vec<Vec<f32>> = chunks
        .par_iter()
        .zip(gate_up)
        .map(|(&(_, rows), gu)| {
            let mut act = vec![0f32; rows.len() * activation_width];
            for (r, &(_, _, weight)) in rows.iter().enumerate() {
                let row = &gu[r * 2 * inter..(r + 1) * 2 * inter];
                let dst = &mut act[r * activation_width..r * activation_width + inter];
                simd::silu_mul_scaled(dst, &row[..inter], &row[inter..], weight);
            }
            act
        })
        .collect();
    // Phase 2: down.
    let outputs = products.down(&chunks, &activations)?;

    // Sum each token's weighted expert outputs in slot order.
    let top_k = routes.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let mut sources: Vec<Option<(usize, usize)>> = vec![None; n * top_k];
    for (c, &(_, rows)) in chunks.iter().enumerate() {
        for (r, &(t, slot, _)) in rows.iter().enumerate() {
            sources[t * top_k + slot] = Some((c, r));
        }
    }
    let mut out = vec![0f32; n * hidden];
    out.par_chunks_mut(hidden).enumerate().for_each(|(t, dst)| {
        for &(c, r) in sources[t * top_k..(t + 1) * top_k].iter().flatten() {
            simd::add_assign(dst, &outputs[c][r * hidden..(r + 1) * hidden]);
        }
    });
    Ok(out)
}

/// For every chunk, `inputs[c] @ weight(expert)^T` (`[rows, cols]`, weight `[cols, k]`),
/// computed as (chunk, column block) items in parallel.
fn blocked_products<'w>(
    chunks: &[Chunk],
    inputs: &[Vec<f32>],
    cols: usize,
    k: usize,
    block: usize,
    weight: impl Fn(usize) -> &'w [f32] + Sync,
) -> Vec<Vec<f32>> {
    in_column_blocks(chunks, cols, block, |c, j0, width, dst| {
        let (e, rows) = chunks[c];
        matmul_nt(
            dst,
            cols,
            &inputs[c],
            &weight(e)[j0 * k..(j0 + width) * k],
            rows.len(),
            width,
            k,
        );
    })
}

/// Runs `product(chunk, first column, width, dst)` for the (chunk, column block) items of
/// `chunks`' `[rows, cols]` outputs in parallel, `dst` starting at the block's first
/// column of the chunk's row 0 (row stride `cols`); returns the outputs. `product` must
/// write every value of its block (they start unwritten) and nothing outside it.
fn in_column_blocks(
    chunks: &[Chunk],
    cols: usize,
    block: usize,
    product: impl Fn(usize, usize, usize, &mut [f32]) + Sync,
) -> Vec<Vec<f32>> {
    let mut outputs: Vec<Outputs> = chunks
        .iter()
        .map(|&(_, rows)| Outputs::new(rows.len() * cols))
        .collect();
    let items: Vec<(usize, usize)> = (0..chunks.len())
        .flat_map(|c| (0..cols.div_ceil(block)).map(move |b| (c, b * block)))
        .collect();
    let targets: Vec<SendPtr> = outputs.iter_mut().map(Outputs::ptr).collect();
    items.par_iter().for_each(|&(c, j0)| {
        let m = chunks[c].1.len();
        let width = block.min(cols - j0);
        let len = m * cols - j0;
        // SAFETY: items of one chunk write disjoint column ranges [j0, j0 + width) of its
        // [m, cols] output, which lives until the loop ends; the slice starts at column j0
        // of row 0, and the product writes every value of its block before reading any
        // and touches nothing outside it (the rest of the slice may be unwritten).
        let dst = unsafe { std::slice::from_raw_parts_mut(targets[c].get().add(j0), len) };
        product(c, j0, width, dst);
    });
    outputs
        .into_iter()
        // SAFETY: the items' blocks cover every column of every row of each output.
        .map(|o| unsafe { o.assume_written() })
        .collect()
}

/// The experts' products with their packed weights ([`super::packed`]), as (chunk,
/// column block) items over rayon's threads, the blocks whole panels.
pub(crate) struct PackedExperts<'a> {
    /// Per expert, its packed `[gate; up]` and `down` weights.
    pub experts: &'a [(&'a PackedWeight, &'a PackedWeight)],
}

impl<'a> PackedExperts<'a> {
    fn products(
        &self,
        chunks: &[Chunk],
        inputs: &[Vec<f32>],
        weight: impl Fn(usize) -> &'a PackedWeight + Sync,
    ) -> Vec<Vec<f32>> {
        let Some(&(first, _)) = chunks.first() else {
            return Vec::new();
        };
        let cols = weight(first).n();
        let block = column_block(cols, chunks.len()).next_multiple_of(PANEL);
        in_column_blocks(chunks, cols, block, |c, j0, width, dst| {
            let (e, rows) = chunks[c];
            let (p0, p1) = (j0 / PANEL, (j0 + width).div_ceil(PANEL));
            weight(e).matmul(dst, cols, &inputs[c], rows.len(), p0..p1);
        })
    }
}

impl ExpertProducts for PackedExperts<'_> {
    fn chunk_rows(&self) -> usize {
        self.experts
            .first()
            .map_or(CHUNK_ROWS, |(gate_up, _)| gate_up.row_chunk())
    }
    fn gate_up(&self, chunks: &[Chunk], inputs: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        Ok(self.products(chunks, inputs, |e| self.experts[e].0))
    }
    fn down(&self, chunks: &[Chunk], activations: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        Ok(self.products(chunks, activations, |e| self.experts[e].1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::with_contiguous_f32;
    use candle_core::{Device, Tensor};

    /// The router's softmax against candle's product and softmax (what the layer ran
    /// before), within 1e-6.
    #[test]
    fn router_probabilities_match_candle() {
        let dev = Device::Cpu;
        for (n, experts, hidden) in [(32usize, 4usize, 576usize), (5, 8, 100), (1, 64, 33)] {
            let xs = Tensor::randn(0f32, 1.0, (n, hidden), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.1, (experts, hidden), &dev).unwrap();
            let want = candle_nn::ops::softmax_last_dim(&xs.matmul(&w.t().unwrap()).unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let got = with_contiguous_f32(&xs, |x| {
                with_contiguous_f32(&w, |w| router_probabilities(x, w, hidden)).unwrap()
            })
            .unwrap();
            assert_eq!(got.len(), n);
            for (g, w) in got.iter().zip(&want) {
                for (a, b) in g.iter().zip(w) {
                    assert!((a - b).abs() <= 1e-6, "{n}x{experts}x{hidden}: {a} vs {b}");
                }
            }
        }
    }

    /// The candle expression the kernel replaces, on random weights and routes.
    #[test]
    fn matches_the_candle_expression() {
        let dev = Device::Cpu;
        let (hidden, inter, num_experts, top_k) = (24, 40, 5, 2);
        for n in [1usize, 7, 130, 300] {
            let xs = Tensor::randn(0f32, 1.0, (n, hidden), &dev).unwrap();
            // Weights that are exact halves, as the default model's are, so that the
            // packed experts take f16 panels (and AMX tiles where the CPU has them).
            let weight = |rows, cols| {
                Tensor::randn(0f32, 0.3, (rows, cols), &dev)
                    .and_then(|w| w.to_dtype(candle_core::DType::F16))
                    .and_then(|w| w.to_dtype(candle_core::DType::F32))
                    .unwrap()
            };
            let gate: Vec<Tensor> = (0..num_experts).map(|_| weight(inter, hidden)).collect();
            let up: Vec<Tensor> = (0..num_experts).map(|_| weight(inter, hidden)).collect();
            let down: Vec<Tensor> = (0..num_experts).map(|_| weight(hidden, inter)).collect();
            let choices: Vec<Vec<u32>> = (0..n)
                .map(|t| {
                    let a = (t * 7 + 3) % num_experts;
                    vec![a as u32, ((a + 1 + t % 3) % num_experts) as u32][..top_k].to_vec()
                })
                .collect();
            let weights: Vec<Vec<f32>> = (0..n).map(|t| vec![0.7 - 0.01 * (t % 5) as f32, 0.3]).collect();

            let mut want = xs.zeros_like().unwrap();
            for t in 0..n {
                let x = xs.narrow(0, t, 1).unwrap();
                for (&e, &w) in choices[t].iter().zip(&weights[t]) {
                    let e = e as usize;
                    let g = x.matmul(&gate[e].t().unwrap()).unwrap();
                    let u = x.matmul(&up[e].t().unwrap()).unwrap();
                    let y = (candle_nn::ops::silu(&g).unwrap() * u)
                        .unwrap()
                        .matmul(&down[e].t().unwrap())
                        .unwrap();
                    let y = (y * w as f64).unwrap();
                    let index = Tensor::new(&[t as u32], &dev).unwrap();
                    want = want.index_add(&index, &y, 0).unwrap();
                }
            }
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();

            let fused: Vec<Tensor> = (0..num_experts)
                .map(|e| Tensor::cat(&[&gate[e], &up[e]], 0).unwrap())
                .collect();
            let fused: Vec<Vec<f32>> = fused
                .iter()
                .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
                .collect();
            let down: Vec<Vec<f32>> = down
                .iter()
                .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
                .collect();
            let experts: Vec<ExpertWeights> = (0..num_experts)
                .map(|e| ExpertWeights {
                    gate_up: &fused[e],
                    down: &down[e],
                })
                .collect();
            let routes: Vec<(&[u32], &[f32])> = choices
                .iter()
                .zip(&weights)
                .map(|(c, w)| (&c[..], &w[..]))
                .collect();
            let got = with_contiguous_f32(&xs, |x| forward(x, hidden, inter, &experts, &routes))
                .unwrap()
                .unwrap();
            let worst = |got: &[f32]| {
                want.iter()
                    .zip(got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max)
            };
            let difference = worst(&got);
            assert!(difference < 1e-5, "n = {n}: max difference {difference}");

            if crate::kernels::packed::available() {
                let packed: Vec<(PackedWeight, PackedWeight)> = (0..num_experts)
                    .map(|e| {
                        (
                            PackedWeight::pack(&fused[e], 2 * inter, hidden),
                            PackedWeight::pack(&down[e], hidden, inter),
                        )
                    })
                    .collect();
                let refs: Vec<(&PackedWeight, &PackedWeight)> = packed.iter().map(|(a, b)| (a, b)).collect();
                let products = PackedExperts { experts: &refs };
                let got = with_contiguous_f32(&xs, |x| {
                    forward_with(&products, x, hidden, inter, num_experts, &routes)
                })
                .unwrap()
                .unwrap();
                let difference = worst(&got);
                assert!(
                    difference < 1e-5,
                    "n = {n}, packed experts: max difference {difference}"
                );
            }
        }
    }
}
