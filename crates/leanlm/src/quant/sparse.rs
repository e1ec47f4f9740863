//! Sparse storage of pruned matrices with 8-bit values, and its kernels.
//!
//! Values are quantized exactly as Q8_0 quantizes them (one f16 scale per 32 columns,
//! d = amax/127), so a sparse matrix computes the same products as its dense Q8_0 copy;
//! only the zeros are no longer stored. Two layouts, per block of 32 columns:
//!
//! - **2:4** (`S24_Q8`, 22 bytes against Q8_0's 34): f16 d, 4 bytes of 2-bit positions,
//!   16 values. Each group of 4 columns keeps 2 values; slot k (value k) sits at column
//!   4·(k/2) + position k. Needs at most 2 non-zeros in every group of 4. Blocks are
//!   stored in pairs, `[dA dB | codesA codesB | A slots 0-7, B 0-7, A 8-15, B 8-15]`, so
//!   that one load brings each part of two blocks in the order the kernel reduces them;
//!   an odd last block stands alone as `[d | codes | slots 0-15]`.
//! - **bitmap** (`BITMAP_Q8`, 6 bytes per block + non-zeros): a row holds its blocks'
//!   f16 scales, then their u32 masks of non-zero columns, then the non-zero values in
//!   column order (headers first, so finding a block's values never waits on the
//!   previous block). Rows differ in length, so the matrix starts with `rows + 1` u32
//!   byte offsets of its rows (relative to the end of that table).
//!
//! The kernels gather the activations that meet stored values (2:4: a byte permute over
//! two blocks' activations; bitmap: the values expanded to their columns), so each
//! weight byte is read once, as in the dense kernels.

use std::sync::Arc;

use half::f16;

use super::activation::Q8Row;
use super::blocks::{f16_at, QK};
use super::dot::dot_q8_0;
use super::matrix::Bytes;
use crate::error::{Error, Result};

pub const S24_BLOCK: usize = 22;
const BITMAP_HEADER: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SparseFormat {
    S24Q8,
    BitmapQ8,
}

impl SparseFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::S24Q8 => "S24_Q8",
            Self::BitmapQ8 => "BITMAP_Q8",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::S24Q8, Self::BitmapQ8]
            .into_iter()
            .find(|f| f.name() == s)
    }
}

impl std::fmt::Display for SparseFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated sparse matrix: every offset and count was checked against its bytes, so
/// the kernels may trust them.
#[derive(Clone)]
pub struct Sparse {
    pub format: SparseFormat,
    pub rows: usize,
    pub cols: usize,
    pub bytes: Bytes,
}

/// Where block `b` of a 2:4 row of `nb` blocks keeps its scale, codes, and slots 0-7
/// and 8-15 (see the layout above).
#[derive(Clone, Copy)]
struct S24Pos {
    d: usize,
    codes: usize,
    lo: usize,
    hi: usize,
}

fn s24_pos(b: usize, nb: usize) -> S24Pos {
    let base = b / 2 * 2 * S24_BLOCK;
    if b + 1 == nb && nb % 2 == 1 {
        S24Pos {
            d: base,
            codes: base + 2,
            lo: base + 6,
            hi: base + 14,
        }
    } else {
        let h = b % 2;
        S24Pos {
            d: base + 2 * h,
            codes: base + 4 + 4 * h,
            lo: base + 12 + 8 * h,
            hi: base + 28 + 8 * h,
        }
    }
}

/// Block `b` of a 2:4 row: scale, codes and the 16 values in slot order.
fn s24_block(row: &[u8], b: usize, nb: usize) -> (f32, u32, [i8; 16]) {
    let at = s24_pos(b, nb);
    let mut vals = [0i8; 16];
    for k in 0..8 {
        vals[k] = row[at.lo + k] as i8;
        vals[k + 8] = row[at.hi + k] as i8;
    }
    let codes = u32::from_le_bytes(row[at.codes..at.codes + 4].try_into().expect("4 bytes"));
    (f16_at(row, at.d), codes, vals)
}

/// Scale and mask of block `b` of a bitmap row of `nb` blocks.
fn bitmap_header(row: &[u8], b: usize, nb: usize) -> (f32, u32) {
    let m = 2 * nb + 4 * b;
    (
        f16_at(row, 2 * b),
        u32::from_le_bytes(row[m..m + 4].try_into().expect("4 bytes")),
    )
}

/// Q8_0's scale and levels for one block of 32.
fn q8_block(x: &[f32]) -> (f16, [i8; QK]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0i8; QK];
    for (l, &v) in q.iter_mut().zip(x) {
        *l = (v * id).round() as i8;
    }
    (f16::from_f32(d), q)
}

/// Whether every group of 4 columns of `w` (rows of `cols`) has at most 2 non-zeros.
pub fn is_2_4(w: &[f32]) -> bool {
    w.chunks_exact(4)
        .all(|g| g.iter().filter(|v| **v != 0.0).count() <= 2)
}

