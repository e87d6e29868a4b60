//! `y = x @ w^T` against a weight packed once into column panels.
//!
//! [`super::matmul`] streams the weight in the checkpoint's `[n, k]` layout and keeps
//! `4 x 4` dot products in registers, reducing them across lanes at the end. That suits a
//! handful of rows on cores with few load ports, but with more rows the inputs fall out of
//! L1 (16 rows of 576 f32 fill 36 KiB) and every step of `k` reloads four of them: on an
//! Intel Xeon guest it reached 94 GFLOP/s on one core and 116 on two at the prompt pass's
//! shape, against 332 on two for oneMKL. Here the weight is rearranged once, when a layer
//! is first used, into panels of [`PANEL`] output columns stored `k`-major, and the
//! register block is the usual GEMM outer product: per step of `k`, three vector loads of the panel, one
//! broadcast per input row, `ROWS x 3` fused multiply-adds into accumulators that hold
//! finished outputs (no reduction across lanes). A panel runs in slices of 256 steps of
//! `k`, each slice (24 KiB in f16) held in L1 while every block of rows runs against it.
//!
//! **Storage.** A weight whose every f32 value is exactly an IEEE half (checkpoints stored
//! in f16 and widened on load, as the default model is) is packed as f16 and widened back in
//! registers (`vcvtph2ps`): the same f32 values, the same f32 arithmetic, half the bytes
//! to stream from memory at each decoding step. Else, a weight whose every value is exactly
//! a bfloat16 (checkpoints stored in bf16, as most trained MoEs are) is packed as bf16 and
//! widened by a shift, with the same guarantee. Any other weight is packed as f32.
//!
//! **Tiles.** On a CPU with AMX, f16 and bf16 panels multiply on the tile unit instead
//! ([`super::amx`]) when a call has at least [`super::amx::MIN_ROWS`] rows.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use super::Outputs;

/// Output columns per panel: three 16-lane vectors.
pub(crate) const PANEL: usize = 48;

/// The panels' element type.
#[derive(Clone)]
enum Panels {
    /// Values that are neither all exact halves nor all exact bfloat16s.
    F32(Vec<f32>),
    /// Every value an exact half (a lossless narrowing).
    F16(Vec<f16>),
    /// Every value an exact bfloat16 (a lossless narrowing).
    Bf16(Vec<bf16>),
}

/// How a [`PackedWeight`] stores its values; each is lossless for the weight it is chosen
/// for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storage {
    /// f32.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

/// A weight `w: [n, k]` rearranged for [`PackedWeight::matmul`]: panel `p` holds columns
/// `p * PANEL ..` of the output (rows of `w`), element `(kk, c)` at `kk * PANEL + c`; the
/// last panel is padded with zeros.
#[derive(Clone)]
pub(crate) struct PackedWeight {
    n: usize,
    k: usize,
    panels: Panels,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeight")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("storage", &self.storage())
            .finish()
    }
}

/// Whether the packed product runs: the CPU has AVX-512F and `LATENTEVO_PACKED=0` (which
/// keeps the streaming kernel, for comparisons) is not set.
pub(crate) fn available() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    super::matmul::available()
        && *ENABLED.get_or_init(|| std::env::var("LATENTEVO_PACKED").map_or(true, |v| v != "0"))
}

