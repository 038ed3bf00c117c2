//! The allocator of the `clpe` binary: mimalloc, and a way to hand memory that is free
//! back to the operating system.
//!
//! mimalloc keeps pages it has emptied for a while (its purge delay is not a timer: it is
//! checked when the owning thread next allocates). After a large batch is applied, the
//! batch's temporaries (parsed trees, the old snapshot) are free but stay resident until
//! then. [`release_free_memory`] asks mimalloc to give them back at once; the daemon and
//! `clpe bench` call it after a batch, off the decision path.
//!
//! This crate exists so that the FFI call lives in one small audited place: the rest of
//! the workspace compiles with `unsafe_code = "forbid"`.

pub use mimalloc::MiMalloc;

/// Returns the memory mimalloc holds free (in this thread's heap and the shared arenas)
/// to the operating system. Costs a few system calls; never call it per decision.
pub fn release_free_memory() {
    // SAFETY: `mi_collect` takes a plain flag, has no preconditions and may be called
    // from any thread at any time (mimalloc's documented API, include/mimalloc.h).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOC: MiMalloc = MiMalloc;

    #[test]
    fn releasing_after_a_burst_keeps_allocating_working() {
        let burst: Vec<Vec<u8>> = (0..10_000).map(|i| vec![(i % 251) as u8; 512]).collect();
        let sum: u64 = burst
            .iter()
            .map(|v| u64::from(v.first().copied().unwrap_or(0)))
            .sum();
        drop(burst);
        release_free_memory();
        let again: Vec<Vec<u8>> = (0..10_000).map(|i| vec![(i % 251) as u8; 512]).collect();
        let sum_again: u64 = again
            .iter()
            .map(|v| u64::from(v.first().copied().unwrap_or(0)))
            .sum();
        assert_eq!(sum, sum_again);
    }
}
