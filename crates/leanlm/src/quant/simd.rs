//! x86-64 building blocks shared by the dense and sparse kernels.
//!
//! Dense Q8_0 and the sparse layouts hold the same 8-bit values; for their products to be
//! bit-identical (so that greedy decoding gives the same tokens), both reduce two blocks
//! at a time to the same eight integer lanes ([`pair_lanes`]) and scale and accumulate
//! them with the same float operations.
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Whether the dense kernels' AVX2 code runs here (`LEANLM_NO_SIMD` forces the plain
/// references).
pub fn has_avx2() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var_os("LEANLM_NO_SIMD").is_none()
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Whether AVX-512 VNNI runs here, on 512- and 256-bit registers (the integer prompt
/// product, `igemm`, and the decode kernels for 16-bit activations).
pub fn has_vnni() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    })
}

/// Whether the sparse kernels' AVX-512 code (byte permutes, multishift, expand) runs here.
pub fn has_avx512_sparse() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vbmi")
            && is_x86_feature_detected!("avx512vbmi2")
    })
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The f16 at `p` as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn half(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]) as i32;
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
}

/// Σ w·x over 32 signed byte lanes, as 8 i32 sums of 4 consecutive lanes. Exact: values
/// are in [−127, 127], so a pair of products never saturates 16 bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_i8(w: __m256i, x: __m256i) -> __m256i {
    // maddubs wants one unsigned operand: move w's sign onto x.
    let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

/// Two blocks' products as eight integer lanes, each the sum over 8 columns:
/// `[A0-7, A8-15, B0-7, B8-15 | A16-23, A24-31, B16-23, B24-31]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pair_lanes(wa: __m256i, xa: __m256i, wb: __m256i, xb: __m256i) -> __m256i {
    _mm256_hadd_epi32(dot_i8(wa, xa), dot_i8(wb, xb))
}

/// Scales laid out as [`pair_lanes`]' lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pair_scale(sa: f32, sb: f32) -> __m256 {
    _mm256_setr_ps(sa, sa, sb, sb, sa, sa, sb, sb)
}

/// Sixteen bytes of nibbles to 32 unsigned bytes: low nibbles first (elements 0..16),
/// then high nibbles (elements 16..32), the order of the 32-weight GGML blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn unpack_nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let m = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(q, m);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
    _mm256_set_m128i(hi, lo)
}

/// For four vectors of 8 i32 lanes: lanes 0..4 of the result are the sums of lanes 0..4
/// of `p[0]`, …, `p[3]` (the first 16 bytes of each product), lanes 4..8 the sums of
/// their lanes 4..8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn half_sums4(p: &[__m256i]) -> __m256i {
    _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]))
}

/// Lane `j` of the result is the sum of the 8 lanes of `p[j]`: one reduction for eight
/// sub-blocks, so that their scales apply as one vector multiply.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn sums8(p: &[__m256i; 8]) -> __m256i {
    let a = half_sums4(&p[..4]);
    let b = half_sums4(&p[4..]);
    _mm256_add_epi32(
        _mm256_permute2x128_si256(a, b, 0x20),
        _mm256_permute2x128_si256(a, b, 0x31),
    )
}

/// The `n` (≤ 8) f16 values `stride` bytes apart from `p`, as f32, zeros after them.
#[inline(always)]
pub unsafe fn f16x8(p: *const u8, stride: usize, n: usize) -> __m256 {
    let h = |j: usize| -> i16 {
        if j < n {
            let q = p.add(j * stride);
            i16::from_le_bytes([*q, *q.add(1)])
        } else {
            0
        }
    };
    _mm256_cvtph_ps(_mm_setr_epi16(
        h(0),
        h(1),
        h(2),
        h(3),
        h(4),
        h(5),
        h(6),
        h(7),
    ))
}

/// The first `n` (≤ 8) values of `v`, zeros after them.
#[inline(always)]
pub unsafe fn f32x8(v: &[f32], n: usize) -> __m256 {
    if n == 8 {
        _mm256_loadu_ps(v.as_ptr())
    } else {
        let mut pad = [0f32; 8];
        pad[..n].copy_from_slice(&v[..n]);
        _mm256_loadu_ps(pad.as_ptr())
    }
}

/// Eight unsigned bytes (a little-endian word) as f32.
#[inline(always)]
pub unsafe fn widen_u8(v: u64) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v as i64)))
}

/// Sixteen per-16 scales of a super-block (scale `k` covering values 16k..16k+16)
/// reordered for [`half_sums4`]: bytes 0..8 are the scales of 32-value blocks 0..4,
/// their first halves then their second (k = 0, 2, 4, 6, 1, 3, 5, 7), bytes 8..16 the
/// same for blocks 4..8.
#[inline(always)]
pub unsafe fn half_order(v: __m128i) -> __m128i {
    _mm_shuffle_epi8(
        v,
        _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15),
    )
}

/// The 6-bit levels (0..64) of 32-value block `i` (0..8) of the Q6_K super-block at `blk`:
/// half i/4, quarter r = i%4 (low or high nibbles of the first or second 32 low bytes,
/// and bit pair r of the high bytes).
#[inline(always)]
pub unsafe fn q6k_levels(blk: *const u8, i: usize) -> __m256i {
    let (hf, r) = (i / 4, i % 4);
    let low = _mm256_loadu_si256(blk.add(64 * hf + 32 * (r & 1)) as *const __m256i);
    let low = if r < 2 {
        low
    } else {
        _mm256_srli_epi16(low, 4)
    };
    let high = _mm256_loadu_si256(blk.add(128 + 32 * hf) as *const __m256i);
    let high = match r {
        0 => high,
        1 => _mm256_srli_epi16(high, 2),
        2 => _mm256_srli_epi16(high, 4),
        _ => _mm256_srli_epi16(high, 6),
    };
    _mm256_or_si256(
        _mm256_and_si256(low, _mm256_set1_epi8(0x0f)),
        _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(3)), 4),
    )
}
