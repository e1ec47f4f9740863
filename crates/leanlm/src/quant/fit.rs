//! Choosing a block's scale (and offset) by weighted least squares.
//!
//! Round-to-nearest from the block's extremes wastes levels on outliers. Instead we try a
//! few candidate grids around the extremes, round every value on each, solve for the
//! scale (and offset) that minimise Σ wᵢ (xᵢ − x̂ᵢ)² given those levels, and keep the best.
//! The weights are 1 for plain quantization, or an importance matrix (the mean square of
//! each input column's activation, so that the error is measured where the layer's output
//! feels it, as llama.cpp's imatrix does).

/// Candidate grids tried on each side of the extremes' grid.
const STEPS: i32 = 9;
/// Relative change of the levels per step.
const STEP: f32 = 0.1;

/// x ≈ d·q with integer q in `[-nmax, nmax - 1]`. Returns `d` and the levels.
pub fn fit_symmetric(x: &[f32], w: &[f32], nmax: i32, q: &mut [i8]) -> f32 {
    debug_assert_eq!(x.len(), w.len());
    // The value of largest magnitude, with its sign: it is mapped to −nmax, the long end.
    let max = x
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    if max == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let round = |v: f32, iscale: f32| (v * iscale).round().clamp(-nmax as f32, (nmax - 1) as f32);
    let mut best = (f32::INFINITY, 0f32, 0f32);
    for k in -STEPS..=STEPS {
        let iscale = -(nmax as f32 + STEP * k as f32) / max;
        let (mut sxq, mut sqq) = (0f32, 0f32);
        for (&v, &wi) in x.iter().zip(w) {
            let l = round(v, iscale);
            sxq += wi * v * l;
            sqq += wi * l * l;
        }
        if sqq <= 0.0 {
            continue;
        }
        let d = sxq / sqq;
        // Σ w (x − d l)² = Σ w x² − (Σ w x l)² / Σ w l² at the optimal d: compare the part
        // that depends on the grid.
        let gain = sxq * d;
        if -gain < best.0 {
            best = (-gain, d, iscale);
        }
    }
    let (_, d, iscale) = best;
    for (l, &v) in q.iter_mut().zip(x) {
        *l = round(v, iscale) as i8;
    }
    d
}

/// x ≈ d·q + m with integer q in `[0, nmax]`; with `min_le_zero` the offset is kept ≤ 0
/// (Q4_K stores it as a subtracted non-negative minimum). Returns `(d, m)`.
pub fn fit_affine(x: &[f32], w: &[f32], nmax: u8, min_le_zero: bool) -> (f32, f32) {
    debug_assert_eq!(x.len(), w.len());
    let mut lo = x.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    let hi = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if min_le_zero {
        lo = lo.min(0.0);
    }
    if hi <= lo {
        return (0.0, lo);
    }
    let n = nmax as f32;
    let err = |d: f32, m: f32| -> f32 {
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        x.iter()
            .zip(w)
            .map(|(&v, &wi)| {
                let l = ((v - m) * id).round().clamp(0.0, n);
                let e = v - (d * l + m);
                wi * e * e
            })
            .sum()
    };
    let mut best = ((hi - lo) / n, lo);
    let mut best_err = err(best.0, best.1);
    for k in -STEPS..=STEPS {
        let iscale = (n + STEP * k as f32) / (hi - lo);
        let (mut sw, mut sl, mut sll, mut sx, mut slx) = (0f32, 0f32, 0f32, 0f32, 0f32);
        for (&v, &wi) in x.iter().zip(w) {
            let l = ((v - lo) * iscale).round().clamp(0.0, n);
            sw += wi;
            sl += wi * l;
            sll += wi * l * l;
            sx += wi * v;
            slx += wi * l * v;
        }
        let det = sw * sll - sl * sl;
        if det <= 0.0 {
            continue;
        }
        let mut d = (sw * slx - sl * sx) / det;
        let mut m = (sll * sx - sl * slx) / det;
        if min_le_zero && m > 0.0 {
            m = 0.0;
            d = slx / sll;
        }
        if d <= 0.0 {
            continue;
        }
        let e = err(d, m);
        if e < best_err {
            best_err = e;
            best = (d, m);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(x: &[f32], y: impl Iterator<Item = f32>) -> f32 {
        x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum()
    }

    /// Values already on a grid are recovered exactly.
    #[test]
    fn grid_values_are_fitted_exactly() {
        let x: Vec<f32> = (0..16).map(|i| (i as f32 - 8.0) * 0.25).collect();
        let w = vec![1.0; 16];
        let mut q = vec![0i8; 16];
        let d = fit_symmetric(&x, &w, 8, &mut q);
        let got: Vec<f32> = q.iter().map(|&l| l as f32 * d).collect();
        assert!(sse(&x, got.into_iter()) < 1e-10);

        let x: Vec<f32> = (0..16).map(|i| i as f32 * 0.5 - 1.0).collect();
        let (d, m) = fit_affine(&x, &w, 15, false);
        assert!((d - 0.5).abs() < 1e-5 && (m + 1.0).abs() < 1e-5, "{d} {m}");
    }

    /// The search is never worse than the extremes' grid (that grid is one of its
    /// candidates) and, over many blocks, better.
    #[test]
    fn search_never_loses_to_round_to_nearest() {
        let (mut fitted_total, mut rtn_total) = (0f32, 0f32);
        let mut s = 1u32;
        for _ in 0..200 {
            let x: Vec<f32> = (0..32)
                .map(|_| {
                    s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                    ((s >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0).powi(3)
                })
                .collect();
            let w = vec![1.0; 32];
            let mut q = vec![0i8; 32];
            let d = fit_symmetric(&x, &w, 8, &mut q);
            let fitted = sse(&x, q.iter().map(|&l| l as f32 * d));
            let max = x
                .iter()
                .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            let d0 = max / -8.0;
            let rtn = sse(
                &x,
                x.iter().map(|&v| (v / d0).round().clamp(-8.0, 7.0) * d0),
            );
            assert!(fitted <= rtn * (1.0 + 1e-5), "{fitted} vs {rtn}");
            fitted_total += fitted;
            rtn_total += rtn;
        }
        assert!(fitted_total < rtn_total, "{fitted_total} vs {rtn_total}");
    }

    /// Weights move the error to where they are large.
    #[test]
    fn weights_steer_the_error() {
        let x: Vec<f32> = (0..32)
            .map(|i| ((i * 13 % 31) as f32 - 15.0) / 7.3)
            .collect();
        let mut w = vec![1.0; 32];
        for v in w.iter_mut().take(4) {
            *v = 1000.0;
        }
        let werr = |d: f32, m: f32, w: &[f32]| -> f32 {
            x.iter()
                .zip(w)
                .map(|(&v, &wi)| {
                    let l = ((v - m) / d).round().clamp(0.0, 15.0);
                    wi * (v - d * l - m).powi(2)
                })
                .sum()
        };
        let (d1, m1) = fit_affine(&x, &[1.0; 32], 15, false);
        let (d2, m2) = fit_affine(&x, &w, 15, false);
        assert!(werr(d2, m2, &w) <= werr(d1, m1, &w));
        let (_, m) = fit_affine(&[0.5, 1.0, 2.0], &[1.0; 3], 15, true);
        assert!(m <= 0.0);
    }
}
