//! The lock of a per-thread shard (connections, limiter counters, the monitor's counts
//! and log).
//!
//! A thread's decisions take the lock of their own shard, so it is almost never
//! contended: what it costs is its atomic instructions. A `parking_lot` mutex takes two
//! (a compare-and-swap to lock, another to unlock), and a locked instruction waits until
//! every store before it has reached the cache. The stores a shard's critical section
//! makes are the ones most likely to miss (a new connection's record, a log entry): the
//! unlock waited for them. This lock is released by a plain store, which does not wait:
//! one locked instruction per use instead of two. (perf, acl-10000, profile-guided build:
//! the connection shard's lock and unlock drew 6.6% of the run's samples, a quarter of
//! `Engine::decide`'s; much of that was the stall of the stores, which now comes later:
//! paired runs against `parking_lot` gave 0.961 and 0.978 at acl-10000, 0.979 on
//! chain-10000, and no change with two threads.)
//!
//! Waiting: a short spin, then yielding the core between attempts. A holder is never
//! parked, but it can be preempted; yielding lets it run again on a machine with fewer
//! cores than busy threads.

use spin::mutex::{SpinMutex, SpinMutexGuard};

/// Attempts made spinning before the waiter starts yielding between attempts.
const SPINS: u32 = 64;

#[derive(Default)]
pub(crate) struct ShardLock<T>(SpinMutex<T>);

impl<T> ShardLock<T> {
    /// Takes the lock, waiting for it.
    pub(crate) fn lock(&self) -> SpinMutexGuard<'_, T> {
        if let Some(guard) = self.0.try_lock() {
            return guard;
        }
        std::hint::cold_path();
        self.lock_contended()
    }

    #[inline(never)]
    fn lock_contended(&self) -> SpinMutexGuard<'_, T> {
        let mut attempts = 0u32;
        loop {
            // Read before trying to write: waiters spin on a shared copy of the line.
            if !self.0.is_locked()
                && let Some(guard) = self.0.try_lock()
            {
                return guard;
            }
            attempts = attempts.saturating_add(1);
            if attempts < SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Takes the lock if it is free.
    pub(crate) fn try_lock(&self) -> Option<SpinMutexGuard<'_, T>> {
        self.0.try_lock()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::ShardLock;
    use std::sync::Arc;

    #[test]
    fn threads_contending_lose_no_update() {
        let lock = Arc::new(ShardLock::<u64>::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 80_000);
    }

    #[test]
    fn try_lock_fails_while_held_and_succeeds_after() {
        let lock = ShardLock::<u32>::default();
        let mut held = lock.lock();
        *held = 1;
        assert!(lock.try_lock().is_none());
        drop(held);
        assert_eq!(lock.try_lock().map(|v| *v), Some(1));
    }

    #[test]
    fn a_waiter_gets_the_lock_once_a_preempted_holder_lets_go() {
        let lock = Arc::new(ShardLock::<Vec<&str>>::default());
        let held = lock.lock();
        let waiter = {
            let lock = lock.clone();
            std::thread::spawn(move || lock.lock().push("waiter"))
        };
        // Long enough for the waiter to pass its spins and yield.
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(held);
        waiter.join().unwrap();
        assert_eq!(*lock.lock(), vec!["waiter"]);
    }
}
