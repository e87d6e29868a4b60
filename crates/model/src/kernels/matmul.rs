//! `y = x @ w^T` for row-major `x: [m, k]` and `w: [n, k]` (a weight in the checkpoint's
//! own layout), with few rows `m`.
//!
//! General GEMM libraries pack both operands into blocks before multiplying; with a
//! handful of rows (a decoding step, one expert's tokens) packing the weight costs about
//! as much as the product, and the `gemm` crate reaches a third to a half of the CPU's
//! peak there (`examples`: 16 x 3072 x 576 at ~64 GFLOP/s on one Zen 5 core). This
//! kernel streams the weight once, unpacked: for each block of [`NR`] weight rows it runs
//! every block of [`MR`] input rows (which stay in cache), keeping `MR x NR` vector
//! accumulators in registers over `k`, then reduces them. It needs AVX-512; elsewhere,
//! and for many rows, the `gemm` crate does the product.

use super::SendPtr;

/// Input rows per register block.
pub(crate) const MR: usize = 4;
/// Weight rows per register block.
pub(crate) const NR: usize = 4;

/// Row counts up to which the streaming kernel is used (above, the `gemm` crate's
/// packed product is quicker; measured by `benches/kernels.rs`).
pub(crate) const MAX_ROWS: usize = 160;

/// Whether the streaming kernel runs on this CPU.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX512.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst[r * dst_stride + j] = sum_kk x[r * k + kk] * w[j * k + kk]` for `r < m`, `j < n`,
/// single-threaded. `dst_stride >= n` lets a caller fill a column block of a wider matrix.
/// The outputs are written without being read, so `dst` may start unwritten
/// ([`super::Outputs`]).
pub(crate) fn matmul_nt(
    dst: &mut [f32],
    dst_stride: usize,
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
) {
    assert!(
        x.len() >= m * k && w.len() >= n * k,
        "operands too short for {m}x{n}x{k}"
    );
    assert!(
        m == 0 || n == 0 || dst.len() >= (m - 1) * dst_stride + n,
        "destination too short"
    );
    assert!(
        dst_stride >= n,
        "destination stride {dst_stride} below its {n} columns"
    );
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if m <= MAX_ROWS && available() {
        // SAFETY: the CPU has AVX-512F (checked); the asserts above bound every access.
        unsafe { avx512::matmul_nt(dst, dst_stride, x, w, m, n, k) };
        return;
    }
    // SAFETY: the asserts above bound every element the strides below address.
    unsafe { packed_matmul_nt(dst, dst_stride, x, w, m, n, k) };
}