impl PackedWeight {
    /// Packs the row-major weight `w: [n, k]`, in f16 or else bf16 when that loses nothing.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight of {} values is not {n} x {k}", w.len());
        let exact = |narrow: fn(f32) -> f32| {
            w.par_chunks(1 << 16)
                .all(|c| c.iter().all(|&v| narrow(v).to_bits() == v.to_bits()))
        };
        let storage = if exact(|v| f16::from_f32(v).to_f32()) {
            Storage::F16
        } else if exact(|v| bf16::from_f32(v).to_f32()) {
            Storage::Bf16
        } else {
            Storage::F32
        };
        let count = n.div_ceil(PANEL);
        let panel_len = k * PANEL;
        let transposed = |p: usize, out: &mut [f32]| {
            for c in 0..PANEL.min(n - p * PANEL) {
                let row = &w[(p * PANEL + c) * k..(p * PANEL + c + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    out[kk * PANEL + c] = v;
                }
            }
        };
        // Each panel transposed in f32, then narrowed (exactly, as checked above).
        fn narrowed<T: Copy + Send + Sync>(
            zero: T,
            len: usize,
            panel_len: usize,
            transposed: impl Fn(usize, &mut [f32]) + Sync,
        ) -> Vec<T>
        where
            [T]: HalfFloatSliceExt,
        {
            let mut data = vec![zero; len];
            data.par_chunks_mut(panel_len).enumerate().for_each(|(p, dst)| {
                let mut buf = vec![0f32; panel_len];
                transposed(p, &mut buf);
                dst.convert_from_f32_slice(&buf);
            });
            data
        }
        let panels = match storage {
            Storage::F16 => Panels::F16(narrowed(f16::ZERO, count * panel_len, panel_len, transposed)),
            Storage::Bf16 => Panels::Bf16(narrowed(bf16::ZERO, count * panel_len, panel_len, transposed)),
            Storage::F32 => {
                let mut data = vec![0f32; count * panel_len];
                data.par_chunks_mut(panel_len)
                    .enumerate()
                    .for_each(|(p, dst)| transposed(p, dst));
                Panels::F32(data)
            }
        };
        PackedWeight { n, k, panels }
    }

    /// Output columns (rows of the weight).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of panels.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }

    /// How the panels store the weight's values.
    pub fn storage(&self) -> Storage {
        match self.panels {
            Panels::F32(_) => Storage::F32,
            Panels::F16(_) => Storage::F16,
            Panels::Bf16(_) => Storage::Bf16,
        }
    }

    /// `dst[r * dst_stride + j - c0] = sum_kk x[r * k + kk] * w[j * k + kk]` for `r < m`
    /// and the columns `j` of panels `panels` (`c0 = panels.start * PANEL`, up to `n`),
    /// single-threaded. Every value of that block is written before any is read, and
    /// nothing outside it is touched, so `dst` may start unwritten ([`super::Outputs`]).
    pub fn matmul(
        &self,
        dst: &mut [f32],
        dst_stride: usize,
        x: &[f32],
        m: usize,
        panels: std::ops::Range<usize>,
    ) {
        let k = self.k;
        let c0 = panels.start * PANEL;
        let c1 = (panels.end * PANEL).min(self.n);
        assert!(
            panels.end <= self.panels(),
            "panels {panels:?} of {}",
            self.panels()
        );
        assert!(x.len() >= m * k, "input too short for {m} x {k}");
        if m == 0 || c1 <= c0 {
            return;
        }
        assert!(
            dst_stride >= c1 - c0 && dst.len() >= (m - 1) * dst_stride + (c1 - c0),
            "destination too short"
        );
        assert!(available(), "the packed product needs AVX-512F");
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is checked; the asserts bound the rows of `x` and `dst`, and
        // panels below `self.panels()` lie inside the panel data.
        unsafe {
            let on_tiles = self.on_tiles(m);
            match &self.panels {
                Panels::F16(data) if on_tiles => {
                    super::amx::matmul(dst, dst_stride, x, data.as_ptr(), m, k, (c0, c1))
                }
                Panels::Bf16(data) if on_tiles => {
                    super::amx::matmul(dst, dst_stride, x, data.as_ptr(), m, k, (c0, c1))
                }
                Panels::F32(data) => avx512::matmul(dst, dst_stride, x, data.as_ptr(), m, k, (c0, c1)),
                Panels::F16(data) => avx512::matmul(dst, dst_stride, x, data.as_ptr(), m, k, (c0, c1)),
                Panels::Bf16(data) => avx512::matmul(dst, dst_stride, x, data.as_ptr(), m, k, (c0, c1)),
            }
        }
    }

