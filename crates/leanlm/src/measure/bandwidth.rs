//! This machine's memory read bandwidth, measured the way decoding reads weights: every
//! worker thread streams its share of a buffer far larger than the caches, once per pass.

use std::time::Instant;

use rayon::prelude::*;

/// Best read rate in bytes/s over `passes` passes of a `bytes`-byte buffer, using the
/// current rayon pool (so `-t N` measures N threads, as the kernels run).
pub fn read_bandwidth(bytes: usize, passes: usize) -> f64 {
    let words = (bytes / 8).max(1);
    // Distinct values so that no page is shared copy-on-write zeros.
    let buf: Vec<u64> = (0..words as u64).collect();
    let mut best = 0f64;
    for _ in 0..passes.max(1) {
        let t = Instant::now();
        let sum = buf
            .par_chunks(1 << 17)
            .map(|c| c.iter().fold(0u64, |a, &v| a.wrapping_add(v)))
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(sum);
        best = best.max((words * 8) as f64 / t.elapsed().as_secs_f64());
    }
    best
}

#[cfg(test)]
mod tests {
    #[test]
    fn bandwidth_is_positive_and_finite() {
        let b = super::read_bandwidth(1 << 20, 2);
        assert!(b.is_finite() && b > 0.0);
    }
}
