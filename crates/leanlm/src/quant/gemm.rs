//! Dense f32 matrix products through the `gemm` crate (the kernel candle uses), with the
//! shapes checked here so that callers never pass raw strides.

use gemm::{gemm, Parallelism};

/// Element types the kernel handles (f32 for activations, f64 for the solvers).
pub trait Scalar: Copy + PartialEq + 'static + std::ops::MulAssign {
    const ZERO: Self;
    const ONE: Self;
}
impl Scalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}
impl Scalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// Row-major view of an `rows × cols` matrix, optionally read transposed.
pub struct View<'a, T = f32> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    /// Distance between consecutive rows in `data` (≥ cols; more for a sub-matrix).
    pub stride: usize,
    pub transposed: bool,
}

impl<T> Clone for View<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for View<'_, T> {}

impl<'a, T> View<'a, T> {
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "gemm view shape");
        Self {
            data,
            rows,
            cols,
            stride: cols,
            transposed: false,
        }
    }

    /// Rows `r0..r0 + rows`, columns `c0..c0 + cols` of a row-major matrix whose rows are
    /// `stride` apart.
    pub fn block(
        data: &'a [T],
        stride: usize,
        r0: usize,
        rows: usize,
        c0: usize,
        cols: usize,
    ) -> Self {
        assert!(c0 + cols <= stride, "gemm block columns");
        let start = r0 * stride + c0;
        let end = if rows == 0 {
            start
        } else {
            start + (rows - 1) * stride + cols
        };
        assert!(end <= data.len(), "gemm block rows");
        Self {
            data: &data[start..end],
            rows,
            cols,
            stride,
            transposed: false,
        }
    }
    pub fn t(self) -> Self {
        Self {
            transposed: !self.transposed,
            ..self
        }
    }
    /// Shape as read.
    fn shape(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }
    /// (row stride, column stride) as read.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.stride as isize)
        } else {
            (self.stride as isize, 1)
        }
    }
}

/// `c = beta·c + a·b` with `c` row-major `m × n` (`beta` 0 overwrites), on all worker
/// threads when the product is large enough to share.
pub fn matmul<T: Scalar>(a: View<T>, b: View<T>, c: &mut [T], beta: T) {
    product(a, b, c, beta, true)
}

/// [`matmul`] on the calling thread only, for callers that already run products in
/// parallel tasks.
pub fn matmul_serial<T: Scalar>(a: View<T>, b: View<T>, c: &mut [T], beta: T) {
    product(a, b, c, beta, false)
}

fn product<T: Scalar>(a: View<T>, b: View<T>, c: &mut [T], beta: T, share: bool) {
    let (m, k) = a.shape();
    let (k2, n) = b.shape();
    assert_eq!(k, k2, "gemm inner dimensions");
    assert_eq!(c.len(), m * n, "gemm output shape");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.iter_mut().for_each(|v| *v *= beta);
        return;
    }
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let threads = rayon::current_num_threads();
    let par = if share && threads > 1 && m * n * k > 1 << 16 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: every pointer spans exactly the matrix its shape and strides describe; the
    // lengths were checked above, and `c` does not alias `a` or `b` (borrow rules).
    unsafe {
        gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != T::ZERO,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            beta,
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn transpose(x: &[f32], r: usize, c: usize) -> Vec<f32> {
        let mut t = vec![0f32; x.len()];
        for i in 0..r {
            for j in 0..c {
                t[j * r + i] = x[i * c + j];
            }
        }
        t
    }

    #[test]
    fn every_transpose_combination_matches_the_naive_product() {
        let (m, k, n) = (37, 19, 53);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0)
            .collect();
        let want = naive(&a, &b, m, k, n);
        let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
        for (av, bv) in [
            (View::new(&a, m, k), View::new(&b, k, n)),
            (View::new(&at, k, m).t(), View::new(&b, k, n)),
            (View::new(&a, m, k), View::new(&bt, n, k).t()),
            (View::new(&at, k, m).t(), View::new(&bt, n, k).t()),
        ] {
            let mut c = vec![1.0f32; m * n];
            matmul(av, bv, &mut c, 0.0);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4);
            }
            // Accumulate: c = 2·c + a·b = 3·want.
            matmul(av, bv, &mut c, 2.0);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - 3.0 * y).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn block_views_read_sub_matrices() {
        // A = 3×4 holding 0..12; the block rows 1..3, columns 1..3 is [[5, 6], [9, 10]].
        let a: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let blk = View::block(&a, 4, 1, 2, 1, 2);
        let id = [1.0f32, 0.0, 0.0, 1.0];
        let mut c = vec![0f32; 4];
        matmul(blk, View::new(&id, 2, 2), &mut c, 0.0);
        assert_eq!(c, [5.0, 6.0, 9.0, 10.0]);
        matmul(blk.t(), View::new(&id, 2, 2), &mut c, 0.0);
        assert_eq!(c, [5.0, 9.0, 6.0, 10.0]);
    }
}
