//! Single-thread speed of every decode kernel (`cargo test --release -p leanlm
//! kernel_speed -- --ignored --nocapture`): weight bytes per second of one row · one
//! token, over rows that stay in cache and over rows streamed from memory. A benchmark to
//! read, not a test: it asserts nothing.

use std::time::Instant;

use super::activation::Q8Act;
use super::blocks::QK;
use super::matrix::{q8_kernels, KERNEL_TYPES};
use super::{codes, GgmlType};

fn encoded(t: GgmlType, n: usize) -> Vec<u8> {
    use super::blocks::{quantize_q4_0, quantize_q4_1, quantize_q8_0};
    use super::kquants::{quantize_q4_k, quantize_q6_k};
    let x = super::test_data(n, 5);
    let ones = vec![1f32; n];
    match t {
        GgmlType::Q4_0 => quantize_q4_0(&x),
        GgmlType::Q4_1 => quantize_q4_1(&x),
        GgmlType::Q8_0 => quantize_q8_0(&x),
        GgmlType::Q4K => quantize_q4_k(&x, &ones),
        GgmlType::Q6K => quantize_q6_k(&x, &ones),
        t => codes::random_blocks(t, n / t.block_len(), 9),
    }
}

#[test]
#[ignore]
fn kernel_speed() {
    let cols = 2048;
    let x = Q8Act::quantize(&super::test_data(cols, 3));
    let xr = x.row(0, cols / QK);
    // Every type with 8-bit decode kernels (F16 and BF16 take f32 activations).
    for (t, (dot, _)) in KERNEL_TYPES
        .iter()
        .filter_map(|&t| Some((t, q8_kernels(t)?)))
    {
        let rb = t.row_bytes(cols).unwrap();
        for (what, bytes) in [("cache", 256 << 10), ("memory", 512 << 20)] {
            let rows = bytes / rb;
            // Real blocks (normal f16 scales: subnormal ones would time the FPU's slow
            // path), repeated.
            let one = encoded(t, 64 * cols);
            let w: Vec<u8> = one.iter().copied().cycle().take(rows * rb).collect();
            let passes = (1usize << 30) / (rows * rb);
            let mut sink = 0f32;
            let start = Instant::now();
            for _ in 0..passes.max(2) {
                for r in 0..rows {
                    sink += dot(&w[r * rb..(r + 1) * rb], xr);
                }
            }
            let secs = start.elapsed().as_secs_f64();
            let gbs = (passes.max(2) * rows * rb) as f64 / secs / 1e9;
            println!("{t:>5} {what:>6}: {gbs:6.2} GB/s  ({sink:.1e})");
        }
    }
}
