//! Inner products between one weight row and one activation vector.
//!
//! Each kernel has a plain reference (`*_ref`) that the SIMD version is tested against.
//! The dispatching functions pick AVX2 at run time when the CPU has it.

use super::activation::Q8Row;
use super::blocks::{f16_at, QK};

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var_os("LEANLM_NO_SIMD").is_none()
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Which kernel family runs on this machine (for reports).
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        return "avx2";
    }
    "scalar"
}

macro_rules! dispatch {
    ($simd:ident, $reference:ident, $($arg:expr),*) => {{
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports the features the SIMD kernel was compiled for,
            // and the kernel reads only within the slices it is given.
            return unsafe { x86::$simd($($arg),*) };
        }
        $reference($($arg),*)
    }};
}

/// Q4_1 row (20-byte blocks) · Q8 activations.
pub fn dot_q4_1(w: &[u8], x: Q8Row) -> f32 {
    debug_assert_eq!(w.len(), x.d.len() * 20);
    dispatch!(dot_q4_1, dot_q4_1_ref, w, x)
}

/// Q4_0 row (18-byte blocks) · Q8 activations.
pub fn dot_q4_0(w: &[u8], x: Q8Row) -> f32 {
    debug_assert_eq!(w.len(), x.d.len() * 18);
    dispatch!(dot_q4_0, dot_q4_0_ref, w, x)
}

/// Q8_0 row (34-byte blocks) · Q8 activations.
pub fn dot_q8_0(w: &[u8], x: Q8Row) -> f32 {
    debug_assert_eq!(w.len(), x.d.len() * 34);
    dispatch!(dot_q8_0, dot_q8_0_ref, w, x)
}

/// One weight row against one activation vector.
pub type Dot = fn(&[u8], Q8Row) -> f32;

/// One weight row against four activation vectors: the weight block is decoded once and
/// used four times (prompt processing).
pub type Dot4 = fn(&[u8], [Q8Row; 4]) -> [f32; 4];

pub fn dot4_q4_1(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    dispatch!(dot4_q4_1, dot4_q4_1_ref, w, x)
}

pub fn dot4_q4_0(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    dispatch!(dot4_q4_0, dot4_q4_0_ref, w, x)
}

pub fn dot4_q8_0(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    dispatch!(dot4_q8_0, dot4_q8_0_ref, w, x)
}

pub fn dot4_q4_1_ref(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    x.map(|r| dot_q4_1_ref(w, r))
}

pub fn dot4_q4_0_ref(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    x.map(|r| dot_q4_0_ref(w, r))
}

pub fn dot4_q8_0_ref(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    x.map(|r| dot_q8_0_ref(w, r))
}

/// f32 · f32.
pub fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    dispatch!(dot_f32, dot_f32_ref, w, x)
}

pub fn dot_q4_1_ref(w: &[u8], x: Q8Row) -> f32 {
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(20).enumerate() {
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        let q = &x.qs[b * QK..(b + 1) * QK];
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (blk[4 + j] & 0x0f) as i32 * q[j] as i32;
            isum += (blk[4 + j] >> 4) as i32 * q[j + 16] as i32;
        }
        sum += d * x.d[b] * isum as f32 + m * x.s[b];
    }
    sum
}

pub fn dot_q4_0_ref(w: &[u8], x: Q8Row) -> f32 {
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(18).enumerate() {
        let d = f16_at(blk, 0);
        let q = &x.qs[b * QK..(b + 1) * QK];
        let mut isum = 0i32;
        for j in 0..16 {
            isum += ((blk[2 + j] & 0x0f) as i32 - 8) * q[j] as i32;
            isum += ((blk[2 + j] >> 4) as i32 - 8) * q[j + 16] as i32;
        }
        sum += d * x.d[b] * isum as f32;
    }
    sum
}

pub fn dot_q8_0_ref(w: &[u8], x: Q8Row) -> f32 {
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(34).enumerate() {
        let d = f16_at(blk, 0);
        let q = &x.qs[b * QK..(b + 1) * QK];
        let isum: i32 = (0..QK).map(|j| blk[2 + j] as i8 as i32 * q[j] as i32).sum();
        sum += d * x.d[b] * isum as f32;
    }
    sum
}