/// The `gemm` crate's packed, single-threaded product with [`matmul_nt`]'s layout: the
/// fallback for many rows or a CPU without AVX-512, and the benchmark's reference.
///
/// # Safety
/// `x` holds `m * k`, `w` `n * k` and `dst` `(m - 1) * dst_stride + n` elements.
unsafe fn packed_matmul_nt(
    dst: &mut [f32],
    dst_stride: usize,
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
) {
    // SAFETY: the caller bounds the operands (above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// [`matmul_nt`] as one product for the whole machine: the output is cut into blocks of
/// at most [`ROW_CHUNK`] rows and a few hundred columns, spread over rayon's threads.
pub(crate) fn matmul_nt_parallel(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut dst = vec![0f32; m * n];
    let threads = rayon::current_num_threads().max(1);
    let row_chunks = m.div_ceil(ROW_CHUNK).max(1);
    // Column blocks: with the row chunks, several items per thread for balance, at
    // least 64 weight rows each.
    let col_blocks = (threads * 4).div_ceil(row_chunks).max(1);
    let block = n.div_ceil(col_blocks).max(64).next_multiple_of(NR);
    let rows = m.div_ceil(row_chunks);
    let items: Vec<(usize, usize)> = (0..row_chunks)
        .flat_map(|r| (0..n.div_ceil(block)).map(move |c| (r * rows, c * block)))
        .collect();
    if threads == 1 || items.len() == 1 {
        for &(r0, j0) in &items {
            let (mr, cols) = (rows.min(m - r0), block.min(n - j0));
            matmul_nt(
                &mut dst[r0 * n + j0..],
                n,
                &x[r0 * k..],
                &w[j0 * k..(j0 + cols) * k],
                mr,
                cols,
                k,
            );
        }
        return dst;
    }
    let out = SendPtr(dst.as_mut_ptr());
    let len = dst.len();
    items.par_iter().for_each(|&(r0, j0)| {
        let (mr, cols) = (rows.min(m - r0), block.min(n - j0));
        let at = r0 * n + j0;
        // SAFETY: items write disjoint blocks (rows r0..r0 + mr, columns j0..j0 + cols)
        // of `dst`, which outlives the parallel loop; the slice starts at the block's
        // first element and `matmul_nt` writes only inside the block.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(at), len - at) };
        matmul_nt(dst, n, &x[r0 * k..], &w[j0 * k..(j0 + cols) * k], mr, cols, k);
    });
    dst
}

/// Rows per block of [`matmul_nt_parallel`]: the block's inputs stay in the core's cache
/// while the weight streams past.
pub(crate) const ROW_CHUNK: usize = 64;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// How many weight blocks ahead the prefetch runs.
    const PREFETCH_BLOCKS: usize = 2;

    /// See [`super::matmul_nt`]; the caller checks AVX-512F and the bounds.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn matmul_nt(
        dst: &mut [f32],
        dst_stride: usize,
        x: &[f32],
        w: &[f32],
        m: usize,
        n: usize,
        k: usize,
    ) {
        let full_n = n / NR * NR;
        let full_m = m / MR * MR;
        // The weight streams from memory once per call: while a block of weight rows runs
        // against every input block, the block PREFETCH_BLOCKS ahead is fetched into L2,
        // a line or a few per step of `k`, spread over the input blocks. Fetching the
        // whole block at once into L1 (as this kernel did) overflows the queue of
        // outstanding misses and lets the inputs evict the lines before they are used
        // when 16 input rows (36 KiB at k = 576) exceed a 32 KiB L1. On a Zen 4 guest
        // (`cold_timing`, one thread) the 16 x 3072 x 576 product from memory went from
        // 44 to 62-78 GFLOP/s, 8 rows from 25 to 55-61; the round's decoding from
        // 4.6-4.8 s to 4.0-4.4 s (interleaved runs).
        let input_blocks = full_m / MR + (m - full_m);
        let steps = k.div_ceil(16);
        let lines = (NR * k * 4).div_ceil(64);
        let per_step = lines.div_ceil(input_blocks * steps).max(1);
        let per_block = per_step * steps;
        let mut j = 0;
        while j < full_n {
            let ahead = if j + (PREFETCH_BLOCKS + 1) * NR <= n {
                Some(w.as_ptr().add((j + PREFETCH_BLOCKS * NR) * k) as *const i8)
            } else {
                None
            };
            let fetch = |b: usize| match ahead {
                Some(p) if b * per_block < lines => Prefetch {
                    next: p.wrapping_add(b * per_block * 64),
                    lines: per_block.min(lines - b * per_block),
                    per_step,
                },
                _ => Prefetch::NONE,
            };
            let mut r = 0;
            let mut b = 0;
            while r < full_m {
                block::<MR, NR>(dst, dst_stride, (x, w), (r, j), k, fetch(b));
                r += MR;
                b += 1;
            }
            while r < m {
                block::<1, NR>(dst, dst_stride, (x, w), (r, j), k, fetch(b));
                r += 1;
                b += 1;
            }
            j += NR;
        }
        while j < n {
            let mut r = 0;
            while r < full_m {
                block::<MR, 1>(dst, dst_stride, (x, w), (r, j), k, Prefetch::NONE);
                r += MR;
            }
            while r < m {
                block::<1, 1>(dst, dst_stride, (x, w), (r, j), k, Prefetch::NONE);
                r += 1;
            }
            j += 1;
        }
    }

    /// Cache lines to fetch into L2 during one [`block`] call: `lines` lines from
    /// `next`, `per_step` per step of `k`.
    #[derive(Clone, Copy)]
    struct Prefetch {
        next: *const i8,
        lines: usize,
        per_step: usize,
    }

    impl Prefetch {
        const NONE: Prefetch = Prefetch {
            next: std::ptr::null(),
            lines: 0,
            per_step: 0,
        };

        /// Issues the fetches of step `step` of `k`.
        #[inline(always)]
        unsafe fn step(&self, step: usize) {
            let first = step * self.per_step;
            let mut line = first;
            while line < (first + self.per_step).min(self.lines) {
                // The last line may run past the weight's end: a prefetch never faults.
                _mm_prefetch::<_MM_HINT_T1>(self.next.wrapping_add(line * 64));
                line += 1;
            }
        }
    }

    /// Rows `r..r + R` of `x` against weight rows `j..j + C`, `R x C` accumulators,
    /// issuing `prefetch`'s fetches on the way.
    #[inline(always)]
    unsafe fn block<const R: usize, const C: usize>(
        dst: &mut [f32],
        dst_stride: usize,
        (x, w): (&[f32], &[f32]),
        (r, j): (usize, usize),
        k: usize,
        prefetch: Prefetch,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let xp: [*const f32; R] = std::array::from_fn(|a| x.as_ptr().add((r + a) * k));
        let wp: [*const f32; C] = std::array::from_fn(|b| w.as_ptr().add((j + b) * k));
        let full = k / 16 * 16;
        let mut kk = 0;
        while kk < full {
            prefetch.step(kk / 16);
            let wv: [__m512; C] = std::array::from_fn(|b| _mm512_loadu_ps(wp[b].add(kk)));
            for a in 0..R {
                let xv = _mm512_loadu_ps(xp[a].add(kk));
                for b in 0..C {
                    acc[a][b] = _mm512_fmadd_ps(xv, wv[b], acc[a][b]);
                }
            }
            kk += 16;
        }
        if kk < k {
            prefetch.step(kk / 16);
            let mask: __mmask16 = (1u32 << (k - kk)).wrapping_sub(1) as __mmask16;
            let wv: [__m512; C] = std::array::from_fn(|b| _mm512_maskz_loadu_ps(mask, wp[b].add(kk)));
            for a in 0..R {
                let xv = _mm512_maskz_loadu_ps(mask, xp[a].add(kk));
                for b in 0..C {
                    acc[a][b] = _mm512_fmadd_ps(xv, wv[b], acc[a][b]);
                }
            }
        }
        for (a, row) in acc.iter().enumerate() {
            let out = dst.as_mut_ptr().add((r + a) * dst_stride + j);
            if C == 4 {
                // Four sums at once: halve each accumulator to 256 bits, then pairwise
                // horizontal adds leave column b's sum in lane b of each 128-bit half.
                let half = |v: __m512| {
                    _mm256_add_ps(
                        _mm512_castps512_ps256(v),
                        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
                    )
                };
                let h01 = _mm256_hadd_ps(half(row[0]), half(row[1]));
                let h23 = _mm256_hadd_ps(half(row[2]), half(row[3]));
                let h = _mm256_hadd_ps(h01, h23);
                let sums = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
                _mm_storeu_ps(out, sums);
            } else {
                for (b, &v) in row.iter().enumerate() {
                    *out.add(b) = _mm512_reduce_add_ps(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                y[r * n + j] = (0..k)
                    .map(|kk| x[r * k + kk] as f64 * w[j * k + kk] as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    #[test]
    fn matches_a_plain_product_on_every_tail() {
        for (m, n, k) in [
            (1, 1, 1),
            (3, 5, 17),
            (4, 4, 16),
            (9, 13, 40),
            (5, 70, 100),
            (200, 7, 33),
            (300, 130, 20),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let want = reference(&x, &w, m, n, k);
            let mut got = vec![f32::NAN; m * n];
            matmul_nt(&mut got, n, &x, &w, m, n, k);
            let par = matmul_nt_parallel(&x, &w, m, n, k);
            for (i, ((a, b), c)) in want.iter().zip(&got).zip(&par).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                    "{m}x{n}x{k} [{i}]: {a} vs {b}"
                );
                assert!(
                    (a - c).abs() <= 1e-4 * a.abs().max(1.0),
                    "{m}x{n}x{k} [{i}] in blocks: {a} vs {c}"
                );
            }
        }
    }

    #[test]
    fn writes_a_column_block_of_a_wider_matrix() {
        let (m, n, k, stride) = (3, 4, 8, 10);
        let x = vec![1f32; m * k];
        let w = vec![0.5f32; n * k];
        let mut dst = vec![-1f32; (m - 1) * stride + n + 2];
        matmul_nt(&mut dst, stride, &x, &w, m, n, k);
        for r in 0..m {
            assert_eq!(&dst[r * stride..r * stride + n], &[4.0; 4]);
            if r + 1 < m {
                assert_eq!(dst[r * stride + n], -1.0, "column {n} of row {r} untouched");
            }
        }
    }
}

#[cfg(test)]
mod timing {
    /// Prints GFLOP/s of the streaming kernel and of the `gemm` crate at the search's
    /// shapes: `cargo test --release -p latentevo-model --lib kernels::matmul::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn streaming_kernel_against_gemm() {
        use std::time::Instant;
        for (m, n, k) in [
            (8usize, 3072usize, 576usize),
            (16, 3072, 576),
            (32, 3072, 576),
            (64, 3072, 576),
            (96, 3072, 576),
            (160, 3072, 576),
            (16, 576, 1536),
            (96, 576, 1536),
            (32, 49152, 576),
            (32, 960, 576),
            (32, 576, 576),
            (1088, 960, 576),
            (1088, 576, 576),
        ] {
            let x = vec![0.5f32; m * k];
            let w = vec![0.25f32; n * k];
            let mut y = vec![0f32; m * n];
            let flops = 2.0 * (m * n * k) as f64;
            let reps = ((4e9 / flops) as usize).max(5);
            let time = |f: &mut dyn FnMut()| {
                f();
                let t = Instant::now();
                for _ in 0..reps {
                    f();
                }
                flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9
            };
            let ours = time(&mut || super::matmul_nt(&mut y, n, &x, &w, m, n, k));
            // SAFETY: the buffers are exactly m x k, n x k and m x n.
            let gemm = time(&mut || unsafe { super::packed_matmul_nt(&mut y, n, &x, &w, m, n, k) });
            let par = time(&mut || {
                std::hint::black_box(super::matmul_nt_parallel(&x, &w, m, n, k));
            });
            println!("{m:>4}x{n:>5}x{k:>4}: streaming {ours:6.1}  gemm {gemm:6.1}  streaming, threads {par:6.1} GFLOP/s");
        }
    }
}

#[cfg(test)]
mod cold_timing {
    /// The streaming kernel with the weight coming from memory (40 distinct weights of
    /// one expert's `[gate; up]` or `down` shape, 280 MB, cycled), as in a decoding step,
    /// best of three passes:
    /// `cargo test --release -p latentevo-model --lib kernels::matmul::cold_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn streaming_kernel_from_memory() {
        use std::time::Instant;
        for (n, k) in [(3072usize, 576usize), (576, 1536)] {
            let weights: Vec<Vec<f32>> = (0..40).map(|i| vec![0.25f32 + i as f32; n * k]).collect();
            for m in [8usize, 16, 32, 64] {
                let x = vec![0.5f32; m * k];
                let mut y = vec![0f32; m * n];
                let best = |f: &mut dyn FnMut(usize)| {
                    (0..3)
                        .map(|_| {
                            let t = Instant::now();
                            for rep in 0..200 {
                                f(rep);
                            }
                            t.elapsed().as_secs_f64()
                        })
                        .fold(f64::INFINITY, f64::min)
                };
                let s = best(&mut |rep| super::matmul_nt(&mut y, n, &x, &weights[rep % 40], m, n, k));
                let s2 = best(&mut |rep| {
                    std::hint::black_box(super::matmul_nt_parallel(&x, &weights[rep % 40], m, n, k));
                });
                let bytes = 200.0 * (n * k * 4) as f64;
                let flops = 200.0 * 2.0 * (m * n * k) as f64;
                println!(
                    "{m:>3}x{n:>5}x{k:>4}: one thread {:.1} GFLOP/s {:.1} GB/s; parallel {:.1} GFLOP/s {:.1} GB/s",
                    flops / s / 1e9,
                    bytes / s / 1e9,
                    flops / s2 / 1e9,
                    bytes / s2 / 1e9
                );
            }
        }
    }
}
