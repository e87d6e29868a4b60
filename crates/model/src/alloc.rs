//! The process's allocator settings for the forward pass's working buffers.
//!
//! A forward call allocates and frees buffers of megabytes (activations, the experts'
//! gathered inputs and outputs, a growing KV cache). glibc's `malloc` serves blocks above
//! its mmap threshold (128 KiB at first, rising with use) with fresh mappings and gives
//! freed memory at the top of the heap back to the system, so the next call's buffers
//! are new pages again: on a 2-vCPU KVM guest a round at population 16 took 936k minor
//! page faults and 9.8 s of system time over its 24.6 s (two threads). [`retain_freed_memory`]
//! keeps blocks up to 32 MiB on the heap and freed memory in the process: 471k faults
//! (the rest is the model load), 6.5 s system time, and the round 4-11% quicker at
//! population 16, 17% at population 64 (29.3 -> 24.2 s). Peak resident memory is the
//! same (freed memory is reused, not added to); the memory stays with the process until
//! it exits.

/// Keeps freed memory in the process instead of returning it to the system (glibc on
/// Linux: `mallopt` with an mmap threshold of 32 MiB, glibc's largest, and a trim
/// threshold of 2 GiB, the largest `mallopt` takes); elsewhere it does nothing. Call it once, early, from a binary
/// that runs models; returns whether the settings were taken.
///
/// ```
/// let _applied = latentevo_model::alloc::retain_freed_memory();
/// ```
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;
        // SAFETY: mallopt only changes allocator parameters; both values are in range.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
