//! 8- and 16-bit quantization of activations. A matrix product with quantized weights
//! quantizes its input once per call (as llama.cpp does) so that the inner loop is an
//! integer dot product: x ≈ d·q per block of 32, with s = d·Σq kept for formats that carry
//! an offset.
//!
//! Sixteen-bit activations are two such vectors: x ≈ d·hi + (d/256)·lo, where `lo`
//! rounds what `hi` left over. Every kernel is linear in its activations, so a product
//! with 16-bit activations is the sum of two 8-bit products (and a fused kernel can add
//! 256·(w·hi) + (w·lo) in integers, since both halves share the block scale).

use std::sync::atomic::{AtomicBool, Ordering};

use super::blocks::QK;

/// How finely a matrix product rounds its input before the integer kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 8 bits per value and block of 32 (llama.cpp's choice): fastest, and near-ties of a
    /// small model's logits can flip.
    Int8,
    /// 16 bits (two 8-bit halves): twice the integer multiplies (decode 6–26% slower
    /// here, prompts about half as fast); the greedy tokens of the same weights in f32.
    Int16,
}

static SIXTEEN_BITS: AtomicBool = AtomicBool::new(false);

impl Precision {
    /// What new models start with: [`Precision::Int8`] unless the process chose otherwise
    /// (the CLI's `--activations`).
    pub fn process_default() -> Self {
        match SIXTEEN_BITS.load(Ordering::Relaxed) {
            true => Precision::Int16,
            false => Precision::Int8,
        }
    }

    /// Set what [`Precision::process_default`] returns from now on.
    pub fn set_process_default(p: Self) {
        SIXTEEN_BITS.store(p == Precision::Int16, Ordering::Relaxed);
    }
}

/// A vector (or a batch of vectors) quantized to 8 bits in blocks of 32.
#[derive(Default, Clone)]
pub struct Q8Act {
    pub qs: Vec<i8>,
    /// Scale of each block.
    pub d: Vec<f32>,
    /// d·Σq of each block.
    pub s: Vec<f32>,
    /// d·Σq of each half block (16 values): the offsets of formats with a minimum per
    /// 16 weights, computed once here instead of once per weight row.
    pub h: Vec<f32>,
}

impl Q8Act {
    /// Quantize `x`, whose length must be a multiple of 32 (checked by the caller's shapes).
    pub fn quantize(x: &[f32]) -> Self {
        let mut a = Self::default();
        a.quantize_into(x);
        a
    }

    pub fn quantize_into(&mut self, x: &[f32]) {
        debug_assert_eq!(x.len() % QK, 0);
        let nb = x.len() / QK;
        self.qs.resize(x.len(), 0);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        #[cfg(target_arch = "x86_64")]
        if super::simd::has_avx2() {
            // SAFETY: AVX2 was detected; the kernel reads and writes within the slices (the
            // plain loop called libm's round once per value).
            unsafe { quantize_blocks_avx2(x, &mut self.qs, &mut self.d, &mut self.s) };
        } else {
            quantize_blocks(x, &mut self.qs, &mut self.d, &mut self.s);
        }
        self.half_sums();
    }

    /// [`Q8Act::h`] from the quantized values.
    fn half_sums(&mut self) {
        self.h.clear();
        self.h
            .extend(self.qs.chunks_exact(QK / 2).enumerate().map(|(i, q)| {
                let sum: i32 = q.iter().map(|&v| v as i32).sum();
                self.d[i / 2] * sum as f32
            }));
    }

    /// The two halves of 16-bit activations for `x` (whose length must be a multiple of
    /// 32): `hi` as [`Q8Act::quantize`], `lo` = round((x − d·hi)·256/d) with scale d/256.
    pub fn quantize_split(x: &[f32]) -> (Self, Self) {
        let hi = Self::quantize(x);
        let mut lo = Self {
            qs: vec![0; x.len()],
            d: hi.d.iter().map(|d| d / 256.0).collect(),
            s: vec![0.0; hi.d.len()],
            h: Vec::new(),
        };
        for (b, (xb, (hb, lb))) in x
            .chunks_exact(QK)
            .zip(hi.qs.chunks_exact(QK).zip(lo.qs.chunks_exact_mut(QK)))
            .enumerate()
        {
            let d = hi.d[b];
            let id = if d > 0.0 { 256.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for ((&v, &h), l) in xb.iter().zip(hb).zip(lb.iter_mut()) {
                // |v − d·h| ≤ d/2, so the value is within [−128, 128]; the kernels take
                // [−127, 127] (as for `hi`), so a tie saturates: an error of d/256.
                *l = round_i8((v - d * h as f32) * id);
                sum += *l as i32;
            }
            lo.s[b] = lo.d[b] * sum as f32;
        }
        lo.half_sums();
        (hi, lo)
    }

    /// Blocks `[from, to)`: one row of a batch.
    pub fn row(&self, row: usize, blocks_per_row: usize) -> Q8Row<'_> {
        let (b0, b1) = (row * blocks_per_row, (row + 1) * blocks_per_row);
        Q8Row {
            qs: &self.qs[b0 * QK..b1 * QK],
            d: &self.d[b0..b1],
            s: &self.s[b0..b1],
            h: &self.h[2 * b0..2 * b1],
        }
    }
}

