//! Wall-clock time per part of the forward pass, for throughput work.
//!
//! Off unless the environment variable `LATENTEVO_PROFILE` is set when the process first
//! asks; then each part's time accumulates in process-wide counters ([`snapshot`],
//! [`reset`]). On the CPU the kernels are synchronous, so the times are the parts' own; on
//! CUDA they measure launch time only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// The parts timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Norms, q/k/v/o projections, RoPE, scores, softmax, values.
    Attention,
    /// Writing keys and values to the cache and reading them back.
    KvCache,
    /// Router logits, the routing policy on the host.
    Routing,
    /// The routed (and shared) experts.
    Experts,
    /// Final norm and output head.
    LmHead,
    /// Host work of the decoding loop: logits to the host, log-softmax, KL, token choice.
    Sampling,
    /// Mask and RoPE tables, embedding, perturbation.
    Setup,
}

const PARTS: [Part; 7] = [
    Part::Attention,
    Part::KvCache,
    Part::Routing,
    Part::Experts,
    Part::LmHead,
    Part::Sampling,
    Part::Setup,
];

static NANOS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

/// Whether profiling is on (`LATENTEVO_PROFILE` set).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("LATENTEVO_PROFILE").is_some())
}

/// Runs `f`, adding its wall-clock time to `part` when profiling is on.
#[inline]
pub(crate) fn time<T>(part: Part, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let start = Instant::now();
    let out = f();
    NANOS[part as usize].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    out
}

/// Adds the time since `start` to `part` (when profiling is on).
#[inline]
pub(crate) fn add_since(part: Part, start: Instant) {
    if enabled() {
        NANOS[part as usize].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Seconds per part since the last [`reset`].
pub fn snapshot() -> Vec<(Part, f64)> {
    PARTS
        .iter()
        .map(|&p| (p, NANOS[p as usize].load(Ordering::Relaxed) as f64 * 1e-9))
        .collect()
}

/// Zeroes the counters.
pub fn reset() {
    for n in &NANOS {
        n.store(0, Ordering::Relaxed);
    }
}

/// The process's peak resident memory so far (`VmHWM` of `/proc/self/status`), MiB;
/// `None` where the system has no such file (not Linux).
///
/// ```
/// if let Some(mib) = latentevo_model::profile::peak_rss_mib() {
///     assert!(mib > 0.0);
/// }
/// ```
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
