//! Single-thread speed of every decode kernel (`cargo test --release -p leanlm
//! kernel_speed -- --ignored --nocapture`): weight bytes per second of one row · one
//! token and of one row · four tokens, over rows that stay in cache and over rows streamed
//! from memory. A benchmark to
//! read, not a test: it asserts nothing.

use std::time::Instant;

use super::activation::Q8Act;
use super::blocks::QK;
use super::matrix::{q8_kernels, KERNEL_TYPES};
use super::q8k::{self, Q8KAct, QK_K};
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
    let x4: Vec<Q8Act> = (0..4)
        .map(|i| Q8Act::quantize(&super::test_data(cols, 4 + i)))
        .collect();
    let xr4 = [0, 1, 2, 3].map(|i| x4[i].row(0, cols / QK));
    let k = Q8KAct::quantize(&super::test_data(cols, 3));
    let k4: Vec<Q8KAct> = (0..4)
        .map(|i| Q8KAct::quantize(&super::test_data(cols, 4 + i)))
        .collect();
    let kr = k.row(0, cols / QK_K);
    let kr4 = [0, 1, 2, 3].map(|i| k4[i].row(0, cols / QK_K));
    type Pair<'a> = (
        Box<dyn Fn(&[u8]) -> f32 + 'a>,
        Box<dyn Fn(&[u8]) -> [f32; 4] + 'a>,
    );
    // Every type with 8-bit decode kernels (F16 and BF16 take f32 activations).
    let kernels = KERNEL_TYPES
        .iter()
        .filter_map(|&t| -> Option<(GgmlType, Pair)> {
            if let Some((dot, dot4)) = q8k::kernels(t) {
                return Some((
                    t,
                    (
                        Box::new(move |w| dot(w, kr)),
                        Box::new(move |w| dot4(w, kr4)),
                    ),
                ));
            }
            let (dot, dot4) = q8_kernels(t)?;
            Some((
                t,
                (
                    Box::new(move |w| dot(w, xr)),
                    Box::new(move |w| dot4(w, xr4)),
                ),
            ))
        });
    for (t, (dot, dot4)) in kernels {
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
                    sink += dot(&w[r * rb..(r + 1) * rb]);
                }
            }
            let secs = start.elapsed().as_secs_f64();
            let gbs = (passes.max(2) * rows * rb) as f64 / secs / 1e9;
            // Four tokens per pass over a row (verification), as weight bytes per second
            // per token: 4× the one-token figure would mean a free batch.
            let start = Instant::now();
            for _ in 0..passes.max(2) {
                for r in 0..rows {
                    sink += dot4(&w[r * rb..(r + 1) * rb])[3];
                }
            }
            let secs4 = start.elapsed().as_secs_f64();
            let gbs4 = 4.0 * (passes.max(2) * rows * rb) as f64 / secs4 / 1e9;
            println!(
                "{t:>5} {what:>6}: {gbs:6.2} GB/s one token, {gbs4:6.2} GB/s·token four ({sink:.1e})"
            );
        }
    }
}
