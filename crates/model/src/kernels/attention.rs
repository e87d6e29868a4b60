//! Scaled dot-product attention over a key/value cache on the CPU.
//!
//! One work item per (row, query head): for each of its queries, the scores against
//! every key the mask allows, a softmax, and the weighted sum of the values. Keys and
//! values are read in place from the cache buffers (any strides), so nothing is copied
//! per step; grouped-query heads read their kv head directly.

use rayon::prelude::*;

use super::simd;

/// A `[rows, heads, positions, head_dim]` f32 tensor's data with its strides (elements).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub data: &'a [f32],
    /// Offset of element `[0, 0, 0, 0]`.
    pub start: usize,
    /// Strides of the four dimensions; the last must be 1.
    pub stride: [usize; 4],
}

impl Strided<'_> {
    #[inline(always)]
    fn row(&self, b: usize, h: usize, p: usize, len: usize) -> &[f32] {
        let at = self.start + b * self.stride[0] + h * self.stride[1] + p * self.stride[2];
        &self.data[at..at + len]
    }
}

/// The shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub batch: usize,
    pub query_heads: usize,
    pub kv_heads: usize,
    /// Queries per row.
    pub queries: usize,
    /// Keys per row (past and new).
    pub keys: usize,
    pub head_dim: usize,
}

/// `softmax(q k^T * scale + mask) v` for `q: [b, heads, t, d]`, `k, v: [b, kv_heads, keys, d]`,
/// `mask: [b, 1, t, keys]` (additive, contiguous); returns `[b, t, heads * d]`.
pub(crate) fn forward(
    q: Strided,
    k: Strided,
    v: Strided,
    mask: &[f32],
    shape: Shape,
    scale: f32,
) -> Vec<f32> {
    let Shape {
        batch,
        query_heads,
        kv_heads,
        queries,
        head_dim: d,
        ..
    } = shape;
    let groups = query_heads / kv_heads;
    // Item (row, kv head) writes the [t, d] outputs of the query heads sharing that kv
    // head, which are adjacent in a [b, heads, t, d] buffer; each key and value row is
    // read once for all of them.
    let mut by_head = vec![0f32; batch * query_heads * queries * d];
    by_head
        .par_chunks_mut(groups * queries * d)
        .enumerate()
        .for_each(|(item, out)| {
            let (b, kvh) = (item / kv_heads, item % kv_heads);
            attend_group(q, k, v, mask, shape, scale, b, kvh, groups, out);
        });
    if queries == 1 {
        return by_head; // [b, heads, 1, d] is already [b, 1, heads * d]
    }
    let mut out = vec![0f32; by_head.len()];
    for b in 0..batch {
        for h in 0..query_heads {
            for i in 0..queries {
                let src = ((b * query_heads + h) * queries + i) * d;
                let dst = ((b * queries + i) * query_heads + h) * d;
                out[dst..dst + d].copy_from_slice(&by_head[src..src + d]);
            }
        }
    }
    out
}

