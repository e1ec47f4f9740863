//! Element-wise exponentials of the forward pass (softmax, SiLU, GELU), eight lanes at a time.
//! A call to libm's `expf` per score took about a quarter of a prompt's time.
//!
//! exp(x) = 2ⁿ·eʳ with n = round(x·log₂e) and r = x − n·ln2 (|r| ≤ ln2/2), eʳ by its
//! degree-7 Taylor polynomial (truncation error < 1e-8 relative), 2ⁿ built in the
//! exponent bits. Inputs are clamped to [−87.3, 88.3], where 2ⁿ stays a normal float.

/// `x ← exp(x − shift)` in place; returns Σ exp(x − shift).
pub(crate) fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd::has_avx2() {
        // SAFETY: AVX2 and FMA were detected.
        return unsafe { x86::exp_shifted_sum(x, shift) };
    }
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - shift).exp();
        sum += *v;
    }
    sum
}

/// `g ← silu(g)·u = g/(1 + e⁻ᵍ)·u` in place (the SwiGLU gate).
pub(crate) fn silu_mul(g: &mut [f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd::has_avx2() {
        // SAFETY: AVX2 and FMA were detected.
        return unsafe { x86::silu_mul(g, u) };
    }
    for (g, u) in g.iter_mut().zip(u) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// √(2/π), GELU's tanh-approximation constant.
const GELU_K: f32 = 0.797_884_6;
/// The cubic coefficient of GELU's tanh approximation.
const GELU_C: f32 = 0.044_715;

/// `g ← gelu(g)·u` in place with GELU's tanh approximation (the GeGLU gate of Gemma):
/// gelu(x) = x/2·(1 + tanh z), z = √(2/π)(x + 0.044715x³), computed as x/(1 + e⁻²ᶻ),
/// which is the same function (1 + tanh z = 2/(1 + e⁻²ᶻ)) with one exponential.
pub(crate) fn gelu_tanh_mul(g: &mut [f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd::has_avx2() {
        // SAFETY: AVX2 and FMA were detected.
        return unsafe { x86::gelu_tanh_mul(g, u) };
    }
    for (g, u) in g.iter_mut().zip(u) {
        *g = gelu_tanh(*g) * u;
    }
}

fn gelu_tanh(x: f32) -> f32 {
    let z = GELU_K * (x + GELU_C * x * x * x);
    x / (1.0 + (-2.0 * z).exp())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
            _mm256_set1_ps(88.3),
        );
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        // r = x − n·ln2, with ln2 split in two so that n·ln2_hi is exact.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let pow2 = _mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
            23,
        );
        _mm256_mul_ps(p, _mm256_castsi256_ps(pow2))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
        let s = _mm256_set1_ps(shift);
        let mut acc = _mm256_setzero_ps();
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), s));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
            acc = _mm256_add_ps(acc, e);
        }
        let mut sum = crate::quant::simd::hsum(acc);
        for v in chunks.into_remainder() {
            let mut lane = [0f32; 8];
            lane[0] = *v - shift;
            _mm256_storeu_ps(lane.as_mut_ptr(), exp8(_mm256_loadu_ps(lane.as_ptr())));
            *v = lane[0];
            sum += lane[0];
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu_mul(g: &mut [f32], u: &[f32]) {
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        while i + 8 <= g.len() {
            let gv = _mm256_loadu_ps(g.as_ptr().add(i));
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
            let y = _mm256_mul_ps(
                _mm256_div_ps(gv, _mm256_add_ps(one, e)),
                _mm256_loadu_ps(u.as_ptr().add(i)),
            );
            _mm256_storeu_ps(g.as_mut_ptr().add(i), y);
            i += 8;
        }
        for (g, u) in g[i..].iter_mut().zip(&u[i..]) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_tanh_mul(g: &mut [f32], u: &[f32]) {
        let (one, k, c) = (
            _mm256_set1_ps(1.0),
            _mm256_set1_ps(-2.0 * super::GELU_K),
            _mm256_set1_ps(super::GELU_C),
        );
        let mut i = 0;
        while i + 8 <= g.len() {
            let x = _mm256_loadu_ps(g.as_ptr().add(i));
            // -2z = -2k·(x + c·x³) = -2k·x·(1 + c·x²)
            let x2 = _mm256_mul_ps(x, x);
            let minus_2z = _mm256_mul_ps(_mm256_mul_ps(k, x), _mm256_fmadd_ps(c, x2, one));
            let e = exp8(minus_2z);
            let y = _mm256_mul_ps(
                _mm256_div_ps(x, _mm256_add_ps(one, e)),
                _mm256_loadu_ps(u.as_ptr().add(i)),
            );
            _mm256_storeu_ps(g.as_mut_ptr().add(i), y);
            i += 8;
        }
        for (g, u) in g[i..].iter_mut().zip(&u[i..]) {
            *g = super::gelu_tanh(*g) * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_tanh_matches_its_definition() {
        // Both orders (eight lanes and the scalar tail) against 0.5·x·(1 + tanh z) in f64.
        let xs: Vec<f32> = (0..4_003).map(|i| -20.0 + i as f32 * 0.01).collect();
        let u: Vec<f32> = (0..xs.len()).map(|i| 0.5 + (i % 7) as f32 * 0.25).collect();
        let mut g = xs.clone();
        gelu_tanh_mul(&mut g, &u);
        for ((x, got), u) in xs.iter().zip(&g).zip(&u) {
            let x = *x as f64;
            let z = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            let want = 0.5 * x * (1.0 + z.tanh()) * *u as f64;
            assert!(
                (*got as f64 - want).abs() < 2e-6 * (1.0 + want.abs()),
                "gelu({x})·{u} = {got}, want {want}"
            );
        }
    }

    #[test]
    fn exponentials_are_within_a_few_ulps_of_libm() {
        // A grid over the whole clamped range, odd length for the scalar tail.
        let xs: Vec<f32> = (0..20_001)
            .map(|i| -87.0 + i as f32 * (175.0 / 20_000.0))
            .collect();
        let mut e = xs.clone();
        exp_shifted_sum(&mut e, 0.0);
        for (x, got) in xs.iter().zip(&e) {
            let want = (*x as f64).exp();
            assert!(
                ((*got as f64 - want) / want).abs() < 4e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        // Softmax-shaped input: the returned sum is the sum of the results.
        let mut scores: Vec<f32> = (0..515).map(|i| i as f32 * -0.05).collect();
        let sum = exp_shifted_sum(&mut scores, -1.0);
        let want: f64 = (0..515).map(|i| (i as f64 * -0.05 + 1.0).exp()).sum();
        assert!(((sum as f64 - want) / want).abs() < 1e-6, "{sum} vs {want}");
        // The shift is subtracted first; far below the range the result is ~0, not NaN.
        let mut v = vec![1.0f32, -200.0, 3.0];
        exp_shifted_sum(&mut v, 3.0);
        assert!((v[0] - (-2f32).exp()).abs() < 1e-7 && v[1] < 1e-37 && v[2] == 1.0);
    }

    #[test]
    fn silu_matches_its_definition() {
        let g: Vec<f32> = (0..1003).map(|i| (i as f32 - 501.0) * 0.2).collect();
        let u: Vec<f32> = (0..1003).map(|i| 1.0 + (i % 7) as f32).collect();
        let mut y = g.clone();
        silu_mul(&mut y, &u);
        for ((g, u), y) in g.iter().zip(&u).zip(&y) {
            let want = *g as f64 / (1.0 + (-*g as f64).exp()) * *u as f64;
            assert!(
                (*y as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "silu({g})·{u} = {y}, want {want}"
            );
        }
    }
}
