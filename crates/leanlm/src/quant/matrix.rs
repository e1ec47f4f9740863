//! A weight matrix in the form the kernels compute with: quantized blocks read straight
//! from the model file, or dense f32.

use std::sync::Arc;

use rayon::prelude::*;

use super::activation::{Precision, Q8Act};
use super::blocks::{dequantize, QK};
use super::codes;
use super::dot::{
    dot2_q4_0, dot2_q4_1, dot2_q4_k, dot2_q6_k, dot2_q8_0, dot4_q4_0, dot4_q4_1, dot4_q8_0,
    dot_bf16, dot_f16, dot_f32, dot_q4_0, dot_q4_1, dot_q8_0, Dot, Dot2, Dot4,
};
use super::gemm::{self, View};
use super::igemm;
use super::q8k::{self, Q8KAct};
use super::sparse::Sparse;
use super::GgmlType;
use crate::error::{Error, Result};

/// Bytes of quantized data: a window of a memory-mapped file, or owned.
#[derive(Clone)]
pub enum Bytes {
    Mapped {
        map: Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    },
    Owned(Arc<Vec<u8>>),
}

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped { map, start, len } => &map[*start..*start + *len],
            Bytes::Owned(v) => v,
        }
    }
}

/// Storage of a `rows × cols` matrix, row-major (each row is one output feature).
#[derive(Clone)]
pub enum Storage {
    F32(Arc<Vec<f32>>),
    /// Blocks of a type with a kernel ([`KERNEL_TYPES`]); other GGML types are converted
    /// to f32 at load time.
    Quant {
        dtype: GgmlType,
        bytes: Bytes,
    },
    /// Pruned weights without their zeros (8-bit values, see [`super::sparse`]).
    Sparse(Sparse),
}

#[derive(Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub storage: Storage,
}

/// GGML types the kernels compute with directly, as stored.
pub const KERNEL_TYPES: [GgmlType; 12] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q6K,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q5K,
    GgmlType::Q3K,
    GgmlType::Q2K,
];

/// The decode kernels of a type that takes 8-bit activations in blocks of 32: one token,
/// and four sharing each pass over a row. `None` for the types computed with f32
/// activations and for Q4_K and Q6_K, whose 8-bit kernels take blocks of 256
/// ([`q8k::kernels`]).
pub(crate) fn q8_kernels(dtype: GgmlType) -> Option<(Dot, Dot4)> {
    Some(match (dtype, codes::kernels(dtype)) {
        (_, Some(k)) => (k.dot, k.dot4),
        (GgmlType::Q4_1, _) => (dot_q4_1, dot4_q4_1),
        (GgmlType::Q4_0, _) => (dot_q4_0, dot4_q4_0),
        (GgmlType::Q8_0, _) => (dot_q8_0, dot4_q8_0),
        _ => return None,
    })
}

/// Whether a matrix stored as `dtype` in a file is decoded to f32 at load, for want of a
/// kernel that computes with it as stored.
pub fn runs_as_f32(dtype: GgmlType) -> bool {
    dtype != GgmlType::F32 && !KERNEL_TYPES.contains(&dtype)
}

/// Which kernel computes a matrix's products, by the number of input vectors: what
/// [`Matrix::matmul`] dispatches to (for `leanlm info --kernels` and tests).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelPlan {
    /// One vector (decoding a token).
    pub decode: String,
    /// 2 to 31 vectors (verifying drafted tokens, short prompts).
    pub batch: String,
    /// 32 vectors or more (prompts).
    pub prompt: String,
}

/// Rows computed per parallel task: large enough to amortise scheduling, small enough to
/// balance two threads on the narrowest matrix (576 rows).
const ROWS_PER_TASK: usize = 32;

/// From this many tokens on, quantized matrices are decoded to f32 for one GEMM.
const GEMM_MIN_TOKENS: usize = 32;

/// Tokens whose 8-bit activations (~37 KB at width 576) stay cached across a row band.
const TOKENS_PER_TILE: usize = 64;

