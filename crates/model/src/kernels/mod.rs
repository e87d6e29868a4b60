//! CPU kernels for the search's hot paths.
//!
//! At the sizes a search runs (a few dozen rows per decoding step, a few hundred tokens per
//! expert in a prompt pass) candle's general CPU ops spend more time dispatching,
//! allocating and running tiny batched products than doing arithmetic: one MoE layer is
//! a gather, three products, an activation, a scale and a scatter per expert; one
//! attention step is a batched product per row and kv head over a handful of keys. The
//! kernels here work on the tensors' f32 storage directly:
//!
//! - [`moe`]: the routed experts of one MoE layer, with the tokens grouped by expert once,
//!   the gate and up products fused, the activation and routing weight applied in place,
//!   and the (expert, row-chunk) work items spread over the threads;
//! - [`attention`]: scaled dot-product attention over a (possibly strided) key/value
//!   cache with an additive mask, one work item per row and query head;
//! - [`packed`]: `x @ w^T` against a weight rearranged once into k-major column panels
//!   (f16 where that is lossless), the product of every projection, expert and the head;
//! - [`amx`]: the packed product on Intel AMX tiles where the CPU has them, its f32
//!   accuracy kept by splitting inputs and weights into exact bfloat16 pieces;
//! - [`rope`]: the fused q/k/v product's output split into heads and rotated in one pass;
//! - [`logits`]: per-row log-sum-exp and arg-max, and the KL divergence between row
//!   pairs, over the vocabulary, without copying the logits.
//!
//! Each kernel is used only for contiguous f32 tensors on the CPU; anything else takes
//! the candle path, which stays the reference the kernels are tested against
//! (`kernels::*::tests`). Products take [`packed`] (on [`amx`] tiles for a dozen rows or
//! more, where the CPU has them) where the CPU has AVX-512F, else
//! [`matmul`] (which falls back to the `gemm` crate, the one candle's CPU matmul uses),
//! single-threaded inside each work item, since the items already fill the threads.

pub(crate) mod amx;
pub(crate) mod attention;
pub(crate) mod logits;
pub(crate) mod matmul;
pub(crate) mod moe;
pub(crate) mod packed;
pub(crate) mod rope;
pub(crate) mod simd;

use candle_core::{CpuStorage, Layout, Storage, Tensor};

/// Runs `f` on a thread of rayon's global pool (the kernels' threads), inline if this is
/// one already. Called from outside the pool, every parallel kernel call is handed to the
/// pool while the caller sleeps until it is done: some 300 hand-offs and wake-ups per
/// decoding step. Inside, they are joins between the pool's threads. A pop-16 round:
/// 3.54 / 3.61 s against 3.76 / 3.73 s with the generation outside the pool.
pub(crate) fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Runs `f` on a tensor's f32 CPU storage and layout; `None` if the tensor is not f32 on
/// the CPU.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32], &Layout) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(data)) => Some(f(data, layout)),
        _ => None,
    }
}

/// The f32 CPU data of a contiguous tensor, from its first element; `None` otherwise.
pub(crate) fn with_contiguous_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    with_f32(t, |data, layout| {
        layout
            .contiguous_offsets()
            .map(|(start, end)| f(&data[start..end]))
    })
    .flatten()
}

/// A contiguous f32 CPU tensor's data, held under its storage's read lock (so several
/// can be borrowed at once, e.g. every expert's weights).
pub(crate) struct F32View<'a> {
    guard: candle_core::StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> F32View<'a> {
    /// The view of `t`; `None` unless it is a contiguous f32 CPU tensor.
    pub fn new(t: &'a Tensor) -> Option<Self> {
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))).then_some(F32View { guard, start, end })
    }

    /// The elements, in row-major order.
    pub fn as_slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(data)) => &data[self.start..self.end],
            _ => unreachable!("checked in F32View::new"),
        }
    }
}

/// Fetches the `bytes` from `p` into L2, a cache line at a time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const i8, bytes: usize) {
    let mut off = 0;
    while off < bytes {
        // SAFETY: a prefetch is a hint: it never faults, whatever the address.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.wrapping_add(off)) };
        off += 64;
    }
}

/// A kernel's f32 output buffer, left unwritten until its work items fill it: zeroing it
/// first was a serial memset of every product's output before the items started (a
/// pop-16 round: 3.23-3.38 s without it against 3.54-3.67 s with it).
pub(crate) struct Outputs(Box<[std::mem::MaybeUninit<f32>]>);

impl Outputs {
    /// `len` values, none written yet.
    pub fn new(len: usize) -> Self {
        Outputs(Box::new_uninit_slice(len))
    }

    /// The first value, for the items to write through.
    pub fn ptr(&mut self) -> SendPtr {
        SendPtr(self.0.as_mut_ptr() as *mut f32)
    }

    /// The values.
    ///
    /// # Safety
    /// Every value has been written.
    pub unsafe fn assume_written(self) -> Vec<f32> {
        // SAFETY: the caller's contract.
        unsafe { self.0.assume_init() }.into_vec()
    }
}

/// A pointer to hand disjoint parts of one buffer (which outlives the parallel loop) to
/// rayon's threads.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: every user writes only its own, disjoint part of the buffer.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// Whether the kernels may run on `t`: f32, on the CPU, and not disabled by
/// `LATENTEVO_KERNELS=0` (which forces the candle path, for comparisons).
pub(crate) fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && enabled()
}

fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("LATENTEVO_KERNELS").map_or(true, |v| v != "0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_nt_matches_candle() {
        let dev = candle_core::Device::Cpu;
        for (m, n, k) in [(1, 3, 5), (7, 33, 17), (64, 96, 40)] {
            let a = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let want = a
                .matmul(&b.t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut got = vec![0f32; m * n];
            with_contiguous_f32(&a, |a| {
                with_contiguous_f32(&b, |b| matmul::matmul_nt(&mut got, n, a, b, m, n, k))
            })
            .flatten()
            .unwrap();
            let worst = want
                .iter()
                .zip(&got)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{m}x{n}x{k}: {worst}");
        }
    }
}