    /// Whether [`PackedWeight::matmul`] runs on AMX tiles ([`super::amx`]) for `m` rows:
    /// f16 or bfloat16 panels, a CPU with AMX, and at least [`super::amx::MIN_ROWS`] rows.
    pub fn on_tiles(&self, m: usize) -> bool {
        !matches!(self.panels, Panels::F32(_)) && m >= super::amx::MIN_ROWS && super::amx::available()
    }

    /// Rows per work item in a product of many rows: [`ROW_CHUNK`], or
    /// [`super::amx::ROW_CHUNK`] where the tiles run (splitting a panel into tiles is paid
    /// once per item, so larger items amortise it; 256 rows against 64 took the prompt
    /// pass's experts from 0.95 to 0.75 s).
    pub fn row_chunk(&self) -> usize {
        if self.on_tiles(super::amx::ROW_CHUNK) {
            super::amx::ROW_CHUNK
        } else {
            ROW_CHUNK
        }
    }

    /// [`PackedWeight::matmul`] over every column, as items of at most
    /// [`PackedWeight::row_chunk`] rows
    /// and whole panels spread over rayon's threads: `[m, n]`.
    pub fn matmul_parallel(&self, x: &[f32], m: usize) -> Vec<f32> {
        let n = self.n;
        let mut dst = Outputs::new(m * n);
        let len = m * n;
        let threads = rayon::current_num_threads().max(1);
        let row_chunks = m.div_ceil(self.row_chunk()).max(1);
        let rows = m.div_ceil(row_chunks);
        // Several items per thread for balance, at least two panels each.
        let per_chunk = (threads * 4).div_ceil(row_chunks).max(1);
        let block = self.panels().div_ceil(per_chunk).max(2);
        let items: Vec<(usize, usize)> = (0..row_chunks)
            .flat_map(|r| (0..self.panels().div_ceil(block)).map(move |b| (r * rows, b * block)))
            .collect();
        let out = dst.ptr();
        let run = |&(r0, p0): &(usize, usize)| {
            let mr = rows.min(m - r0);
            let p1 = (p0 + block).min(self.panels());
            let at = r0 * n + p0 * PANEL;
            // SAFETY: items write disjoint blocks (rows r0..r0 + mr, the columns of
            // panels p0..p1) of `dst`, which outlives the loop; the slice starts at the
            // block's first element, and `matmul` writes every value of the block before
            // reading any and nothing outside it (the rest of the slice may be unwritten).
            let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(at), len - at) };
            self.matmul(dst, n, &x[r0 * self.k..], mr, p0..p1);
        };
        if threads == 1 || items.len() == 1 {
            items.iter().for_each(run);
        } else {
            items.par_iter().for_each(run);
        }
        // SAFETY: the items cover every row chunk and every panel.
        unsafe { dst.assume_written() }
    }
}