impl Matrix {
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::Shape {
                what: "dense matrix".into(),
                expected: vec![rows, cols],
                found: vec![data.len()],
            });
        }
        Ok(Self {
            rows,
            cols,
            storage: Storage::F32(Arc::new(data)),
        })
    }

    /// Wrap GGML-encoded bytes. Types without a kernel are decoded to f32 here.
    pub fn from_ggml(rows: usize, cols: usize, dtype: GgmlType, bytes: Bytes) -> Result<Self> {
        let row_bytes = dtype.row_bytes(cols).ok_or_else(|| {
            Error::InvalidInput(format!(
                "{cols} columns is not a whole number of {dtype} blocks"
            ))
        })?;
        if row_bytes.checked_mul(rows) != Some(bytes.as_slice().len()) {
            return Err(Error::Shape {
                what: format!("{dtype} matrix bytes"),
                expected: vec![row_bytes.saturating_mul(rows)],
                found: vec![bytes.as_slice().len()],
            });
        }
        match dtype {
            t if KERNEL_TYPES.contains(&t) => Ok(Self {
                rows,
                cols,
                storage: Storage::Quant { dtype, bytes },
            }),
            _ => {
                let mut data = vec![0f32; rows * cols];
                dequantize(dtype, bytes.as_slice(), &mut data)?;
                Self::from_f32(rows, cols, data)
            }
        }
    }

    pub fn from_sparse(s: Sparse) -> Self {
        Self {
            rows: s.rows,
            cols: s.cols,
            storage: Storage::Sparse(s),
        }
    }

    /// The element type of the values (a sparse matrix's values are Q8_0's).
    pub fn dtype(&self) -> GgmlType {
        match &self.storage {
            Storage::F32(_) => GgmlType::F32,
            Storage::Quant { dtype, .. } => *dtype,
            Storage::Sparse(_) => GgmlType::Q8_0,
        }
    }

    /// The storage's name: the GGML type, or the sparse layout.
    pub fn type_name(&self) -> &'static str {
        match &self.storage {
            Storage::Sparse(s) => s.format.name(),
            _ => self.dtype().name(),
        }
    }

    /// Bytes the kernels stream per full pass over the matrix.
    pub fn nbytes(&self) -> usize {
        match &self.storage {
            Storage::F32(v) => v.len() * 4,
            Storage::Quant { bytes, .. } => bytes.as_slice().len(),
            Storage::Sparse(s) => s.nbytes(),
        }
    }

    /// Decode into dense row-major f32 (for transforms and references).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.storage {
            Storage::F32(v) => v.as_ref().clone(),
            _ => self.to_f32_parallel(),
        }
    }

    /// One row, decoded.
    pub fn row_f32(&self, r: usize) -> Vec<f32> {
        match &self.storage {
            Storage::F32(v) => v[r * self.cols..(r + 1) * self.cols].to_vec(),
            Storage::Quant { dtype, bytes } => {
                let rb = dtype.row_bytes(self.cols).expect("checked at construction");
                let mut out = vec![0f32; self.cols];
                dequantize(*dtype, &bytes.as_slice()[r * rb..(r + 1) * rb], &mut out)
                    .expect("sizes checked at construction");
                out
            }
            Storage::Sparse(s) => {
                let mut out = vec![0f32; self.cols];
                s.decode_row(r, &mut out);
                out
            }
        }
    }

    /// Decoded to dense f32, bands of rows in parallel (prompts' GEMM path).
    fn to_f32_parallel(&self) -> Vec<f32> {
        let cols = self.cols;
        let mut w = vec![0f32; self.rows * cols];
        w.par_chunks_mut(ROWS_PER_TASK * cols)
            .enumerate()
            .for_each(|(task, band)| {
                let r0 = task * ROWS_PER_TASK;
                match &self.storage {
                    Storage::F32(v) => band.copy_from_slice(&v[r0 * cols..r0 * cols + band.len()]),
                    Storage::Quant { dtype, bytes } => {
                        let rb = dtype.row_bytes(cols).expect("checked at construction");
                        let r1 = r0 + band.len() / cols;
                        dequantize(*dtype, &bytes.as_slice()[r0 * rb..r1 * rb], band)
                            .expect("sizes checked at construction");
                    }
                    Storage::Sparse(s) => {
                        for (i, out) in band.chunks_exact_mut(cols).enumerate() {
                            s.decode_row(r0 + i, out);
                        }
                    }
                }
            });
        w
    }

    /// `y = x · Wᵀ` for `n` input vectors: `x` is `n × cols`, `y` is `n × rows`. Where
    /// the kernels round `x` to integers, `precision` says how finely.
    pub fn matmul(&self, x: &[f32], n: usize, y: &mut [f32], precision: Precision) {
        assert_eq!(x.len(), n * self.cols, "matmul input shape");
        assert_eq!(y.len(), n * self.rows, "matmul output shape");
        if precision == Precision::Int8 || !self.rounds_input(n) {
            return self.matmul_q8(x, n, y);
        }
        // 16 bits as two 8-bit halves: x·Wᵀ = hi·Wᵀ + lo·Wᵀ.
        if n < GEMM_MIN_TOKENS {
            let (hi, lo) = Q8Act::quantize_split(x);
            return self.dots_q16(&hi, &lo, n, y);
        }
        // The prompt product quantizes its own input: give it x and, as n more inputs,
        // what x's 8-bit rounding leaves (rounded there with its own scale, as fine as lo).
        let hi = Q8Act::quantize(x);
        let mut both = x.to_vec();
        both.extend(
            x.iter()
                .enumerate()
                .map(|(i, v)| v - hi.d[i / QK] * hi.qs[i] as f32),
        );
        let mut y2 = vec![0f32; 2 * y.len()];
        self.matmul_q8(&both, 2 * n, &mut y2);
        let (a, b) = y2.split_at(y.len());
        for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
            *y = a + b;
        }
    }

    /// The kernels that run for one, a few and many input vectors, on this CPU.
    pub fn plan(&self) -> KernelPlan {
        let isa = super::dot::simd_level()
            .split(',')
            .next()
            .unwrap_or("scalar");
        let t = self.type_name();
        let (decode, batch) = match &self.storage {
            Storage::F32(_) => (format!("f32 dot ({isa})"), "f32 GEMM".to_string()),
            Storage::Quant { dtype, .. } if !self.rounds_input(1) => (
                format!("{dtype} dot, f32 activations ({isa})"),
                format!("{dtype} dot, f32 activations ({isa})"),
            ),
            Storage::Quant { dtype, .. } if q8k::kernels(*dtype).is_some() => (
                format!("{t} dot, 8-bit activations per 256 (Q8_K) or 16-bit per 32 ({isa})"),
                format!("{t} dot, Q8_K activations, 4 vectors per weight pass ({isa})"),
            ),
            _ => (
                format!("{t} dot, 8/16-bit activations ({isa})"),
                format!("{t} dot, 4 vectors per weight pass ({isa})"),
            ),
        };
        let integer = match &self.storage {
            Storage::Quant { dtype, .. } if igemm::supports(*dtype) => igemm::kernel_name(*dtype),
            Storage::Sparse(_) if igemm::supports_sparse() => Some("AVX-512 VNNI"),
            _ => None,
        };
        let prompt = match (&self.storage, integer) {
            (Storage::F32(_), _) => "f32 GEMM".to_string(),
            (_, Some(isa)) => format!("{t} integer GEMM ({isa})"),
            (_, None) => format!("f32 GEMM on {t} decoded per pass"),
        };
        KernelPlan {
            decode,
            batch,
            prompt,
        }
    }

    /// Whether the product of `n` inputs rounds them to 8 bits (the integer kernels), as
    /// opposed to computing with f32 activations.
    fn rounds_input(&self, n: usize) -> bool {
        match &self.storage {
            Storage::F32(_)
            | Storage::Quant {
                dtype: GgmlType::F16 | GgmlType::BF16,
                ..
            } => false,
            Storage::Quant { dtype, .. } => n < GEMM_MIN_TOKENS || igemm::supports(*dtype),
            Storage::Sparse(_) => n < GEMM_MIN_TOKENS || igemm::supports_sparse(),
        }
    }

    /// [`Matrix::matmul`] with 8-bit activations.
    fn matmul_q8(&self, x: &[f32], n: usize, y: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        match &self.storage {
            Storage::F32(w) if n > 1 => {
                // Dense prompts and calibration batches: a blocked GEMM reuses each weight
                // across tokens far better than one dot product per (row, token).
                let (xv, wv) = (View::new(x, n, cols), View::new(w, rows, cols).t());
                gemm::matmul(xv, wv, y, 0.0)
            }
            Storage::Quant { dtype, bytes } if n >= GEMM_MIN_TOKENS && igemm::supports(*dtype) => {
                // Long prompts in integer arithmetic, straight from the blocks.
                let (dtype, bytes) = (*dtype, bytes.as_slice());
                let weights = igemm::Weights::Blocks { dtype, bytes };
                igemm::matmul(weights, rows, cols, x, n, y)
            }
            Storage::Sparse(s) if n >= GEMM_MIN_TOKENS && igemm::supports_sparse() => {
                // As the dense Q8_0 copy of the same values would run.
                igemm::matmul(igemm::Weights::Sparse(s), rows, cols, x, n, y)
            }
            Storage::Quant { .. } | Storage::Sparse(_) if n >= GEMM_MIN_TOKENS => {
                // Long prompts: decoding the blocks once costs O(rows·cols), the product
                // O(rows·cols·n); with enough tokens the f32 GEMM is faster than the 8-bit
                // dot kernels, and exact in the activations.
                let w = self.to_f32_parallel();
                let (xv, wv) = (View::new(x, n, cols), View::new(&w, rows, cols).t());
                gemm::matmul(xv, wv, y, 0.0)
            }
            Storage::F32(w) => {
                let mut yt = vec![0f32; rows * n];
                per_row(&mut yt, n, |r, t| {
                    dot_f32(&w[r * cols..(r + 1) * cols], &x[t * cols..(t + 1) * cols])
                });
                token_major(&yt, rows, n, y);
            }
            Storage::Quant { dtype, bytes } if matches!(dtype, GgmlType::F16 | GgmlType::BF16) => {
                // Half-precision weights meet f32 activations: nothing to quantize.
                let dot = if *dtype == GgmlType::F16 {
                    dot_f16
                } else {
                    dot_bf16
                };
                let (w, rb) = (bytes.as_slice(), 2 * cols);
                let mut yt = vec![0f32; rows * n];
                per_row(&mut yt, n, |r, t| {
                    dot(&w[r * rb..(r + 1) * rb], &x[t * cols..(t + 1) * cols])
                });
                token_major(&yt, rows, n, y);
            }
            Storage::Quant { dtype, .. } if q8k::kernels(*dtype).is_some() => {
                self.dots_q8k(x, n, y)
            }
            Storage::Quant { .. } | Storage::Sparse(_) => self.dots_q8(&Q8Act::quantize(x), n, y),
        }
    }

    /// [`Matrix::dots_q8`] with 16-bit inputs as their two 8-bit halves.
    fn dots_q16(&self, hi: &Q8Act, lo: &Q8Act, n: usize, y: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        let bpr = cols / QK;
        let mut yt = vec![0f32; rows * n];
        match &self.storage {
            Storage::Sparse(s) => per_row(&mut yt, n, |r, t| {
                s.dot(r, hi.row(t, bpr)) + s.dot(r, lo.row(t, bpr))
            }),
            Storage::Quant { dtype, bytes } => {
                let rb = dtype.row_bytes(cols).expect("checked at construction");
                let dot2: Dot2 = match (dtype, codes::kernels(*dtype)) {
                    (_, Some(k)) => k.dot2,
                    (GgmlType::Q4_1, _) => dot2_q4_1,
                    (GgmlType::Q4_0, _) => dot2_q4_0,
                    (GgmlType::Q4K, _) => dot2_q4_k,
                    (GgmlType::Q6K, _) => dot2_q6_k,
                    (GgmlType::Q8_0, _) => dot2_q8_0,
                    (other, None) => unreachable!("{other} takes f32 activations"),
                };
                let w = bytes.as_slice();
                per_row(&mut yt, n, |r, t| {
                    dot2(&w[r * rb..(r + 1) * rb], hi.row(t, bpr), lo.row(t, bpr))
                });
            }
            Storage::F32(_) => unreachable!("f32 weights take f32 activations"),
        }
        token_major(&yt, rows, n, y);
    }

    /// Quantized or sparse weights times `n` quantized inputs, one dot product per (row,
    /// input): decoding and short batches.
    fn dots_q8(&self, xq: &Q8Act, n: usize, y: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        let bpr = cols / QK;
        // Each task owns a band of rows and fills `band[r][t]`; one transpose at the end
        // lays the result out token-major.
        let mut yt = vec![0f32; rows * n];
        match &self.storage {
            Storage::Sparse(s) => per_row(&mut yt, n, |r, t| s.dot(r, xq.row(t, bpr))),
            Storage::Quant { dtype, bytes } => {
                let rb = dtype.row_bytes(cols).expect("checked at construction");
                let (dot, dot4) = q8_kernels(*dtype)
                    .unwrap_or_else(|| unreachable!("{dtype} takes f32 activations"));
                tiles(
                    bytes.as_slice(),
                    rb,
                    n,
                    &mut yt,
                    |t| xq.row(t, bpr),
                    dot,
                    dot4,
                );
            }
            Storage::F32(_) => unreachable!("f32 weights take f32 activations"),
        }
        token_major(&yt, rows, n, y);
    }

    /// [`Matrix::dots_q8`] for the K-quants that take activations in blocks of 256.
    fn dots_q8k(&self, x: &[f32], n: usize, y: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        let Storage::Quant { dtype, bytes } = &self.storage else {
            unreachable!("only block formats take Q8_K activations")
        };
        let (dot, dot4) = q8k::kernels(*dtype).expect("a Q8_K format");
        let rb = dtype.row_bytes(cols).expect("checked at construction");
        let xq = Q8KAct::quantize(x);
        let mut yt = vec![0f32; rows * n];
        let supers = cols / q8k::QK_K;
        tiles(
            bytes.as_slice(),
            rb,
            n,
            &mut yt,
            |t| xq.row(t, supers),
            dot,
            dot4,
        );
        token_major(&yt, rows, n, y);
    }
}

