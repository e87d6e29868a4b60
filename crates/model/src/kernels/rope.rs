//! The fused q/k/v product's output split into heads and rotated, in one pass.
//!
//! The candle path takes each of q, k and v out of the fused row (`narrow` + copy), moves
//! its heads in front of the tokens (`transpose` + copy) and rotates q and k
//! (`rotary_emb::rope`, a third copy): eight passes over the activations per layer.
//! [`split_heads_rotated`] reads the fused rows once and writes the three tensors in
//! their final `[batch, heads, tokens, head_dim]` layout, with the same arithmetic as
//! candle-nn's `rope` (non-interleaved halves), so the results are the same bits.

/// The shape of one call: `batch` rows of `tokens` tokens, head counts and width.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub batch: usize,
    pub tokens: usize,
    pub query_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// `qkv: [batch * tokens, (query_heads + 2 * kv_heads) * head_dim]` (q, then k, then v in
/// each row) and the RoPE tables `cos`, `sin: [batch * tokens, head_dim / 2]` to
/// `(q, k, v)`, each `[batch, heads, tokens, head_dim]` row-major, q and k rotated.
pub(crate) fn split_heads_rotated(
    qkv: &[f32],
    cos: &[f32],
    sin: &[f32],
    shape: Heads,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Heads {
        batch,
        tokens,
        query_heads,
        kv_heads,
        head_dim: d,
    } = shape;
    let half = d / 2;
    let width = (query_heads + 2 * kv_heads) * d;
    assert_eq!(d % 2, 0, "rotary heads need an even width, got {d}");
    assert_eq!(qkv.len(), batch * tokens * width, "fused q/k/v rows");
    assert_eq!(cos.len(), batch * tokens * half, "cos table");
    assert_eq!(sin.len(), batch * tokens * half, "sin table");
    let mut q = vec![0f32; batch * query_heads * tokens * d];
    let mut k = vec![0f32; batch * kv_heads * tokens * d];
    let mut v = vec![0f32; batch * kv_heads * tokens * d];
    for b in 0..batch {
        for t in 0..tokens {
            let row = b * tokens + t;
            let src = &qkv[row * width..(row + 1) * width];
            let (c, s) = (
                &cos[row * half..(row + 1) * half],
                &sin[row * half..(row + 1) * half],
            );
            // Destination offset of head `h` of `heads` for this token.
            let at = |h: usize, heads: usize| ((b * heads + h) * tokens + t) * d;
            for h in 0..query_heads {
                rotate(&src[h * d..(h + 1) * d], c, s, &mut q[at(h, query_heads)..][..d]);
            }
            for h in 0..kv_heads {
                let kh = (query_heads + h) * d;
                rotate(&src[kh..kh + d], c, s, &mut k[at(h, kv_heads)..][..d]);
                let vh = (query_heads + kv_heads + h) * d;
                v[at(h, kv_heads)..][..d].copy_from_slice(&src[vh..vh + d]);
            }
        }
    }
    (q, k, v)
}

/// One head rotated: `dst[i] = x1 cos - x2 sin`, `dst[i + d/2] = x1 sin + x2 cos` with
/// `x1 = x[i]`, `x2 = x[i + d/2]`, as candle-nn's `rope` computes it.
#[inline]
fn rotate(x: &[f32], cos: &[f32], sin: &[f32], dst: &mut [f32]) {
    let half = cos.len();
    let (x1, x2) = x.split_at(half);
    let (d1, d2) = dst.split_at_mut(half);
    for i in 0..half {
        d1[i] = x1[i] * cos[i] - x2[i] * sin[i];
        d2[i] = x1[i] * sin[i] + x2[i] * cos[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_narrow_transpose_and_candle_rope_bit_for_bit() {
        let dev = Device::Cpu;
        for (b, t, nq, nkv, d) in [
            (1, 1, 2, 1, 4),
            (3, 5, 9, 3, 64),
            (2, 1, 4, 4, 16),
            (2, 7, 6, 2, 32),
        ] {
            let width = (nq + 2 * nkv) * d;
            let qkv: Vec<f32> = (0..b * t * width)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let angles: Vec<f32> = (0..b * t * d / 2)
                .map(|i| (i % 13) as f32 * 0.37 + (i / 7) as f32)
                .collect();
            let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
            let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
            let shape = Heads {
                batch: b,
                tokens: t,
                query_heads: nq,
                kv_heads: nkv,
                head_dim: d,
            };
            let (q, k, v) = split_heads_rotated(&qkv, &cos, &sin, shape);

            let fused = Tensor::from_vec(qkv, (b, t, width), &dev).unwrap();
            let ct = Tensor::from_vec(cos, (b, t, d / 2), &dev).unwrap();
            let st = Tensor::from_vec(sin, (b, t, d / 2), &dev).unwrap();
            let heads = |start: usize, n: usize| {
                fused
                    .narrow(2, start * d, n * d)
                    .unwrap()
                    .reshape((b, t, n, d))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let flat = |x: Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want_q = candle_nn::rotary_emb::rope(&heads(0, nq), &ct, &st).unwrap();
            let want_k = candle_nn::rotary_emb::rope(&heads(nq, nkv), &ct, &st).unwrap();
            let want_v = heads(nq + nkv, nkv);
            assert_eq!(q, flat(want_q), "q of {b}x{t}, {nq}/{nkv} heads of {d}");
            assert_eq!(k, flat(want_k), "k of {b}x{t}, {nq}/{nkv} heads of {d}");
            assert_eq!(v, flat(want_v), "v of {b}x{t}, {nq}/{nkv} heads of {d}");
        }
    }
}
