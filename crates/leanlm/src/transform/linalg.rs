//! Small dense linear algebra in f64 for the second-order solvers (SparseGPT): Cholesky
//! factors and triangular inverses of symmetric positive-definite matrices, row-major.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::quant::gemm::{self, View};

/// Panel width of the blocked factorizations: large enough for GEMM to pay off, small
/// enough that the unblocked diagonal work stays negligible.
const PANEL: usize = 64;

/// Lower Cholesky factor `L` of `a` (`a = L·Lᵀ`), `n × n` row-major. Left-looking and
/// blocked: each panel of columns is first updated by one matrix product with the panels
/// before it, then factored.
pub fn cholesky_lower(a: &[f64], n: usize) -> Result<Vec<f64>> {
    assert_eq!(a.len(), n * n, "cholesky shape");
    let mut l = a.to_vec();
    // Only the lower triangle is read and written; clear the upper one at the end.
    for k0 in (0..n).step_by(PANEL) {
        let k1 = (k0 + PANEL).min(n);
        let w = k1 - k0;
        if k0 > 0 {
            // A[k0.., k0..k1] -= L[k0.., ..k0] · L[k0..k1, ..k0]ᵀ
            let mut upd = vec![0f64; (n - k0) * w];
            gemm::matmul(
                View::block(&l, n, k0, n - k0, 0, k0),
                View::block(&l, n, k0, w, 0, k0).t(),
                &mut upd,
                0.0,
            );
            for (i, row) in upd.chunks_exact(w).enumerate() {
                for (j, v) in row.iter().enumerate() {
                    l[(k0 + i) * n + k0 + j] -= v;
                }
            }
        }
        // Diagonal block, unblocked.
        for i in k0..k1 {
            for j in k0..=i {
                let s = l[i * n + j] - (k0..j).map(|k| l[i * n + k] * l[j * n + k]).sum::<f64>();
                if i == j {
                    // NaN fails too.
                    if s.is_nan() || s <= 0.0 {
                        return Err(Error::InvalidInput(format!(
                            "matrix is not positive definite (pivot {i} is {s:e}); \
                             more dampening or calibration data would help"
                        )));
                    }
                    l[i * n + i] = s.sqrt();
                } else {
                    l[i * n + j] = s / l[j * n + j];
                }
            }
        }
        // Rows below: L[i, k0..k1] solves L_KK · L[i, k0..k1]ᵀ = A[i, k0..k1]ᵀ.
        let diag: Vec<f64> = l[k0 * n..k1 * n].to_vec();
        l[k1 * n..].par_chunks_mut(n).for_each(|row| {
            for j in 0..w {
                let djr = &diag[j * n + k0..j * n + k0 + j];
                let s = row[k0 + j]
                    - djr
                        .iter()
                        .zip(&row[k0..k0 + j])
                        .map(|(a, b)| a * b)
                        .sum::<f64>();
                row[k0 + j] = s / diag[j * n + k0 + j];
            }
        });
    }
    for i in 0..n {
        for j in i + 1..n {
            l[i * n + j] = 0.0;
        }
    }
    Ok(l)
}

/// Inverse of a lower-triangular `l` (also lower-triangular), by row panels: with
/// `X = L⁻¹`, `X[I, ..I] = −L_II⁻¹ · (L[I, ..I] · X[..I, ..I])` and `X_II = L_II⁻¹`.
pub fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0f64; n * n];
    for k0 in (0..n).step_by(PANEL) {
        let k1 = (k0 + PANEL).min(n);
        let w = k1 - k0;
        // Inverse of the diagonal block by forward substitution, column by column.
        let mut dinv = vec![0f64; w * w];
        for j in 0..w {
            dinv[j * w + j] = 1.0 / l[(k0 + j) * n + k0 + j];
            for i in j + 1..w {
                let s: f64 = (j..i)
                    .map(|k| l[(k0 + i) * n + k0 + k] * dinv[k * w + j])
                    .sum();
                dinv[i * w + j] = -s / l[(k0 + i) * n + k0 + i];
            }
        }
        if k0 > 0 {
            // T = L[I, ..k0] · X[..k0, ..k0]; X[I, ..k0] = −L_II⁻¹ · T
            let mut t = vec![0f64; w * k0];
            gemm::matmul(
                View::block(l, n, k0, w, 0, k0),
                View::block(&x, n, 0, k0, 0, k0),
                &mut t,
                0.0,
            );
            let mut xi = vec![0f64; w * k0];
            gemm::matmul(View::new(&dinv, w, w), View::new(&t, w, k0), &mut xi, 0.0);
            for i in 0..w {
                for j in 0..k0 {
                    x[(k0 + i) * n + j] = -xi[i * k0 + j];
                }
            }
        }
        for i in 0..w {
            x[(k0 + i) * n + k0..(k0 + i) * n + k1].copy_from_slice(&dinv[i * w..(i + 1) * w]);
        }
    }
    x
}