/// `yt[r][t]` = row `r` of `w` (`rb` bytes each) · input `t`, bands of rows in parallel:
/// within a band, tokens in tiles that stay in cache while the band's rows pass over
/// them, and within a tile four tokens share one decoding of each block.
fn tiles<R: Copy>(
    w: &[u8],
    rb: usize,
    n: usize,
    yt: &mut [f32],
    input: impl Fn(usize) -> R + Sync,
    dot: fn(&[u8], R) -> f32,
    dot4: fn(&[u8], [R; 4]) -> [f32; 4],
) {
    yt.par_chunks_mut(ROWS_PER_TASK * n)
        .enumerate()
        .for_each(|(task, band)| {
            for t0 in (0..n).step_by(TOKENS_PER_TILE) {
                let t1 = (t0 + TOKENS_PER_TILE).min(n);
                for (i, out) in band.chunks_exact_mut(n).enumerate() {
                    let r = task * ROWS_PER_TASK + i;
                    let wr = &w[r * rb..(r + 1) * rb];
                    let mut t = t0;
                    while t + 4 <= t1 {
                        let y = dot4(wr, [0, 1, 2, 3].map(|k| input(t + k)));
                        out[t..t + 4].copy_from_slice(&y);
                        t += 4;
                    }
                    for (t, o) in out.iter_mut().enumerate().take(t1).skip(t) {
                        *o = dot(wr, input(t));
                    }
                }
            }
        });
}

