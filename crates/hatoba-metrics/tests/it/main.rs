//! Integration tests for `hatoba-metrics`. On a simulated clock:
//! quantile accuracy, window rotation and ageing, success-rate semantics,
//! concurrent recording, the Prometheus text (parsed back), and property
//! tests of the invariants between windows, totals and quantiles. Also the
//! analysis providers (`providers`), on real time against a real
//! Prometheus, fake HTTP servers and `/bin/sh`.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod concurrency;
mod exposition;
mod props;
mod providers;
mod quantiles;
mod semantics;
mod windows;

use hatoba_core::Millis;
use std::time::Duration;

/// A start time on a 10 s edge (so 1 s and 10 s slots start with it).
const T0: u64 = 1_800_000_000_000;

fn at(offset_ms: u64) -> Millis {
    Millis(T0 + offset_ms)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A small deterministic generator (xorshift64*), so tests need no `rand`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