/// Rows per item of [`PackedWeight::matmul_parallel`].
pub(crate) const ROW_CHUNK: usize = 64;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::PANEL;

    /// Input rows per register block: `ROWS x 3` accumulators, three panel vectors and
    /// one broadcast fill 28 of the 32 vector registers.
    const ROWS: usize = 8;

    /// A panel element that widens to f32 in registers.
    pub(super) trait Element: Copy {
        /// Sixteen values from `p`, as f32.
        ///
        /// # Safety
        /// AVX-512F, and `p..p + 16` readable.
        unsafe fn load16(p: *const Self) -> __m512;
    }

    impl Element for f32 {
        #[inline(always)]
        unsafe fn load16(p: *const f32) -> __m512 {
            // SAFETY: the caller's contract.
            unsafe { _mm512_loadu_ps(p) }
        }
    }

    impl Element for f16 {
        #[inline(always)]
        unsafe fn load16(p: *const f16) -> __m512 {
            // SAFETY: the caller's contract; `f16` is a 16-bit IEEE half.
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
        }
    }

    impl Element for bf16 {
        #[inline(always)]
        unsafe fn load16(p: *const bf16) -> __m512 {
            // SAFETY: the caller's contract; a bfloat16 is the upper half of an f32.
            unsafe {
                let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
            }
        }
    }

    /// Columns `c0..c1` (`c0` a multiple of [`PANEL`]) of `x @ w^T` for `m` rows.
    ///
    /// # Safety
    /// AVX-512F; `x` holds `m * k` values, `panels` the panels up to column `c1`, `dst`
    /// `(m - 1) * dst_stride + c1 - c0` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn matmul<E: Element>(
        dst: &mut [f32],
        dst_stride: usize,
        x: &[f32],
        panels: *const E,
        m: usize,
        k: usize,
        (c0, c1): (usize, usize),
    ) {
        let mut c = c0;
        while c < c1 {
            let panel = panels.add(c * k);
            let next = if c + PANEL < c1 {
                panel.add(PANEL * k) as *const i8
            } else {
                std::ptr::null()
            };
            // The panel runs in slices of KC steps of `k`, each against every block of
            // rows, so that the slice stays in L1 (a whole panel, 55 KiB in f16 at
            // k = 576, does not); the outputs carry the partial sums between slices,
            // which leaves the order of the additions as without slices.
            let mut k0 = 0;
            while k0 < k {
                let slice = Slice {
                    x: x.as_ptr().add(k0),
                    x_stride: k,
                    steps: KC.min(k - k0),
                    panel: panel.add(k0 * PANEL),
                    dst: dst.as_mut_ptr().add(c - c0),
                    dst_stride,
                    valid: (c1 - c).min(PANEL),
                    accumulate: k0 > 0,
                    // The first block of rows fetches the same slice of the next panel
                    // into L2, so that it arrives while this panel computes.
                    ahead: if next.is_null() {
                        next
                    } else {
                        next.add(k0 * PANEL * std::mem::size_of::<E>())
                    },
                };
                let mut r = 0;
                while r + ROWS <= m {
                    slice.tile::<ROWS>(r);
                    r += ROWS;
                }
                match m - r {
                    0 => {}
                    1 => slice.tile::<1>(r),
                    2 => slice.tile::<2>(r),
                    3 => slice.tile::<3>(r),
                    4 => slice.tile::<4>(r),
                    5 => slice.tile::<5>(r),
                    6 => slice.tile::<6>(r),
                    _ => slice.tile::<7>(r),
                }
                k0 += KC;
            }
            c += PANEL;
        }
    }

    /// Steps of `k` per slice of a panel: 24 KiB of f16 panel, 8 KiB of eight input rows.
    const KC: usize = 256;

    /// One slice of `k` of one panel against the input rows.
    struct Slice<E> {
        /// Row 0 of the input at the slice's first step.
        x: *const f32,
        x_stride: usize,
        steps: usize,
        /// The panel at the slice's first step.
        panel: *const E,
        /// Row 0, the panel's first column, of the output.
        dst: *mut f32,
        dst_stride: usize,
        /// Columns of the panel that exist.
        valid: usize,
        /// Whether the outputs hold the sums of the earlier slices.
        accumulate: bool,
        /// The next panel's slice, fetched into L2 by the tile of row 0; null for none.
        ahead: *const i8,
    }

    impl<E: Element> Slice<E> {
        /// Rows `r..r + R` of the input against the slice.
        #[inline(always)]
        unsafe fn tile<const R: usize>(&self, r: usize) {
            let x = self.x.add(r * self.x_stride);
            let dst = self.dst.add(r * self.dst_stride);
            let mask = |v: usize| -> __mmask16 {
                let col = v * 16;
                if col >= self.valid {
                    0
                } else if self.valid - col >= 16 {
                    0xffff
                } else {
                    ((1u32 << (self.valid - col)) - 1) as __mmask16
                }
            };
            let masks = [mask(0), mask(1), mask(2)];
            let mut acc = [[_mm512_setzero_ps(); 3]; R];
            if self.accumulate {
                for (a, row) in acc.iter_mut().enumerate() {
                    for (v, acc) in row.iter_mut().enumerate() {
                        *acc = _mm512_maskz_loadu_ps(masks[v], dst.add(a * self.dst_stride + v * 16));
                    }
                }
            }
            let ahead = if r == 0 { self.ahead } else { std::ptr::null() };
            let row_bytes = PANEL * std::mem::size_of::<E>();
            for kk in 0..self.steps {
                if !ahead.is_null() {
                    super::super::prefetch_l2(ahead.add(kk * row_bytes), row_bytes);
                }
                let p = self.panel.add(kk * PANEL);
                let w = [E::load16(p), E::load16(p.add(16)), E::load16(p.add(32))];
                for (a, row) in acc.iter_mut().enumerate() {
                    let xb = _mm512_set1_ps(*x.add(a * self.x_stride + kk));
                    for (v, acc) in row.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(xb, w[v], *acc);
                    }
                }
            }
            for (a, row) in acc.iter().enumerate() {
                for (v, &sum) in row.iter().enumerate() {
                    if masks[v] != 0 {
                        _mm512_mask_storeu_ps(dst.add(a * self.dst_stride + v * 16), masks[v], sum);
                    }
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

    fn check(m: usize, n: usize, k: usize, storage: Storage) {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| {
                let v = ((i * 53 % 97) as f32 - 48.0) / 48.0;
                match storage {
                    Storage::F16 => f16::from_f32(v).to_f32(),
                    // Beyond the half's range, so only bfloat16 holds it exactly.
                    Storage::Bf16 => bf16::from_f32(v * 1e6).to_f32(),
                    Storage::F32 => v + 1e-7,
                }
            })
            .collect();
        let packed = PackedWeight::pack(&w, n, k);
        assert_eq!(packed.storage(), storage, "{m}x{n}x{k}: storage");
        let want = reference(&x, &w, m, n, k);
        // The scale of a dot product's rounding error: the sum of its terms' magnitudes.
        let magnitude = reference(
            &x.iter().map(|v| v.abs()).collect::<Vec<_>>(),
            &w.iter().map(|v| v.abs()).collect::<Vec<_>>(),
            m,
            n,
            k,
        );
        let got = packed.matmul_parallel(&x, m);
        for (i, ((a, b), s)) in want.iter().zip(&got).zip(&magnitude).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * s.max(1.0),
                "{m}x{n}x{k} {storage:?} [{i}]: {a} vs {b} (terms summing to {s} in magnitude)"
            );
        }
    }

    #[test]
    fn matches_a_plain_product_on_every_tail() {
        if !available() {
            return;
        }
        for (m, n, k) in [
            (1, 1, 1),
            (3, 5, 17),
            (8, 48, 16),
            (9, 13, 40),
            (5, 70, 100),
            (17, 96, 33),
            (200, 7, 33),
            (300, 130, 20),
            (20, 100, 600),
            (9, 50, 513),
        ] {
            for storage in [Storage::F16, Storage::Bf16, Storage::F32] {
                check(m, n, k, storage);
            }
        }
    }

    #[test]
    fn writes_only_the_columns_of_its_panels() {
        if !available() {
            return;
        }
        let (m, n, k) = (3, 2 * PANEL + 5, 8);
        let w: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32).collect();
        let x = vec![1f32; m * k];
        let packed = PackedWeight::pack(&w, n, k);
        let stride = PANEL + 3;
        let mut dst = vec![-1f32; (m - 1) * stride + PANEL + 3];
        packed.matmul(&mut dst, stride, &x, m, 1..2);
        for r in 0..m {
            for c in 0..PANEL {
                let j = PANEL + c;
                let want: f32 = w[j * k..(j + 1) * k].iter().sum();
                assert_eq!(dst[r * stride + c], want, "row {r} column {j}");
            }
            for c in PANEL..stride.min(dst.len() - r * stride) {
                assert_eq!(
                    dst[r * stride + c],
                    -1.0,
                    "row {r}: column {c} past the panel untouched"
                );
            }
        }
    }
}