/// `t` clamped to [−127, 127] and rounded half away from zero as `round` does, in a form
/// that vectorizes.
#[inline]
pub(crate) fn round_i8(t: f32) -> i8 {
    let t = t.clamp(-127.0, 127.0);
    (t + 0.49999997f32.copysign(t)) as i8
}

/// x ≈ d·q per block of 32, d = max|x|/127, q rounded half away from zero.
fn quantize_blocks(x: &[f32], qs: &mut [i8], ds: &mut [f32], sums: &mut [f32]) {
    for (((blk, q), d), s) in x
        .chunks_exact(QK)
        .zip(qs.chunks_exact_mut(QK))
        .zip(ds.iter_mut())
        .zip(sums.iter_mut())
    {
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        *d = amax / 127.0;
        let id = if *d > 0.0 { 1.0 / *d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in q.iter_mut().zip(blk) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        *s = *d * sum as f32;
    }
}

/// [`quantize_blocks`] with AVX2: the same scale and the same rounding (half away from
/// zero: truncate t + copysign(0.5⁻, t), as compilers lower `round`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_blocks_avx2(x: &[f32], qs: &mut [i8], ds: &mut [f32], sums: &mut [f32]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let below_half = _mm256_set1_ps(0.49999997);
    for (b, blk) in x.chunks_exact(QK).enumerate() {
        let p = blk.as_ptr();
        let v = [0, 8, 16, 24].map(|k| _mm256_loadu_ps(p.add(k)));
        let a = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let q = v.map(|v| {
            let t = _mm256_mul_ps(v, id);
            let t = _mm256_add_ps(t, _mm256_or_ps(_mm256_and_ps(t, sign), below_half));
            _mm256_cvttps_epi32(t)
        });
        // i32 → i8 with the lane order the packs scramble put back.
        let q16 = [
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        ];
        let q8 = _mm256_packs_epi16(q16[0], q16[1]);
        let q8 = _mm256_permutevar8x32_epi32(q8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(qs.as_mut_ptr().add(b * QK) as *mut __m256i, q8);
        let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        ds[b] = d;
        sums[b] = d * _mm_cvtsi128_si32(s) as f32;
    }
}

/// A borrowed view of one quantized vector.
#[derive(Clone, Copy)]
pub struct Q8Row<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
    /// d·Σq of each half block.
    pub h: &'a [f32],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_hand_checked() {
        // amax = 127 so d = 1 and every value rounds to itself.
        let mut x = vec![0f32; 32];
        x[0] = 127.0;
        x[1] = -3.0;
        x[2] = 2.4;
        let a = Q8Act::quantize(&x);
        assert_eq!(a.d, vec![1.0]);
        assert_eq!(&a.qs[..3], &[127, -3, 2]);
        assert_eq!(a.s, vec![126.0]);
        assert_eq!(a.h, vec![126.0, 0.0]);
    }

    #[test]
    fn simd_quantization_equals_the_plain_loop() {
        // Ties (x·id exactly k + 0.5), values just below a tie, zeros and a long ramp.
        let mut x: Vec<f32> = (0..32 * 9)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37)
            .collect();
        x[..32].copy_from_slice(&std::array::from_fn::<f32, 32, _>(|i| i as f32 * 0.5 - 8.0));
        x[0] = 127.0;
        x[32..64]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = 0.49999997 * (i as f32 - 16.0));
        x[64..96].fill(0.0);
        let mut want = Q8Act::default();
        want.qs.resize(x.len(), 0);
        want.d.resize(x.len() / QK, 0.0);
        want.s.resize(x.len() / QK, 0.0);
        quantize_blocks(&x, &mut want.qs, &mut want.d, &mut want.s);
        let got = Q8Act::quantize(&x);
        assert_eq!(got.qs, want.qs);
        assert_eq!(got.d, want.d);
        assert_eq!(got.s, want.s);
        assert_eq!(&got.qs[..4], &[127, -8, -7, -7]); // −7.5 and −6.5 round away from zero
    }

    /// hi + lo/256 is within d/512 of x (d/256 where a tie saturates), far inside 8-bit's
    /// d/2.
    #[test]
    fn split_halves_reconstruct_sixteen_bits() {
        let mut x = crate::quant::test_data(32 * 7, 11);
        x[32..64].fill(0.0);
        x[70] = 5.0; // one large value sets its block's scale
        let (hi, lo) = Q8Act::quantize_split(&x);
        for (b, xb) in x.chunks_exact(QK).enumerate() {
            let d = hi.d[b];
            assert_eq!(lo.d[b], d / 256.0);
            let mut sum = 0f32;
            for (j, &v) in xb.iter().enumerate() {
                let (h, l) = (hi.qs[b * QK + j] as f32, lo.qs[b * QK + j] as f32);
                sum += l;
                let back = d * h + lo.d[b] * l;
                let err = (back - v).abs();
                // Within half a step of lo, except where a tie saturated at ±127.
                let saturated = l.abs() == 127.0 && err <= d / 256.0 + 1e-7;
                assert!(
                    err <= d / 512.0 * 1.0001 + 1e-7 || saturated,
                    "{v} vs {back}"
                );
            }
            assert_eq!(lo.s[b], lo.d[b] * sum);
        }
    }

    #[test]
    fn zero_block_has_zero_scale() {
        let a = Q8Act::quantize(&[0f32; 64]);
        assert_eq!(a.d, vec![0.0, 0.0]);
        assert!(a.qs.iter().all(|&q| q == 0));
    }
}