/// Bytes each layout takes for `w` (`None` where it cannot hold `w`), and Q8_0's.
pub fn sizes(w: &[f32], rows: usize, cols: usize) -> (usize, Option<usize>, usize) {
    let blocks = w.len() / QK;
    let dense = blocks * 34;
    let s24 = (cols.is_multiple_of(QK) && is_2_4(w)).then_some(blocks * S24_BLOCK);
    let nnz = w.iter().filter(|v| **v != 0.0).count();
    let bitmap = 4 * (rows + 1) + blocks * BITMAP_HEADER + nnz;
    (dense, s24, bitmap)
}

impl Sparse {
    /// Encode row-major `w` (`rows × cols`, cols a multiple of 32) in `format`.
    pub fn encode(format: SparseFormat, w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        if !cols.is_multiple_of(QK) || w.len() != rows * cols {
            return Err(Error::InvalidInput(format!(
                "sparse {format}: {rows}×{cols} with {} values (columns must be a multiple of 32)",
                w.len()
            )));
        }
        let mut out = Vec::new();
        match format {
            SparseFormat::S24Q8 => {
                if !is_2_4(w) {
                    return Err(Error::InvalidInput(
                        "S24_Q8 needs at most 2 non-zeros in every group of 4 columns".into(),
                    ));
                }
                let nb = cols / QK;
                for row in w.chunks_exact(cols) {
                    let mut bytes = vec![0u8; nb * S24_BLOCK];
                    for (b, blk) in row.chunks_exact(QK).enumerate() {
                        let (d, q) = q8_block(blk);
                        let (mut codes, mut vals) = (0u32, [0i8; 16]);
                        for g in 0..8 {
                            // The kept columns' positions; unused slots hold a zero value.
                            let mut slot = 2 * g;
                            for p in 0..4 {
                                if blk[4 * g + p] != 0.0 {
                                    codes |= (p as u32) << (2 * slot);
                                    vals[slot] = q[4 * g + p];
                                    slot += 1;
                                }
                            }
                        }
                        let at = s24_pos(b, nb);
                        bytes[at.d..at.d + 2].copy_from_slice(&d.to_le_bytes());
                        bytes[at.codes..at.codes + 4].copy_from_slice(&codes.to_le_bytes());
                        for k in 0..8 {
                            bytes[at.lo + k] = vals[k] as u8;
                            bytes[at.hi + k] = vals[k + 8] as u8;
                        }
                    }
                    out.extend_from_slice(&bytes);
                }
            }
            SparseFormat::BitmapQ8 => {
                let mut body = Vec::new();
                let mut offsets = Vec::with_capacity(rows + 1);
                for row in w.chunks_exact(cols) {
                    offsets.push(body.len() as u32);
                    let (mut scales, mut masks, mut values) = (Vec::new(), Vec::new(), Vec::new());
                    for blk in row.chunks_exact(QK) {
                        let (d, q) = q8_block(blk);
                        let mask = (0..QK)
                            .filter(|&j| blk[j] != 0.0)
                            .fold(0u32, |m, j| m | (1 << j));
                        scales.extend_from_slice(&d.to_le_bytes());
                        masks.extend_from_slice(&mask.to_le_bytes());
                        values.extend((0..QK).filter(|&j| mask >> j & 1 == 1).map(|j| q[j] as u8));
                    }
                    body.extend_from_slice(&scales);
                    body.extend_from_slice(&masks);
                    body.extend_from_slice(&values);
                }
                offsets.push(body.len() as u32);
                if body.len() > u32::MAX as usize {
                    return Err(Error::InvalidInput("sparse matrix over 4 GiB".into()));
                }
                out.extend(offsets.iter().flat_map(|o| o.to_le_bytes()));
                out.extend_from_slice(&body);
            }
        }
        Self::new(format, rows, cols, Bytes::Owned(Arc::new(out)))
    }

    /// Wrap stored bytes, checking every size and offset so that a hostile file cannot
    /// send a kernel out of bounds.
    pub fn new(format: SparseFormat, rows: usize, cols: usize, bytes: Bytes) -> Result<Self> {
        let bad = |why: String| {
            Err(Error::InvalidInput(format!(
                "{format} {rows}×{cols}: {why}"
            )))
        };
        if rows == 0 || cols == 0 || !cols.is_multiple_of(QK) {
            return bad("columns must be a positive multiple of 32, rows at least 1".into());
        }
        let b = bytes.as_slice();
        let blocks = cols / QK;
        // Every size is checked: a hostile shape must not wrap to a small one.
        let too_large = || bad("the shape is too large for the data".into());
        match format {
            SparseFormat::S24Q8 => {
                let Some(want) = rows
                    .checked_mul(blocks)
                    .and_then(|n| n.checked_mul(S24_BLOCK))
                else {
                    return too_large();
                };
                if b.len() != want {
                    return bad(format!("{} bytes, expected {want}", b.len()));
                }
            }
            SparseFormat::BitmapQ8 => {
                // The row table alone takes 4 bytes a row, so `rows` is bounded by the data.
                let Some(table) = rows.checked_add(1).and_then(|n| n.checked_mul(4)) else {
                    return too_large();
                };
                if b.len() < table {
                    return bad(format!("{} bytes cannot hold the row table", b.len()));
                }
                if blocks
                    .checked_mul(BITMAP_HEADER)
                    .is_none_or(|h| h > b.len())
                {
                    return too_large();
                }
                let off = |r: usize| {
                    u32::from_le_bytes([b[4 * r], b[4 * r + 1], b[4 * r + 2], b[4 * r + 3]])
                        as usize
                };
                let body = &b[table..];
                if off(0) != 0 || off(rows) != body.len() {
                    return bad("row table does not span the data".into());
                }
                for r in 0..rows {
                    let (start, end) = (off(r), off(r + 1));
                    if start > end || end > body.len() {
                        return bad(format!("row {r} runs outside the data"));
                    }
                    // The headers, then exactly as many values as the masks count.
                    if end - start < blocks * BITMAP_HEADER {
                        return bad(format!("row {r} is shorter than its blocks' headers"));
                    }
                    let row = &body[start..end];
                    let p = start
                        + blocks * BITMAP_HEADER
                        + (0..blocks)
                            .map(|b| bitmap_header(row, b, blocks).1.count_ones() as usize)
                            .sum::<usize>();
                    if p != end {
                        return bad(format!("row {r}'s blocks do not fill its bytes"));
                    }
                }
            }
        }
        Ok(Self {
            format,
            rows,
            cols,
            bytes,
        })
    }

