//! Each format: decoding against candle's dequantizer (an independent implementation),
//! the plain products against decode-then-multiply, the AVX2 codes and products against
//! the plain ones, on random blocks (every bit pattern of codes and packed scales) of
//! rows of 1, 3, 7 and 11 blocks (for the one-sub-block formats: a short group alone,
//! and whole groups of eight followed by a short one).

use super::*;
use crate::quant::activation::Q8Act;
use crate::quant::blocks::dequantize_with_candle;

fn random_row<F: Codes>(blocks: usize, seed: u32) -> Vec<u8> {
    random_blocks(F::TYPE, blocks, seed)
}

fn decoded<F: Codes>(row: &[u8]) -> Vec<f32> {
    let n = row.len() / F::TYPE.block_bytes() * F::TYPE.block_len();
    let mut out = vec![0f32; n];
    decode::<F>(row, &mut out);
    out
}

/// |Σ w·x| is compared within this much of Σ|w·x|.
const REL: f32 = 2e-5;

fn close(a: f32, b: f32, scale: f32, what: &str) {
    assert!(
        (a - b).abs() <= REL * scale + 1e-7,
        "{what}: {a} vs {b} (scale {scale})"
    );
}

fn check<F: Codes>() {
    for (blocks, seed) in [(1, 1), (3, 2), (7, 3), (11, 4)] {
        let row = random_row::<F>(blocks, seed);
        let w = decoded::<F>(&row);
        let mut theirs = vec![0f32; w.len()];
        dequantize_with_candle(F::TYPE, &row, &mut theirs).unwrap();
        assert_eq!(w, theirs, "{} decoding", F::TYPE);

        let n = w.len();
        let x = crate::quant::test_data(n, seed + 10);
        let bpr = n / QK;
        let xq = Q8Act::quantize(&x);
        let (hi, lo) = Q8Act::quantize_split(&x);
        let xr = |a: &Q8Act, i: usize| a.d[i / QK] * a.qs[i] as f32;
        let exact8: f32 = (0..n).map(|i| w[i] * xr(&xq, i)).sum();
        let exact16: f32 = (0..n).map(|i| w[i] * (xr(&hi, i) + xr(&lo, i))).sum();
        let scale: f32 = (0..n).map(|i| (w[i] * x[i]).abs()).sum();
        let r8 = dot_ref::<F>(&row, xq.row(0, bpr));
        close(r8, exact8, scale, "8-bit reference");
        let r16 = dot2_ref::<F>(&row, hi.row(0, bpr), lo.row(0, bpr));
        close(r16, exact16, scale, "16-bit reference");
        let plain: f32 = (0..n).map(|i| w[i] * x[i]).sum();
        close(
            r16,
            plain,
            100.0 * scale / 256.0,
            "16 bits against f32 activations",
        );

        #[cfg(target_arch = "x86_64")]
        if crate::quant::simd::has_avx2() {
            let bb = F::TYPE.block_bytes();
            let mut u = [0u8; QK];
            for blk in row.chunks_exact(bb) {
                for s in 0..F::SUBS {
                    F::codes(blk, s, &mut u);
                    assert_eq!(avx2::codes_of::<F>(blk, s), u, "{} codes {s}", F::TYPE);
                }
            }
            let k = kernels(F::TYPE).unwrap();
            let one = (k.dot)(&row, xq.row(0, bpr));
            close(one, r8, scale, "AVX2 8-bit");
            close(
                (k.dot2)(&row, hi.row(0, bpr), lo.row(0, bpr)),
                r16,
                scale,
                "AVX2 16-bit",
            );
            // Four tokens: each exactly what one token alone gives.
            let x4 = crate::quant::test_data(4 * n, seed + 20);
            let q4 = Q8Act::quantize(&x4);
            let rows4 = [0, 1, 2, 3].map(|t| q4.row(t, bpr));
            let four = (k.dot4)(&row, rows4);
            for t in 0..4 {
                assert_eq!(four[t].to_bits(), (k.dot)(&row, rows4[t]).to_bits());
            }
        }
    }
}

#[test]
fn q5_0() {
    check::<Q5_0>();
}

#[test]
fn q5_1() {
    check::<Q5_1>();
}

#[test]
fn q5_k() {
    check::<Q5K>();
}

#[test]
fn q3_k() {
    check::<Q3K>();
}

#[test]
fn q2_k() {
    check::<Q2K>();
}

/// The weighted encoders round-trip through decoding within half a step of each block
/// (the levels they chose), and weighting moves the error onto unweighted weights.
#[test]
fn weighted_q5_encoders_decode_back_within_half_a_step() {
    let x = crate::quant::test_data(4 * QK, 17);
    let ones = vec![1f32; x.len()];
    for (t, bytes) in [
        (GgmlType::Q5_0, Q5_0::encode_weighted(&x, &ones)),
        (GgmlType::Q5_1, Q5_1::encode_weighted(&x, &ones)),
    ] {
        assert_eq!(bytes.len(), 4 * t.block_bytes());
        let k = kernels(t).unwrap();
        let mut back = vec![0f32; x.len()];
        (k.decode)(&bytes, &mut back);
        for (b, (xb, yb)) in x.chunks(QK).zip(back.chunks(QK)).enumerate() {
            let step = (k.scales)(&bytes[b * t.block_bytes()..], 0).a[0].abs();
            for (a, y) in xb.iter().zip(yb) {
                assert!((a - y).abs() <= 0.5 * step * 1.01 + 1e-6, "{t}: {a} vs {y}");
            }
        }
    }
}