simd::vectorized! {
    /// Row `b`, kv head `kvh` and its `groups` query heads: their `[t, d]` outputs, one
    /// head after the other, into `out`.
    #[allow(clippy::too_many_arguments)]
    fn attend_group(
        q: Strided,
        k: Strided,
        v: Strided,
        mask: &[f32],
        shape: Shape,
        scale: f32,
        b: usize,
        kvh: usize,
        groups: usize,
        out: &mut [f32],
    ) {
        let (queries, keys, d) = (shape.queries, shape.keys, shape.head_dim);
        let mut scores = vec![0f32; groups * keys];
        let mut inv = vec![0f32; groups];
        let blocks = d % 16 == 0 && super::matmul::available();
        for i in 0..queries {
            let mask_row = &mask[(b * queries + i) * keys..(b * queries + i + 1) * keys];
            if blocks {
                for g in 0..groups {
                    let query = q.row(b, kvh * groups + g, i, d);
                    let row = &mut scores[g * keys..(g + 1) * keys];
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: AVX-512F is checked; `d` is a multiple of 16.
                    unsafe {
                        avx512::scores(query, k, b, kvh, mask_row, scale, row)
                    };
                }
            } else {
                for (j, &m) in mask_row.iter().enumerate() {
                    if m == f32::NEG_INFINITY {
                        for g in 0..groups {
                            scores[g * keys + j] = f32::NEG_INFINITY;
                        }
                        continue;
                    }
                    let key = k.row(b, kvh, j, d);
                    for g in 0..groups {
                        let query = q.row(b, kvh * groups + g, i, d);
                        scores[g * keys + j] = simd::dot_inline(query, key) * scale + m;
                    }
                }
            }
            for g in 0..groups {
                let row = &mut scores[g * keys..(g + 1) * keys];
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                inv[g] = 1.0 / simd::exp_shifted_in_place(row, max);
            }
            let sums = WeightedSums { v, b, kvh, mask_row, scores: &scores, inv: &inv, keys };
            match (groups, d) {
                (1, 64) => sums.in_registers::<1, 64>(out, queries, i),
                (2, 64) => sums.in_registers::<2, 64>(out, queries, i),
                (3, 64) => sums.in_registers::<3, 64>(out, queries, i),
                (4, 64) => sums.in_registers::<4, 64>(out, queries, i),
                (1, 128) => sums.in_registers::<1, 128>(out, queries, i),
                (2, 128) => sums.in_registers::<2, 128>(out, queries, i),
                _ => sums.through_memory(groups, d, out, queries, i),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Strided;

    /// `scores[j] = query . key_j * scale + mask[j]` for every key of row `b`, kv head
    /// `kvh` (`NEG_INFINITY` where the mask is), sixteen keys at a time: each key's
    /// sixteen-lane partial sums, then one transposing tree of additions turns the
    /// sixteen vectors into one vector of sixteen scores (summing each key's lanes on its
    /// own is a chain of dependent additions per key, which bounded this loop).
    ///
    /// # Safety
    /// AVX-512F; `query.len()` (the head size) is a multiple of 16, and the keys' rows
    /// hold that many values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores(
        query: &[f32],
        k: Strided,
        b: usize,
        kvh: usize,
        mask: &[f32],
        scale: f32,
        scores: &mut [f32],
    ) {
        let d = query.len();
        let keys = mask.len();
        let scale = _mm512_set1_ps(scale);
        let masked = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut j0 = 0;
        while j0 < keys {
            let n = (keys - j0).min(16);
            let mut sums = [_mm512_setzero_ps(); 16];
            for (j, sum) in sums.iter_mut().enumerate().take(n) {
                let key = k.row(b, kvh, j0 + j, d).as_ptr();
                let mut acc = _mm512_setzero_ps();
                for c in (0..d).step_by(16) {
                    acc = _mm512_fmadd_ps(
                        _mm512_loadu_ps(query.as_ptr().add(c)),
                        _mm512_loadu_ps(key.add(c)),
                        acc,
                    );
                }
                *sum = acc;
            }
            let lanes: __mmask16 = if n == 16 {
                0xffff
            } else {
                ((1u32 << n) - 1) as __mmask16
            };
            let m = _mm512_maskz_loadu_ps(lanes, mask.as_ptr().add(j0));
            let s = _mm512_fmadd_ps(transposed_sums(&sums), scale, m);
            let s = _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(m, masked), masked);
            _mm512_mask_storeu_ps(scores.as_mut_ptr().add(j0), lanes, s);
            j0 += 16;
        }
    }

    /// Lane `j` of the result: the sum of `v[j]`'s sixteen lanes. (No closures here:
    /// they would not inherit AVX-512, and vectors passed to them would not arrive whole.)
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn transposed_sums(v: &[__m512; 16]) -> __m512 {
        // Per 128-bit lane, pairs of vectors: [x0 + x2, y0 + y2, x1 + x3, y1 + y3].
        let mut pairs = [_mm512_setzero_ps(); 8];
        for (i, pair) in pairs.iter_mut().enumerate() {
            let (x, y) = (v[2 * i], v[2 * i + 1]);
            *pair = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
        }
        // Per 128-bit lane, four vectors' sums over that lane.
        let mut quads = [_mm512_setzero_ps(); 4];
        for (i, quad) in quads.iter_mut().enumerate() {
            let (x, y) = (_mm512_castps_pd(pairs[2 * i]), _mm512_castps_pd(pairs[2 * i + 1]));
            *quad = _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
            );
        }
        // Then the four 128-bit lanes, added in two steps.
        let eights = [halves(quads[0], quads[1]), halves(quads[2], quads[3])];
        halves(eights[0], eights[1])
    }

    /// `[a0 + a1, a2 + a3, b0 + b1, b2 + b3]` over 128-bit lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn halves(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        )
    }
}

/// One query's softmax-weighted sums of the values, for the query heads of one kv head:
/// `out[g] = sum_j scores[g][j] * inv[g] * value_j` over the keys the mask allows.
struct WeightedSums<'a> {
    v: Strided<'a>,
    b: usize,
    kvh: usize,
    mask_row: &'a [f32],
    /// `[groups, keys]` exponentiated scores.
    scores: &'a [f32],
    /// Per query head, one over its scores' sum.
    inv: &'a [f32],
    keys: usize,
}