    pub fn nbytes(&self) -> usize {
        self.bytes.as_slice().len()
    }

    /// How many block scales are NaN or infinite (the values are 8-bit integers).
    pub fn non_finite_scales(&self) -> usize {
        let nb = self.cols / QK;
        (0..self.rows)
            .map(|r| {
                let row = self.row(r);
                (0..nb)
                    .filter(|&b| {
                        let d = match self.format {
                            SparseFormat::S24Q8 => f16_at(row, s24_pos(b, nb).d),
                            SparseFormat::BitmapQ8 => bitmap_header(row, b, nb).0,
                        };
                        !d.is_finite()
                    })
                    .count()
            })
            .sum()
    }

    /// The bytes of row `r` (for the bitmap layout, without the offset table).
    pub fn row(&self, r: usize) -> &[u8] {
        let b = self.bytes.as_slice();
        match self.format {
            SparseFormat::S24Q8 => {
                let rb = self.cols / QK * S24_BLOCK;
                &b[r * rb..(r + 1) * rb]
            }
            SparseFormat::BitmapQ8 => {
                let table = 4 * (self.rows + 1);
                let off = |r: usize| {
                    u32::from_le_bytes(b[4 * r..4 * r + 4].try_into().expect("checked")) as usize
                };
                &b[table + off(r)..table + off(r + 1)]
            }
        }
    }

    /// Decode row `r` into `out` (`cols` values).
    pub fn decode_row(&self, r: usize, out: &mut [f32]) {
        let mut q = vec![0i8; self.cols];
        let mut d = vec![0f32; self.cols / QK];
        self.decode_row_q8(r, &mut q, &mut d);
        for ((o, q), d) in out.chunks_exact_mut(QK).zip(q.chunks_exact(QK)).zip(&d) {
            for (o, &q) in o.iter_mut().zip(q) {
                *o = q as f32 * d;
            }
        }
    }