#[cfg(test)]
mod timing {
    /// GFLOP/s of the packed product against the streaming kernel at the round's shapes,
    /// weight in cache and weight from memory (40 distinct weights cycled):
    /// `cargo test --release -p latentevo-model --lib kernels::packed::timing -- --ignored --nocapture --test-threads=1`.
    #[test]
    #[ignore]
    fn packed_against_streaming() {
        use super::{PackedWeight, Storage};
        use std::time::Instant;
        for (m, n, k) in [
            (8usize, 3072usize, 576usize),
            (16, 3072, 576),
            (32, 3072, 576),
            (64, 3072, 576),
            (16, 576, 1536),
            (64, 576, 1536),
            (32, 49152, 576),
            (32, 960, 576),
            (1088, 960, 576),
            (1088, 3072, 576),
            (1088, 576, 1536),
        ] {
            let copies = if n * k * 4 * 40 > 2_000_000_000 { 4 } else { 40 };
            let weights: Vec<Vec<f32>> = (0..copies)
                .map(|i| {
                    (0..n * k)
                        .map(|j| half::f16::from_f32(((j * 53 + i) % 97) as f32 / 97.0 - 0.5).to_f32())
                        .collect()
                })
                .collect();
            let start = Instant::now();
            let packed: Vec<PackedWeight> = weights.iter().map(|w| PackedWeight::pack(w, n, k)).collect();
            let pack_seconds = start.elapsed().as_secs_f64() / copies as f64;
            let packed32: Vec<PackedWeight> = weights
                .iter()
                .map(|w| {
                    let w: Vec<f32> = w.iter().map(|v| v + 1e-9).collect();
                    PackedWeight::pack(&w, n, k)
                })
                .collect();
            // Beyond the half's range, so stored as bfloat16.
            let packed_bf16: Vec<PackedWeight> = weights
                .iter()
                .map(|w| {
                    let w: Vec<f32> = w
                        .iter()
                        .map(|&v| half::bf16::from_f32(v * 1e6).to_f32())
                        .collect();
                    PackedWeight::pack(&w, n, k)
                })
                .collect();
            assert_eq!(packed_bf16[0].storage(), Storage::Bf16);
            assert_eq!(packed[0].storage(), Storage::F16);
            assert_eq!(packed32[0].storage(), Storage::F32);
            let x = vec![0.5f32; m * k];
            let flops = 2.0 * (m * n * k) as f64;
            let reps = ((8e9 / flops) as usize).clamp(4, 400);
            let time = |f: &dyn Fn(usize)| {
                f(0);
                (0..3)
                    .map(|_| {
                        let t = Instant::now();
                        for rep in 0..reps {
                            f(rep);
                        }
                        flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9
                    })
                    .fold(0f64, f64::max)
            };
            let streaming_hot = time(&|_| {
                std::hint::black_box(super::super::matmul::matmul_nt_parallel(&x, &weights[0], m, n, k));
            });
            let streaming_cold = time(&|rep| {
                std::hint::black_box(super::super::matmul::matmul_nt_parallel(
                    &x,
                    &weights[rep % copies],
                    m,
                    n,
                    k,
                ));
            });
            let f16_hot = time(&|_| {
                std::hint::black_box(packed[0].matmul_parallel(&x, m));
            });
            let f16_cold = time(&|rep| {
                std::hint::black_box(packed[rep % copies].matmul_parallel(&x, m));
            });
            let bf16_cold = time(&|rep| {
                std::hint::black_box(packed_bf16[rep % copies].matmul_parallel(&x, m));
            });
            let f32_cold = time(&|rep| {
                std::hint::black_box(packed32[rep % copies].matmul_parallel(&x, m));
            });
            println!(
                "{m:>5}x{n:>5}x{k:>4}: streaming {streaming_hot:6.1} hot {streaming_cold:6.1} cold; packed f16 {f16_hot:6.1} hot {f16_cold:6.1} cold; packed bf16 {bf16_cold:6.1} cold; packed f32 {f32_cold:6.1} cold GFLOP/s; packing {:.0} M values/s",
                (n * k) as f64 / pack_seconds / 1e6
            );
        }
    }
}