pub fn dot_f32_ref(w: &[f32], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Q8Row;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn half(p: *const u8) -> f32 {
        let bits = u16::from_le_bytes([*p, *p.add(1)]) as i32;
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
    }

    /// Sixteen bytes of nibbles to 32 unsigned bytes: low nibbles first (elements 0..16),
    /// then high nibbles (elements 16..32).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack_nibbles(p: *const u8) -> __m256i {
        let q = _mm_loadu_si128(p as *const __m128i);
        let m = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(q, m);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
        _mm256_set_m128i(hi, lo)
    }

    /// Σ u8·i8 over 32 lanes, as 8 floats.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256 {
        let p16 = _mm256_maddubs_epi16(u, s);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_1(w: &[u8], x: Q8Row) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut offset = 0f32;
        for b in 0..x.d.len() {
            let blk = w.as_ptr().add(b * 20);
            let wv = unpack_nibbles(blk.add(4));
            let xv = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32) as *const __m256i);
            let scale = _mm256_set1_ps(half(blk) * x.d[b]);
            acc = _mm256_fmadd_ps(scale, dot_u8_i8(wv, xv), acc);
            offset += half(blk.add(2)) * x.s[b];
        }
        hsum(acc) + offset
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_0(w: &[u8], x: Q8Row) -> f32 {
        // Σ (q - 8)·y = Σ q·y - 8·Σ y, and d_x·Σ y is the stored s.
        let mut acc = _mm256_setzero_ps();
        let mut offset = 0f32;
        for b in 0..x.d.len() {
            let blk = w.as_ptr().add(b * 18);
            let wv = unpack_nibbles(blk.add(2));
            let xv = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32) as *const __m256i);
            let dw = half(blk);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[b]), dot_u8_i8(wv, xv), acc);
            offset -= 8.0 * dw * x.s[b];
        }
        hsum(acc) + offset
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0(w: &[u8], x: Q8Row) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for b in 0..x.d.len() {
            let blk = w.as_ptr().add(b * 34);
            let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
            let xv = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32) as *const __m256i);
            // maddubs wants one unsigned operand: move w's sign onto x.
            let aw = _mm256_sign_epi8(wv, wv);
            let sx = _mm256_sign_epi8(xv, wv);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(half(blk) * x.d[b]), dot_u8_i8(aw, sx), acc);
        }
        hsum(acc)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_q4_1(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut offset = [0f32; 4];
        for b in 0..x[0].d.len() {
            let blk = w.as_ptr().add(b * 20);
            let wv = unpack_nibbles(blk.add(4));
            let (dw, mw) = (half(blk), half(blk.add(2)));
            for t in 0..4 {
                let xv = _mm256_loadu_si256(x[t].qs.as_ptr().add(b * 32) as *const __m256i);
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[t].d[b]), dot_u8_i8(wv, xv), acc[t]);
                offset[t] += mw * x[t].s[b];
            }
        }
        [0, 1, 2, 3].map(|t| hsum(acc[t]) + offset[t])
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_q4_0(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut offset = [0f32; 4];
        for b in 0..x[0].d.len() {
            let blk = w.as_ptr().add(b * 18);
            let wv = unpack_nibbles(blk.add(2));
            let dw = half(blk);
            for t in 0..4 {
                let xv = _mm256_loadu_si256(x[t].qs.as_ptr().add(b * 32) as *const __m256i);
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[t].d[b]), dot_u8_i8(wv, xv), acc[t]);
                offset[t] -= 8.0 * dw * x[t].s[b];
            }
        }
        [0, 1, 2, 3].map(|t| hsum(acc[t]) + offset[t])
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_q8_0(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
        let mut acc = [_mm256_setzero_ps(); 4];
        for b in 0..x[0].d.len() {
            let blk = w.as_ptr().add(b * 34);
            let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
            let aw = _mm256_sign_epi8(wv, wv);
            let dw = half(blk);
            for t in 0..4 {
                let xv = _mm256_loadu_si256(x[t].qs.as_ptr().add(b * 32) as *const __m256i);
                let sx = _mm256_sign_epi8(xv, wv);
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[t].d[b]), dot_u8_i8(aw, sx), acc[t]);
            }
        }
        [0, 1, 2, 3].map(|t| hsum(acc[t]))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
        let n = w.len();
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, acc) in a.iter_mut().enumerate() {
                let o = i + 8 * k;
                *acc =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(o)), _mm256_loadu_ps(px.add(o)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(i)), _mm256_loadu_ps(px.add(i)), a[0]);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(
            _mm256_add_ps(a[0], a[1]),
            _mm256_add_ps(a[2], a[3]),
        ));
        while i < n {
            sum += *pw.add(i) * *px.add(i);
            i += 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::activation::Q8Act;
    use crate::quant::blocks::{dequantize, quantize_q4_0, quantize_q4_1, quantize_q8_0};
    use crate::quant::GgmlType;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// SIMD kernels equal the references up to float summation order, and the reference
    /// equals dequantize-then-multiply up to the 8-bit rounding of the activations.
    #[test]
    fn quantized_dots_match_reference() {
        for blocks in [1, 3, 18, 48] {
            let n = blocks * 32;
            let w = data(n, 7 + blocks as u32);
            let x = data(n, 99);
            let xq = Q8Act::quantize(&x);
            let row = xq.row(0, blocks);
            type Dot = fn(&[u8], Q8Row) -> f32;
            let cases: [(GgmlType, Vec<u8>, Dot, Dot); 3] = [
                (GgmlType::Q4_1, quantize_q4_1(&w), dot_q4_1, dot_q4_1_ref),
                (GgmlType::Q4_0, quantize_q4_0(&w), dot_q4_0, dot_q4_0_ref),
                (GgmlType::Q8_0, quantize_q8_0(&w), dot_q8_0, dot_q8_0_ref),
            ];
            for (dt, bytes, fast, reference) in cases {
                let (a, b) = (fast(&bytes, row), reference(&bytes, row));
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{dt} n={n}: {a} vs {b}"
                );
                let mut wd = vec![0f32; n];
                dequantize(dt, &bytes, &mut wd).unwrap();
                let exact = dot_f32_ref(&wd, &x);
                // 8-bit activations: each term errs by at most |w|·d_x/2, d_x = amax/127.
                let bound: f32 =
                    wd.iter().map(|v| v.abs()).sum::<f32>() * (1.0 / 127.0) * 0.5 + 1e-4;
                assert!(
                    (b - exact).abs() <= bound,
                    "{dt} n={n}: {b} vs {exact} (bound {bound})"
                );
            }
        }
    }

    #[test]
    fn four_token_dots_match_single_dots() {
        for blocks in [1, 5, 18] {
            let n = blocks * 32;
            let w = data(n, 3);
            let acts: Vec<Q8Act> = (0..4).map(|i| Q8Act::quantize(&data(n, 10 + i))).collect();
            let rows = [0, 1, 2, 3].map(|i| acts[i].row(0, blocks));
            type Dot = fn(&[u8], Q8Row) -> f32;
            let cases: [(Vec<u8>, Dot4, Dot); 3] = [
                (quantize_q4_1(&w), dot4_q4_1, dot_q4_1_ref),
                (quantize_q4_0(&w), dot4_q4_0, dot_q4_0_ref),
                (quantize_q8_0(&w), dot4_q8_0, dot_q8_0_ref),
            ];
            for (bytes, four, one) in cases {
                let got = four(&bytes, rows);
                for t in 0..4 {
                    let want = one(&bytes, rows[t]);
                    assert!(
                        (got[t] - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "n={n} t={t}: {} vs {want}",
                        got[t]
                    );
                }
            }
        }
    }

    #[test]
    fn f32_dot_matches_reference_on_odd_lengths() {
        for n in [0, 1, 7, 8, 31, 33, 100, 577] {
            let (w, x) = (data(n, 1), data(n, 2));
            let (a, b) = (dot_f32(&w, &x), dot_f32_ref(&w, &x));
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "n={n}: {a} vs {b}");
        }
    }

    #[test]
    fn f32_dot_hand_checked() {
        // 1·4 + 2·5 + 3·6 = 32
        assert_eq!(dot_f32(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
    }
}