    /// Row `r` as Q8_0 would hold it: 8-bit levels (`cols`, zeros where pruned) and one
    /// scale per block of 32.
    pub fn decode_row_q8(&self, r: usize, q: &mut [i8], d: &mut [f32]) {
        let row = self.row(r);
        let nb = self.cols / QK;
        q.fill(0);
        match self.format {
            SparseFormat::S24Q8 => {
                for (b, (o, d)) in q.chunks_exact_mut(QK).zip(d.iter_mut()).enumerate() {
                    let (scale, codes, vals) = s24_block(row, b, nb);
                    for (k, &v) in vals.iter().enumerate() {
                        let col = 4 * (k / 2) + (codes >> (2 * k) & 3) as usize;
                        // Unused slots hold zeros and may repeat a kept column's position.
                        if v != 0 {
                            o[col] = v;
                        }
                    }
                    *d = scale;
                }
            }
            SparseFormat::BitmapQ8 => {
                let mut p = nb * BITMAP_HEADER;
                for (b, (o, d)) in q.chunks_exact_mut(QK).zip(d.iter_mut()).enumerate() {
                    let (scale, mask) = bitmap_header(row, b, nb);
                    for (j, v) in o.iter_mut().enumerate() {
                        if mask >> j & 1 == 1 {
                            *v = row[p] as i8;
                            p += 1;
                        }
                    }
                    *d = scale;
                }
            }
        }
    }

    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols).enumerate() {
            self.decode_row(r, o);
        }
        out
    }

    /// The same matrix with its rows in the order `perm` (row i of the result is row
    /// `perm[i]` of this one).
    pub fn permute_rows(&self, perm: &[usize]) -> Result<Self> {
        let mut body = Vec::with_capacity(self.nbytes());
        let mut offsets = vec![0u32];
        for &r in perm {
            body.extend_from_slice(self.row(r));
            offsets.push(body.len() as u32);
        }
        let bytes = match self.format {
            SparseFormat::S24Q8 => body,
            SparseFormat::BitmapQ8 => {
                let mut out: Vec<u8> = offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
                out.extend_from_slice(&body);
                out
            }
        };
        Self::new(
            self.format,
            perm.len(),
            self.cols,
            Bytes::Owned(Arc::new(bytes)),
        )
    }

    /// One row against 8-bit activations.
    pub fn dot(&self, r: usize, x: Q8Row) -> f32 {
        let row = self.row(r);
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: the CPU has each kernel's features; `new` validated the row's layout.
            if has_avx512() {
                return unsafe {
                    match self.format {
                        SparseFormat::S24Q8 => x86::dot_s24(row, x),
                        SparseFormat::BitmapQ8 => x86::dot_bitmap(row, x),
                    }
                };
            }
            if has_avx2() {
                return unsafe {
                    match self.format {
                        SparseFormat::S24Q8 => x86::dot_s24_avx2(row, x),
                        SparseFormat::BitmapQ8 => x86::dot_bitmap_avx2(row, x),
                    }
                };
            }
        }
        self.dot_as_dense(r, x)
    }

    /// Without SIMD kernels: the row rebuilt as dense Q8_0 blocks for the dense
    /// kernel, so that the products still equal the dense copy's bit for bit (greedy
    /// decoding must not depend on the storage) at the cost of decoding the row.
    fn dot_as_dense(&self, r: usize, x: Q8Row) -> f32 {
        DENSE_ROW.with(|buf| {
            let mut buf = buf.borrow_mut();
            self.row_as_q8_0(r, &mut buf);
            dot_q8_0(&buf, x)
        })
    }

    /// Row `r` in Q8_0's block layout (f16 scale, 32 levels), into `out`.
    fn row_as_q8_0(&self, r: usize, out: &mut Vec<u8>) {
        let nb = self.cols / QK;
        let (mut q, mut d) = (vec![0i8; self.cols], vec![0f32; nb]);
        self.decode_row_q8(r, &mut q, &mut d);
        out.clear();
        for (levels, d) in q.chunks_exact(QK).zip(&d) {
            // `d` came from an f16, so the round trip is exact.
            out.extend_from_slice(&f16::from_f32(*d).to_le_bytes());
            out.extend(levels.iter().map(|&v| v as u8));
        }
    }
}