/// Upper Cholesky factor `U` of `a⁻¹` (`a⁻¹ = Uᵀ·U`), the form SparseGPT's column
/// sweep reads. With `J` the order-reversing permutation and `J·a·J = L'·L'ᵀ`, one has
/// `a⁻¹ = (J·L'⁻¹·J)ᵀ·(J·L'⁻¹·J)`, so one factorization and one triangular inverse suffice.
pub fn inverse_upper_cholesky(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let flip = |m: &[f64]| -> Vec<f64> {
        let mut f = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                f[i * n + j] = m[(n - 1 - i) * n + (n - 1 - j)];
            }
        }
        f
    };
    let l = cholesky_lower(&flip(a), n)?;
    Ok(flip(&lower_inverse(&l, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        let mut c = vec![0f64; n * n];
        for i in 0..n {
            for k in 0..n {
                for j in 0..n {
                    c[i * n + j] += a[i * n + k] * b[k * n + j];
                }
            }
        }
        c
    }

    fn transpose(a: &[f64], n: usize) -> Vec<f64> {
        (0..n * n).map(|k| a[(k % n) * n + k / n]).collect()
    }

    /// A random-looking SPD matrix: B·Bᵀ + I.
    fn spd(n: usize) -> Vec<f64> {
        let b: Vec<f64> = (0..n * n)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) / 7.0)
            .collect();
        let mut a = matmul(&b, &transpose(&b, n), n);
        for i in 0..n {
            a[i * n + i] += 1.0;
        }
        a
    }

    fn assert_identity(m: &[f64], n: usize) {
        for i in 0..n {
            for j in 0..n {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!(
                    (m[i * n + j] - want).abs() < 1e-8,
                    "({i},{j}) = {}",
                    m[i * n + j]
                );
            }
        }
    }

    #[test]
    fn cholesky_on_a_hand_checked_matrix() {
        // [[4, 2], [2, 5]] = [[2, 0], [1, 2]] · [[2, 1], [0, 2]]
        let l = cholesky_lower(&[4.0, 2.0, 2.0, 5.0], 2).unwrap();
        assert_eq!(l, [2.0, 0.0, 1.0, 2.0]);
        assert!(cholesky_lower(&[1.0, 2.0, 2.0, 1.0], 2).is_err());
        assert!(cholesky_lower(&[f64::NAN], 1).is_err());
    }

    #[test]
    fn factors_and_inverses_reproduce_the_identity() {
        for n in [9, 64, 150] {
            let a = spd(n);
            let l = cholesky_lower(&a, n).unwrap();
            let back = matmul(&l, &transpose(&l, n), n);
            for (x, y) in back.iter().zip(&a) {
                assert!((x - y).abs() < 1e-9);
            }
            assert_identity(&matmul(&lower_inverse(&l, n), &l, n), n);
            // Uᵀ·U = a⁻¹, U upper-triangular with a positive diagonal.
            let u = inverse_upper_cholesky(&a, n).unwrap();
            for i in 0..n {
                assert!(u[i * n + i] > 0.0);
                for j in 0..i {
                    assert_eq!(u[i * n + j], 0.0);
                }
            }
            let inv = matmul(&transpose(&u, n), &u, n);
            assert_identity(&matmul(&inv, &a, n), n);
        }
    }
}