/// `yt` (`rows × n`) transposed into `y` (`n × rows`).
fn token_major(yt: &[f32], rows: usize, n: usize, y: &mut [f32]) {
    if n == 1 {
        return y.copy_from_slice(yt);
    }
    for r in 0..rows {
        for t in 0..n {
            y[t * rows + r] = yt[r * n + t];
        }
    }
}

/// Fill `yt` (`rows × n`, row-major) with `f(row, token)`, bands of rows in parallel.
fn per_row(yt: &mut [f32], n: usize, f: impl Fn(usize, usize) -> f32 + Sync) {
    yt.par_chunks_mut(ROWS_PER_TASK * n)
        .enumerate()
        .for_each(|(task, band)| {
            for (i, out) in band.chunks_exact_mut(n).enumerate() {
                let r = task * ROWS_PER_TASK + i;
                for (t, o) in out.iter_mut().enumerate() {
                    *o = f(r, t);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::blocks::{quantize_q4_0, quantize_q4_1, quantize_q8_0};
    use crate::quant::kquants::{quantize_q4_k, quantize_q6_k};

    fn reference(w: &[f32], rows: usize, cols: usize, x: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![0f32; n * rows];
        for t in 0..n {
            for r in 0..rows {
                y[t * rows + r] = (0..cols).map(|c| w[r * cols + c] * x[t * cols + c]).sum();
            }
        }
        y
    }

    /// Test weights and inputs in [-1, 1].
    fn inputs(rows: usize, cols: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let w = (0..rows * cols)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let x = (0..n * cols)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
            .collect();
        (w, x)
    }

    /// `m · x` against the reference on `m`'s decoded weights, within `tol`.
    fn check(m: &Matrix, x: &[f32], n: usize, tol: f32) {
        check_at(m, x, n, tol, Precision::Int8)
    }

    fn check_at(m: &Matrix, x: &[f32], n: usize, tol: f32, precision: Precision) {
        let want = reference(&m.to_f32(), m.rows, m.cols, x, n);
        let mut got = vec![0f32; n * m.rows];
        m.matmul(x, n, &mut got, precision);
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= tol,
                "{} {}x{} n={n}: {a} vs {b}",
                m.dtype(),
                m.rows,
                m.cols
            );
        }
    }

    /// `w` in every kernel type whose block fits `cols`.
    fn quantized(w: &[f32], rows: usize, cols: usize) -> Vec<Matrix> {
        let ones = vec![1f32; w.len()];
        let mut out = vec![
            (GgmlType::Q8_0, quantize_q8_0(w)),
            (GgmlType::Q4_1, quantize_q4_1(w)),
            (GgmlType::Q4_0, quantize_q4_0(w)),
            (
                GgmlType::F16,
                w.iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
            (
                GgmlType::BF16,
                w.iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
        ];
        if cols.is_multiple_of(256) {
            out.push((GgmlType::Q4K, quantize_q4_k(w, &ones)));
            out.push((GgmlType::Q6K, quantize_q6_k(w, &ones)));
        }
        out.into_iter()
            .map(|(dtype, bytes)| {
                let m =
                    Matrix::from_ggml(rows, cols, dtype, Bytes::Owned(Arc::new(bytes))).unwrap();
                assert_eq!(m.dtype(), dtype, "kept as stored");
                m
            })
            .collect()
    }

    /// Odd row counts (not a multiple of the task band) and several batch sizes.
    #[test]
    fn matmul_matches_dense_reference_on_odd_shapes() {
        for (rows, cols, n) in [
            (1, 32, 1),
            (33, 64, 3),
            (70, 96, 5),
            (65, 32, 2),
            (37, 512, 6),
        ] {
            let (w, x) = inputs(rows, cols, n);
            for m in quantized(&w, rows, cols) {
                // 8-bit activations: error ≤ Σ|w|·amax(x)/254 ≤ cols·1·1/254
                check(&m, &x, n, cols as f32 / 254.0);
            }
            check(&Matrix::from_f32(rows, cols, w).unwrap(), &x, n, 1e-4);
        }
    }

    /// Enough tokens for the prompt paths: the integer product (8-bit activations, within
    /// their rounding; `igemm`'s own tests hold it to its exact 8-bit reference) and the
    /// decode-then-GEMM path (exact in the activations: only f32 summation order
    /// separates it from the reference).
    #[test]
    fn long_prompts_through_the_gemm_paths_match_the_reference() {
        let (rows, cols, n) = (45, 256, GEMM_MIN_TOKENS + 3);
        let (w, x) = inputs(rows, cols, n);
        for m in quantized(&w, rows, cols) {
            let integer = matches!(&m.storage, Storage::Quant { dtype, .. } if igemm::supports(*dtype))
                || matches!(&m.storage, Storage::Sparse(_) if igemm::supports_sparse());
            check(&m, &x, n, if integer { cols as f32 / 254.0 } else { 1e-4 });
        }
    }

    /// 16-bit activations, for decode-sized batches (the fused two-half kernels) and
    /// prompts (the prompt product on x and its 8-bit remainder): each term errs by at
    /// most |w|·d_x/256 with d_x ≤ 1/127 here, 256 times inside the 8-bit bound.
    #[test]
    fn sixteen_bit_activations_match_the_reference_on_odd_shapes() {
        for (rows, cols, n) in [(33, 64, 1), (70, 96, 5), (37, 512, 3), (45, 256, 40)] {
            let (w, x) = inputs(rows, cols, n);
            for m in quantized(&w, rows, cols) {
                check_at(
                    &m,
                    &x,
                    n,
                    cols as f32 / (127.0 * 256.0) + 1e-4,
                    Precision::Int16,
                );
            }
        }
    }

    #[test]
    fn bytes_that_do_not_fit_the_shape_are_rejected() {
        let r = Matrix::from_ggml(2, 32, GgmlType::Q8_0, Bytes::Owned(Arc::new(vec![0; 34])));
        assert!(r.is_err());
    }
}