thread_local! {
    static DENSE_ROW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
use super::simd::{has_avx2, has_avx512_sparse as has_avx512};

pub fn dot_s24_ref(row: &[u8], x: Q8Row) -> f32 {
    let nb = x.d.len();
    let mut sum = 0f32;
    for b in 0..nb {
        let (d, codes, vals) = s24_block(row, b, nb);
        let q = &x.qs[b * QK..(b + 1) * QK];
        let isum: i32 = (0..16)
            .map(|k| vals[k] as i32 * q[4 * (k / 2) + (codes >> (2 * k) & 3) as usize] as i32)
            .sum();
        sum += d * x.d[b] * isum as f32;
    }
    sum
}

pub fn dot_bitmap_ref(row: &[u8], x: Q8Row) -> f32 {
    let nb = x.d.len();
    let (mut sum, mut p) = (0f32, nb * BITMAP_HEADER);
    for b in 0..nb {
        let (d, mask) = bitmap_header(row, b, nb);
        let mut isum = 0i32;
        for j in 0..QK {
            if mask >> j & 1 == 1 {
                isum += row[p] as i8 as i32 * x.qs[b * QK + j] as i32;
                p += 1;
            }
        }
        sum += d * x.d[b] * isum as f32;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Q8Row, BITMAP_HEADER, S24_BLOCK};
    use crate::quant::simd::{dot_i8, half, hsum, pair_lanes, pair_scale};
    use std::arch::x86_64::*;

    /// [sa, sb] (each d_w·d_x, rounded once as the dense kernel rounds it) spread to
    /// [`pair_lanes`]' layout.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pair_scales(d2: *const u8, x: Q8Row, b: usize) -> __m256 {
        let dw = _mm_cvtph_ps(_mm_cvtsi32_si128((d2 as *const i32).read_unaligned()));
        let dx = _mm_castsi128_ps(_mm_loadl_epi64(x.d.as_ptr().add(b) as *const __m128i));
        let s = _mm256_castps128_ps256(_mm_mul_ps(dw, dx));
        _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(0, 0, 1, 1, 0, 0, 1, 1))
    }

    /// Two 2:4 blocks per step, stored as a pair: one multishift turns their 8 code bytes
    /// into the 32 slots' positions, one two-table byte permute gathers the 32
    /// activations (of 64) that meet the 32 stored values, and the values' storage order
    /// makes the integer lanes come out in [`pair_lanes`]' layout, so the result equals
    /// dense Q8_0's bit for bit.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2")]
    pub unsafe fn dot_s24(row: &[u8], x: Q8Row) -> f32 {
        let nb = x.d.len();
        let p = row.as_ptr();
        // Value byte j holds A slots 0-7, B 0-7, A 8-15, B 8-15; its code bits sit at
        // 2k (A slot k) or 32 + 2k (B slot k) of the 64-bit code word.
        let ctrl = _mm256_setr_epi8(
            0, 2, 4, 6, 8, 10, 12, 14, 32, 34, 36, 38, 40, 42, 44, 46, 16, 18, 20, 22, 24, 26, 28,
            30, 48, 50, 52, 54, 56, 58, 60, 62,
        );
        // Slot k's group starts at column 4·(k/2); B's activations are the second table.
        let base = _mm256_setr_epi8(
            0, 0, 4, 4, 8, 8, 12, 12, 32, 32, 36, 36, 40, 40, 44, 44, 16, 16, 20, 20, 24, 24, 28,
            28, 48, 48, 52, 52, 56, 56, 60, 60,
        );
        let three = _mm256_set1_epi8(3);
        let mut acc = _mm256_setzero_ps();
        let mut b = 0;
        while b + 2 <= nb {
            let q = p.add(b * S24_BLOCK);
            let codes = _mm256_set1_epi64x((q.add(4) as *const i64).read_unaligned());
            let pos = _mm256_and_si256(_mm256_multishift_epi64_epi8(ctrl, codes), three);
            let idx = _mm256_add_epi8(pos, base);
            let qa = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32) as *const __m256i);
            let qb = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32 + 32) as *const __m256i);
            let xg = _mm256_permutex2var_epi8(qa, idx, qb);
            acc = block_pair(q, xg, x, b, acc);
            b += 2;
        }
        if b < nb {
            // A lone last block pairs with zeros, as in the dense kernel.
            let q = p.add(b * S24_BLOCK);
            let codes = (q.add(2) as *const u32).read_unaligned() as u64;
            let pos = _mm256_and_si256(
                _mm256_multishift_epi64_epi8(ctrl, _mm256_set1_epi64x(codes as i64)),
                three,
            );
            let idx = _mm256_add_epi8(pos, base);
            let qa = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32) as *const __m256i);
            let xg = _mm256_permutex2var_epi8(qa, idx, _mm256_setzero_si256());
            acc = lone_block(q, xg, x.d[b], acc);
        }
        hsum(acc)
    }

    /// A block's stored values at their columns: a masked load reads exactly the stored
    /// values (never past the row) and an expand spreads them by the mask.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2")]
    unsafe fn expand(mask: u32, values: *const u8) -> __m256i {
        let n = mask.count_ones();
        let load = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
        _mm256_maskz_expand_epi8(mask, _mm256_maskz_loadu_epi8(load, values as *const i8))
    }

    /// Blocks expanded to dense 8-bit rows, two at a time through [`pair_lanes`]. The
    /// headers come first in the row, so each block's values are found by a running sum
    /// of mask counts, not by walking the previous block.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2")]
    pub unsafe fn dot_bitmap(row: &[u8], x: Q8Row) -> f32 {
        let nb = x.d.len();
        let p = row.as_ptr();
        let masks = p.add(2 * nb) as *const u32;
        let mut v = p.add(BITMAP_HEADER * nb);
        let mut acc = _mm256_setzero_ps();
        let mut b = 0;
        while b < nb {
            let ma = masks.add(b).read_unaligned();
            let wa = expand(ma, v);
            v = v.add(ma.count_ones() as usize);
            let xa = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32) as *const __m256i);
            let (wb, xb, scale) = if b + 1 < nb {
                let mb = masks.add(b + 1).read_unaligned();
                let wb = expand(mb, v);
                v = v.add(mb.count_ones() as usize);
                let xb = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32 + 32) as *const __m256i);
                (wb, xb, pair_scales(p.add(2 * b), x, b))
            } else {
                let z = _mm256_setzero_si256();
                (z, z, pair_scale(half(p.add(2 * b)) * x.d[b], 0.0))
            };
            let lanes = _mm256_cvtepi32_ps(pair_lanes(wa, xa, wb, xb));
            acc = _mm256_fmadd_ps(scale, lanes, acc);
            b += 2;
        }
        hsum(acc)
    }
    /// [`dot_s24`] on AVX2 alone. Without a multishift or a two-table permute, each
    /// slot's 2-bit position is picked out with byte shuffles and nibble masks, and the
    /// activations are gathered from each block with one in-lane shuffle per block (a
    /// slot of 0-7 meets columns 0-15, a slot of 8-15 columns 16-31: the same 128-bit
    /// lane of the block's activations). The integer lanes are the dense kernel's.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_s24_avx2(row: &[u8], x: Q8Row) -> f32 {
        let nb = x.d.len();
        let p = row.as_ptr();
        let mut acc = _mm256_setzero_ps();
        let mut b = 0;
        while b + 2 <= nb {
            let q = p.add(b * S24_BLOCK);
            let codes = (q.add(4) as *const i64).read_unaligned();
            let xa = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32) as *const __m256i);
            let xb = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32 + 32) as *const __m256i);
            let xg = gather_pair(codes, xa, xb);
            acc = block_pair(q, xg, x, b, acc);
            b += 2;
        }
        if b < nb {
            // A lone last block pairs with zeros, as in the dense kernel.
            let q = p.add(b * S24_BLOCK);
            let codes = (q.add(2) as *const u32).read_unaligned() as i64;
            let xa = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32) as *const __m256i);
            let xg = gather_pair(codes, xa, _mm256_setzero_si256());
            acc = lone_block(q, xg, x.d[b], acc);
        }
        hsum(acc)
    }

    /// `acc` plus the pair of 2:4 blocks `b`, `b + 1` stored at `q`, against their
    /// gathered activations `xg`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_pair(q: *const u8, xg: __m256i, x: Q8Row, b: usize, acc: __m256) -> __m256 {
        let wv = _mm256_loadu_si256(q.add(12) as *const __m256i);
        let lanes = _mm256_cvtepi32_ps(dot_i8(wv, xg));
        _mm256_fmadd_ps(pair_scales(q, x, b), lanes, acc)
    }

    /// `acc` plus a lone last 2:4 block at `q` (stored `[d | codes | slots 0-15]`) against
    /// its gathered activations `xg`, paired with zeros as in the dense kernel.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn lone_block(q: *const u8, xg: __m256i, dx: f32, acc: __m256) -> __m256 {
        // Slots 0-7 to bytes 0-7, 8-15 to bytes 16-23; the B positions stay zero.
        let lo = _mm_loadl_epi64(q.add(6) as *const __m128i);
        let hi = _mm_loadl_epi64(q.add(14) as *const __m128i);
        let wv = _mm256_set_m128i(hi, lo);
        let lanes = _mm256_cvtepi32_ps(dot_i8(wv, xg));
        _mm256_fmadd_ps(pair_scale(half(q) * dx, 0.0), lanes, acc)
    }

    /// The activations that meet a 2:4 pair's 32 stored values, in their storage order
    /// `[A 0-7, B 0-7 | A 8-15, B 8-15]`. `codes` holds A's 16 two-bit positions in its
    /// low 32 bits and B's in the high 32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn gather_pair(codes: i64, xa: __m256i, xb: __m256i) -> __m256i {
        // Each value byte takes the code byte that holds its slot: slot k of a block
        // sits in code byte k/4, B's code bytes follow A's four.
        let pick = _mm256_setr_epi8(
            0, 0, 0, 0, 1, 1, 1, 1, 4, 4, 4, 4, 5, 5, 5, 5, 2, 2, 2, 2, 3, 3, 3, 3, 6, 6, 6, 6, 7,
            7, 7, 7,
        );
        let c = _mm256_shuffle_epi8(_mm256_set1_epi64x(codes), pick);
        // Slot k's field is bits 2(k%4)..2(k%4)+2 of its byte: take the nibble that holds
        // it, mask the field, and map 0-3 or 0/4/8/12 to 0-3 with a table.
        let nibble = _mm256_set1_epi8(0x0f);
        let lo = _mm256_and_si256(c, nibble);
        let hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), nibble);
        let upper = _mm256_set1_epi32(0xffff_0000u32 as i32);
        let field = _mm256_and_si256(
            _mm256_blendv_epi8(lo, hi, upper),
            _mm256_set1_epi32(0x0c03_0c03),
        );
        let to_pos = _mm256_setr_epi8(
            0, 1, 2, 3, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 1, 2, 3, 1, 0, 0, 0, 2, 0, 0, 0, 3,
            0, 0, 0,
        );
        // Slot k's group of 4 columns starts at 4·(k/2) within its 16-column lane.
        let group = _mm256_setr_epi8(
            0, 0, 4, 4, 8, 8, 12, 12, 0, 0, 4, 4, 8, 8, 12, 12, 0, 0, 4, 4, 8, 8, 12, 12, 0, 0, 4,
            4, 8, 8, 12, 12,
        );
        let idx = _mm256_add_epi8(_mm256_shuffle_epi8(to_pos, field), group);
        // Bytes 8-15 and 24-31 are B's.
        _mm256_blend_epi32(
            _mm256_shuffle_epi8(xa, idx),
            _mm256_shuffle_epi8(xb, idx),
            0b1100_1100,
        )
    }

    /// For each 8-bit mask, the byte shuffle that spreads the next stored values to
    /// the columns whose bits are set (0x80 zeroes the others).
    const EXPAND: [[u8; 8]; 256] = {
        let mut t = [[0x80u8; 8]; 256];
        let mut m = 0;
        while m < 256 {
            let (mut j, mut n) = (0, 0u8);
            while j < 8 {
                if m >> j & 1 == 1 {
                    t[m][j] = n;
                    n += 1;
                }
                j += 1;
            }
            m += 1;
        }
        t
    };

    /// One bitmap block's values at their columns. Reads 8 bytes at each of four
    /// offsets past `v`; the caller guarantees 32 readable bytes from `v`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn expand_avx2(mask: u32, v: *const u8) -> __m256i {
        let mut part = [_mm_setzero_si128(); 4];
        let mut at = 0;
        for (i, part) in part.iter_mut().enumerate() {
            let m = (mask >> (8 * i)) as u8;
            let values = _mm_loadl_epi64(v.add(at) as *const __m128i);
            let ctrl = _mm_loadl_epi64(EXPAND[m as usize].as_ptr() as *const __m128i);
            *part = _mm_shuffle_epi8(values, ctrl);
            at += m.count_ones() as usize;
        }
        _mm256_set_m128i(
            _mm_unpacklo_epi64(part[2], part[3]),
            _mm_unpacklo_epi64(part[0], part[1]),
        )
    }

    /// The block whose values start at byte `v` of `row`, at its columns; moves `v` past
    /// them. Near the end of the row the values are first copied into a zero-padded
    /// buffer, so that no load reads past the row.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn next_block(row: &[u8], mask: u32, v: &mut usize) -> __m256i {
        let n = mask.count_ones() as usize;
        let w = if *v + 32 <= row.len() {
            expand_avx2(mask, row.as_ptr().add(*v))
        } else {
            let mut tail = [0u8; 32];
            tail[..n].copy_from_slice(&row[*v..*v + n]);
            expand_avx2(mask, tail.as_ptr())
        };
        *v += n;
        w
    }

    /// [`dot_bitmap`] on AVX2: each block's values spread by four table-driven byte
    /// shuffles.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_bitmap_avx2(row: &[u8], x: Q8Row) -> f32 {
        let nb = x.d.len();
        let p = row.as_ptr();
        let masks = p.add(2 * nb) as *const u32;
        let mut v = BITMAP_HEADER * nb;
        let mut acc = _mm256_setzero_ps();
        let mut b = 0;
        while b < nb {
            let wa = next_block(row, masks.add(b).read_unaligned(), &mut v);
            let xa = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32) as *const __m256i);
            let (wb, xb, scale) = if b + 1 < nb {
                let wb = next_block(row, masks.add(b + 1).read_unaligned(), &mut v);
                let xb = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32 + 32) as *const __m256i);
                (wb, xb, pair_scales(p.add(2 * b), x, b))
            } else {
                let z = _mm256_setzero_si256();
                (z, z, pair_scale(half(p.add(2 * b)) * x.d[b], 0.0))
            };
            let lanes = _mm256_cvtepi32_ps(pair_lanes(wa, xa, wb, xb));
            acc = _mm256_fmadd_ps(scale, lanes, acc);
            b += 2;
        }
        hsum(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::activation::Q8Act;
    use crate::quant::blocks::{dequantize, quantize_q8_0};
    use crate::quant::GgmlType;

    use crate::quant::test_data as data;

    #[test]
    fn hostile_shapes_are_errors_not_panics() {
        let bytes = |n: usize| Bytes::Owned(Arc::new(vec![0u8; n]));
        // 4·(rows + 1) wrapped to 4 for rows = 2^62, and the row table was read past its end.
        for rows in [1usize << 62, usize::MAX, usize::MAX / 4] {
            for format in [SparseFormat::BitmapQ8, SparseFormat::S24Q8] {
                let e = Sparse::new(format, rows, 32, bytes(64))
                    .err()
                    .map(|e| e.to_string());
                assert!(
                    e.is_some_and(|e| e.contains(&format!("{rows}×32"))),
                    "{format}"
                );
            }
        }
        for (rows, cols) in [(0, 32), (1, 0), (1, 33)] {
            assert!(Sparse::new(SparseFormat::BitmapQ8, rows, cols, bytes(8)).is_err());
        }
        // A row table that points past the data.
        let mut b = vec![0u8; 8 + 6];
        b[4..8].copy_from_slice(&1000u32.to_le_bytes());
        let e = Sparse::new(SparseFormat::BitmapQ8, 1, 32, Bytes::Owned(Arc::new(b)));
        assert!(e.is_err());
    }

    #[test]
    fn a_nan_scale_is_counted() {
        let mut w = data(2 * 64, 3);
        prune_2_4(&mut w);
        for format in [SparseFormat::S24Q8, SparseFormat::BitmapQ8] {
            let s = Sparse::encode(format, &w, 2, 64).unwrap();
            assert_eq!(s.non_finite_scales(), 0);
            let mut raw = s.bytes.as_slice().to_vec();
            let at = match format {
                SparseFormat::S24Q8 => 0,
                SparseFormat::BitmapQ8 => 4 * 3, // after the 3-entry row table
            };
            (raw[at], raw[at + 1]) = (0x00, 0x7e);
            let bad = Sparse::new(format, 2, 64, Bytes::Owned(Arc::new(raw))).unwrap();
            assert_eq!(bad.non_finite_scales(), 1, "{format}");
        }
    }

    /// Keep the 2 largest of every 4 (2:4), or zero values below a threshold (unstructured).
    fn prune_2_4(w: &mut [f32]) {
        for g in w.chunks_exact_mut(4) {
            let mut idx = [0, 1, 2, 3];
            idx.sort_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()));
            g[idx[0]] = 0.0;
            g[idx[1]] = 0.0;
        }
    }

    fn prune_below(w: &mut [f32], t: f32) {
        for v in w.iter_mut().filter(|v| v.abs() < t) {
            *v = 0.0;
        }
    }

    /// Both layouts decode to exactly Q8_0's values, and their kernels equal the
    /// references, on row counts and widths that exercise the odd-block tail.
    #[test]
    fn layouts_hold_q8_0_values_and_kernels_match_references() {
        for (rows, cols) in [(1, 32), (3, 64), (5, 96), (7, 576)] {
            let mut w24 = data(rows * cols, 3 + cols as u32);
            prune_2_4(&mut w24);
            // Groups with one kept value or none leave slots empty.
            for v in w24.iter_mut().step_by(7) {
                *v = 0.0;
            }
            let mut wu = data(rows * cols, 5);
            prune_below(&mut wu, 0.5);
            wu[0] = 0.9; // a block with 32 non-zeros and one with none, too
            for v in wu.iter_mut().take(32) {
                *v = 0.7;
            }
            if wu.len() >= 64 {
                wu[32..64].fill(0.0);
            }
            for (format, w) in [(SparseFormat::S24Q8, &w24), (SparseFormat::BitmapQ8, &wu)] {
                let s = Sparse::encode(format, w, rows, cols).unwrap();
                let mut dense = vec![0f32; w.len()];
                dequantize(GgmlType::Q8_0, &quantize_q8_0(w), &mut dense).unwrap();
                assert_eq!(s.to_f32(), dense, "{format} {rows}×{cols}");
                let xq = Q8Act::quantize(&data(cols, 11));
                let x = xq.row(0, cols / QK);
                for r in 0..rows {
                    let reference = match format {
                        SparseFormat::S24Q8 => dot_s24_ref(s.row(r), x),
                        SparseFormat::BitmapQ8 => dot_bitmap_ref(s.row(r), x),
                    };
                    let got = s.dot(r, x);
                    // Bit-identical to dense Q8_0 on the same values, on every kernel
                    // this CPU can run.
                    let q8 = quantize_q8_0(&w[r * cols..(r + 1) * cols]);
                    let dense = crate::quant::dot::dot_q8_0(&q8, x);
                    let mut paths = vec![("dispatched", got), ("as dense", s.dot_as_dense(r, x))];
                    #[cfg(target_arch = "x86_64")]
                    if has_avx2() {
                        // SAFETY: AVX2 detected; `encode` wrote a valid row.
                        paths.push(("avx2", unsafe {
                            match format {
                                SparseFormat::S24Q8 => x86::dot_s24_avx2(s.row(r), x),
                                SparseFormat::BitmapQ8 => x86::dot_bitmap_avx2(s.row(r), x),
                            }
                        }));
                    }
                    for (path, v) in paths {
                        assert_eq!(v.to_bits(), dense.to_bits(), "{format} {path}");
                    }
                    assert!(
                        (got - reference).abs() <= 1e-4 * (1.0 + reference.abs()),
                        "{format}: {got} vs {reference}"
                    );
                    // and the reference is the dense Q8_0 row's integer dot
                    let want = crate::quant::dot::dot_q8_0_ref(&q8, x);
                    assert!((reference - want).abs() <= 1e-4 * (1.0 + want.abs()));
                }
            }
        }
    }

    #[test]
    fn sizes_and_2_4_detection() {
        let mut w = data(4 * 64, 1);
        assert!(!is_2_4(&w));
        prune_2_4(&mut w);
        assert!(is_2_4(&w));
        let (dense, s24, bitmap) = sizes(&w, 4, 64);
        assert_eq!(dense, 8 * 34);
        assert_eq!(s24, Some(8 * 22));
        assert_eq!(bitmap, 4 * 5 + 8 * 6 + 128);
        assert!(Sparse::encode(SparseFormat::S24Q8, &data(64, 2), 1, 64).is_err());
    }

    #[test]
    fn hostile_bytes_are_rejected() {
        let mut w = data(2 * 64, 4);
        prune_below(&mut w, 0.5);
        let s = Sparse::encode(SparseFormat::BitmapQ8, &w, 2, 64).unwrap();
        let good = s.bytes.as_slice().to_vec();
        let wrap =
            |b: Vec<u8>| Sparse::new(SparseFormat::BitmapQ8, 2, 64, Bytes::Owned(Arc::new(b)));
        assert!(wrap(good.clone()).is_ok());
        let mut b = good.clone();
        b[12 + 2..12 + 6].fill(0xff); // row 0's first mask claims 32 values
        assert!(wrap(b).is_err());
        let mut b = good.clone();
        b[4] = 0xff; // row 1 starts past the end
        assert!(wrap(b).is_err());
        assert!(wrap(good[..good.len() - 1].to_vec()).is_err());
        assert!(Sparse::new(
            SparseFormat::S24Q8,
            2,
            64,
            Bytes::Owned(Arc::new(vec![0; 87]))
        )
        .is_err());
    }

    #[test]
    fn permuting_rows_moves_whole_rows() {
        let mut w = data(3 * 32, 9);
        prune_below(&mut w, 0.3);
        let s = Sparse::encode(SparseFormat::BitmapQ8, &w, 3, 32).unwrap();
        let p = s.permute_rows(&[2, 0, 1]).unwrap();
        let (a, b) = (s.to_f32(), p.to_f32());
        assert_eq!(&b[0..32], &a[64..96]);
        assert_eq!(&b[32..64], &a[0..32]);
    }
}