impl WeightedSums<'_> {
    /// `G` heads of size `D` whose `G x D` sums fit in vector registers: they stay there
    /// over all keys (summing into `out` stores and reloads every sum once per key; in
    /// registers a 32-row decoding call over 192 keys takes 0.31 ms instead of 0.52).
    /// Inlined into the vectorised caller.
    #[inline(always)]
    fn in_registers<const G: usize, const D: usize>(&self, out: &mut [f32], queries: usize, i: usize) {
        let mut acc = [[0f32; D]; G];
        for j in 0..self.keys {
            if self.mask_row[j] == f32::NEG_INFINITY {
                continue;
            }
            let value = &self.v.row(self.b, self.kvh, j, D)[..D];
            for (g, sums) in acc.iter_mut().enumerate() {
                let p = self.scores[g * self.keys + j] * self.inv[g];
                for (s, &x) in sums.iter_mut().zip(value) {
                    *s = p.mul_add(x, *s);
                }
            }
        }
        for (g, sums) in acc.iter().enumerate() {
            out[(g * queries + i) * D..(g * queries + i + 1) * D].copy_from_slice(sums);
        }
    }

    /// Any head count and size: the sums accumulate in `out` (zero on entry).
    #[inline(always)]
    fn through_memory(&self, groups: usize, d: usize, out: &mut [f32], queries: usize, i: usize) {
        for j in 0..self.keys {
            if self.mask_row[j] == f32::NEG_INFINITY {
                continue;
            }
            let value = self.v.row(self.b, self.kvh, j, d);
            for g in 0..groups {
                let p = self.scores[g * self.keys + j];
                if p != 0.0 {
                    let dst = &mut out[(g * queries + i) * d..(g * queries + i + 1) * d];
                    simd::axpy_inline(dst, p * self.inv[g], value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::with_f32;
    use candle_core::{DType, Device, Tensor};

    fn strided(t: &Tensor) -> (Vec<f32>, usize, [usize; 4]) {
        with_f32(t, |data, layout| {
            let s = layout.stride();
            (data.to_vec(), layout.start_offset(), [s[0], s[1], s[2], s[3]])
        })
        .unwrap()
    }

    /// Against candle's matmul/softmax expression, with a strided (narrowed) cache,
    /// grouped heads and a padding mask; head sizes and group counts that take the
    /// register path (64 wide with 1-4 heads a group, 128 wide with 1-2) and the general one.
    #[test]
    fn matches_the_candle_expression() {
        let dev = Device::Cpu;
        let (b, cap) = (3, 40);
        let shapes = [
            (6, 2, 16),
            (9, 3, 64),
            (8, 2, 64),
            (4, 4, 64),
            (4, 2, 128),
            (8, 2, 128),
        ];
        for (nq, nkv, d) in shapes {
            for (t, keys) in [(1usize, 9usize), (5, 12), (1, 40)] {
                let q = Tensor::randn(0f32, 1.0, (b, nq, t, d), &dev).unwrap();
                let kbuf = Tensor::randn(0f32, 1.0, (b, nkv, cap, d), &dev).unwrap();
                let vbuf = Tensor::randn(0f32, 1.0, (b, nkv, cap, d), &dev).unwrap();
                let (k, v) = (kbuf.narrow(2, 0, keys).unwrap(), vbuf.narrow(2, 0, keys).unwrap());
                // Row 1 has two padding keys at the front; causal for the new queries.
                let mut mask = vec![0f32; b * t * keys];
                for row in 0..b {
                    for i in 0..t {
                        for j in 0..keys {
                            let causal = j <= keys - t + i;
                            let pad = row == 1 && j < 2;
                            if !causal || pad {
                                mask[(row * t + i) * keys + j] = f32::NEG_INFINITY;
                            }
                        }
                    }
                }
                let mask_t = Tensor::from_vec(mask.clone(), (b, 1, t, keys), &dev).unwrap();
                let scale = 0.25f32;
                let groups = nq / nkv;
                let qg = q.reshape((b, nkv, groups * t, d)).unwrap();
                let scores = (qg.matmul(&k.t().unwrap()).unwrap() * scale as f64)
                    .unwrap()
                    .reshape((b, nq, t, keys))
                    .unwrap()
                    .broadcast_add(&mask_t)
                    .unwrap();
                let probs = candle_nn::ops::softmax_last_dim(&scores)
                    .unwrap()
                    .reshape((b, nkv, groups * t, keys))
                    .unwrap();
                let want = probs
                    .matmul(&v.contiguous().unwrap())
                    .unwrap()
                    .reshape((b, nq, t, d))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .reshape((b, t, nq * d))
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let (qd, qs, qst) = strided(&q);
                let (kd, ks, kst) = strided(&k);
                let (vd, vs, vst) = strided(&v);
                let got = forward(
                    Strided {
                        data: &qd,
                        start: qs,
                        stride: qst,
                    },
                    Strided {
                        data: &kd,
                        start: ks,
                        stride: kst,
                    },
                    Strided {
                        data: &vd,
                        start: vs,
                        stride: vst,
                    },
                    &mask,
                    Shape {
                        batch: b,
                        query_heads: nq,
                        kv_heads: nkv,
                        queries: t,
                        keys,
                        head_dim: d,
                    },
                    scale,
                );
                let worst = want
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 1e-5,
                    "heads {nq}/{nkv} of {d}, t = {t}, keys = {keys}: max difference {worst}"
                );
            }
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use candle_core::{Device, Tensor};

    /// This kernel against candle-nn 0.11's CPU flash attention (`flash_attn`, which packs
    /// a batch into its varlen kernel; causal, no padding) at the round's shapes, each
    /// from its own cache layout (ours reads `[b, kv_heads, len, d]` in place, candle-nn's
    /// takes `[b, len, kv_heads, d]`): `cargo test --release -p latentevo-model --lib
    /// kernels::attention::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn kernel_against_candle_flash_attention() {
        use std::time::Instant;
        let dev = Device::Cpu;
        let (nq, nkv, d) = (9usize, 3usize, 64usize);
        for (b, t, keys) in [(32usize, 1usize, 96usize), (32, 1, 192), (17, 64, 64)] {
            let q = Tensor::randn(0f32, 1.0, (b, nq, t, d), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (b, nkv, keys, d), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, nkv, keys, d), &dev).unwrap();
            let mut mask = vec![0f32; b * t * keys];
            for row in 0..b {
                for i in 0..t {
                    for j in 0..keys {
                        if j > keys - t + i {
                            mask[(row * t + i) * keys + j] = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            let reps = 50;
            // Seconds per call, best of five batches: the guest's timings wander between
            // batches.
            let best_of_five = |run: &dyn Fn()| {
                run();
                (0..5)
                    .map(|_| {
                        let start = Instant::now();
                        for _ in 0..reps {
                            run();
                        }
                        start.elapsed().as_secs_f64() / reps as f64
                    })
                    .fold(f64::INFINITY, f64::min)
            };
            let ours = {
                let (qd, kd, vd) = (
                    q.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                let strides = |heads: usize, len: usize| [heads * len * d, len * d, d];
                let (qs, ks) = (strides(nq, t), strides(nkv, keys));
                let shape = Shape {
                    batch: b,
                    query_heads: nq,
                    kv_heads: nkv,
                    queries: t,
                    keys,
                    head_dim: d,
                };
                let run = || {
                    forward(
                        Strided {
                            data: &qd,
                            start: 0,
                            stride: [qs[0], qs[1], qs[2], 1],
                        },
                        Strided {
                            data: &kd,
                            start: 0,
                            stride: [ks[0], ks[1], ks[2], 1],
                        },
                        Strided {
                            data: &vd,
                            start: 0,
                            stride: [ks[0], ks[1], ks[2], 1],
                        },
                        &mask,
                        shape,
                        0.125,
                    )
                };
                best_of_five(&|| {
                    std::hint::black_box(run());
                })
            };
            let theirs = {
                let (qt, kt, vt) = (
                    q.transpose(1, 2).unwrap().contiguous().unwrap(),
                    k.transpose(1, 2).unwrap().contiguous().unwrap(),
                    v.transpose(1, 2).unwrap().contiguous().unwrap(),
                );
                let run = || {
                    candle_nn::attention::flash_attn::<f32>(
                        &qt,
                        &kt,
                        &vt,
                        0.125,
                        candle_nn::attention::AttnMask::causal_with_offset(keys - t),
                        None,
                        None,
                    )
                    .unwrap()
                };
                best_of_five(&|| {
                    std::hint::black_box(run());
                })
            };
            println!(
                "b {b:>2}, queries {t:>2}, keys {keys:>3}: ours {:.3} ms, candle-nn flash_attn {:.3} ms (x{:.2})",
                ours * 1e3,
                theirs * 1e3,
                theirs / ours
            );
        }
    }
}
