//! Prompt-sized products of 4-, 5- and 8-bit weights with 8-bit activations, in integer
//! arithmetic (AVX-512 VNNI; AVX2 for codes below 32), without decoding the weights to
//! f32.
//!
//! Every supported block of 32 weights is written as unsigned codes with `w = d·u + m`
//! (Q8_0: u = q + 128, m = −128·d; Q4_0: u = q, m = −8·d; Q4_1: u = q; Q4_K: one such
//! block per sub-block; Q5_0, Q5_1, Q5_K: their codes and scales as [`super::codes`]
//! reads them). With activations `x = dx·qx` per block (as for decoding),
//!
//! ```text
//! y[t][r] = Σ_b d[r,b]·dx[t,b]·(u[r,b] · qx[t,b])  +  Σ_b m[r,b]·(dx[t,b]·Σ qx[t,b])
//! ```
//!
//! The first sum runs with one output row per 32-bit lane: the weights are regrouped so
//! that a 64-byte register holds four consecutive codes of 16 rows, and `vpdpbusd`
//! multiplies them by four of a token's activation bytes broadcast to every lane. Eight
//! such steps finish a block in integer arithmetic; one conversion and one fused
//! multiply-add with the 16 rows' scales times the token's scale add it to the result.
//! The second sum is an f32 product with inner dimension cols/32.

use rayon::prelude::*;

use super::activation::Q8Act;
use super::blocks::{f16_at, QK};
use super::codes;
use super::gemm::{self, View};
use super::kquants::{q4k_scale_min, Q4K_BYTES, QK_K};
use super::sparse::Sparse;
use super::GgmlType;

/// Output rows per register (32-bit lanes of a 64-byte register).
const LANES: usize = 16;
/// Row groups of [`LANES`] rows and tokens of one register tile.
const GROUPS: usize = 2;
const TOKENS: usize = 4;
/// Rows of a tile.
const TILE_ROWS: usize = GROUPS * LANES;
/// Most tokens (rows of the output) per parallel task.
const MAX_TOKENS_PER_TASK: usize = 64;

/// Weights the integer product reads: GGML blocks, or a sparse layout's 8-bit values
/// (multiplied exactly as the dense Q8_0 copy of the same values).
#[derive(Clone, Copy)]
pub enum Weights<'a> {
    Blocks { dtype: GgmlType, bytes: &'a [u8] },
    Sparse(&'a Sparse),
}

/// Whether `dtype` products run here in integer arithmetic.
pub fn supports(dtype: GgmlType) -> bool {
    takes(dtype) && (has_vnni() || (has_avx2() && narrow(dtype)))
}

/// Whether every code of `dtype` is below 32, so that AVX2's `maddubs` (two u8·i8
/// products summed in 16 bits, saturating) is exact, even summed over four steps:
/// 4·2·31·127 < 2¹⁵. Q8_0's codes reach 255.
fn narrow(dtype: GgmlType) -> bool {
    dtype != GgmlType::Q8_0
}

/// Which integer tile kernel runs here, if any (for reports).
pub fn kernel_name(dtype: GgmlType) -> Option<&'static str> {
    match (takes(dtype), has_vnni(), has_avx2() && narrow(dtype)) {
        (true, true, _) => Some("AVX-512 VNNI"),
        (true, false, true) => Some("AVX2"),
        _ => None,
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::simd::has_avx2();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether `dtype` can be written as one scale and offset per 32 codes.
fn takes(dtype: GgmlType) -> bool {
    match codes::kernels(dtype) {
        Some(k) => !k.halves,
        None => matches!(
            dtype,
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K
        ),
    }
}

/// Whether sparse products run here in integer arithmetic.
pub fn supports_sparse() -> bool {
    has_vnni()
}

fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::simd::has_vnni();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Block `b` of a row of `dtype` as unsigned codes; returns `(d, m)` with `w = d·u + m`.
fn unpack_block(dtype: GgmlType, row: &[u8], b: usize, u: &mut [u8; QK]) -> (f32, f32) {
    match dtype {
        GgmlType::Q8_0 => {
            let blk = &row[b * 34..(b + 1) * 34];
            for (u, &q) in u.iter_mut().zip(&blk[2..]) {
                *u = q ^ 0x80; // (q as i8) + 128
            }
            let d = f16_at(blk, 0);
            (d, -128.0 * d)
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let size = if dtype == GgmlType::Q4_0 { 18 } else { 20 };
            let blk = &row[b * size..(b + 1) * size];
            let qs = &blk[size - 16..];
            for j in 0..16 {
                u[j] = qs[j] & 15;
                u[j + 16] = qs[j] >> 4;
            }
            let d = f16_at(blk, 0);
            let m = if dtype == GgmlType::Q4_0 {
                -8.0 * d
            } else {
                f16_at(blk, 2)
            };
            (d, m)
        }
        GgmlType::Q4K => {
            let (sb, j) = (b / (QK_K / QK), b % (QK_K / QK));
            let blk = &row[sb * Q4K_BYTES..(sb + 1) * Q4K_BYTES];
            let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
            let (sc, mn) = q4k_scale_min(j, &blk[4..16]);
            let qs = &blk[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
            let shift = 4 * (j % 2);
            for (u, &q) in u.iter_mut().zip(qs) {
                *u = (q >> shift) & 15;
            }
            (d * sc as f32, -dmin * mn as f32)
        }
        other => {
            let k = codes::kernels(other).expect("a type the integer product takes");
            let (subs, bb) = (other.block_len() / QK, other.block_bytes());
            let blk = &row[b / subs * bb..(b / subs + 1) * bb];
            (k.codes)(blk, b % subs, u);
            let sc = (k.scales)(blk, b % subs);
            (sc.a[0], sc.b[0])
        }
    }
}

/// Row `r` as unsigned codes `u` (cols), scales `d` and offsets `m` (one per block).
fn unpack_row(weights: Weights, cols: usize, r: usize, u: &mut [u8], d: &mut [f32], m: &mut [f32]) {
    match weights {
        Weights::Blocks { dtype, bytes } => {
            let rb = dtype.row_bytes(cols).expect("checked at construction");
            let row = &bytes[r * rb..(r + 1) * rb];
            let mut block = [0u8; QK];
            for (b, ((u, d), m)) in u.chunks_exact_mut(QK).zip(d).zip(m).enumerate() {
                (*d, *m) = unpack_block(dtype, row, b, &mut block);
                u.copy_from_slice(&block);
            }
        }
        Weights::Sparse(s) => {
            // The levels Q8_0 would hold, offset as Q8_0's are.
            let mut q = vec![0i8; cols];
            s.decode_row_q8(r, &mut q, d);
            for (u, q) in u.iter_mut().zip(&q) {
                *u = (*q as u8) ^ 0x80;
            }
            for (m, d) in m.iter_mut().zip(d.iter()) {
                *m = -128.0 * d;
            }
        }
    }
}

/// Weights regrouped for the kernel: for each group of [`LANES`] rows and each block, the
/// eight 4-byte steps `k` of the block as `[row 0 bytes 4k..4k+4, row 1 …, row 15 …]`
/// (512 bytes), then the group's scales per block (16 floats); rows padded with zeros to
/// a whole tile. `offsets` holds m, `rows × nb`.
struct PackedWeights {
    codes: Vec<u8>,
    scales: Vec<f32>,
    offsets: Vec<f32>,
    nb: usize,
    /// Every code below 32 (see [`narrow`]).
    narrow: bool,
}

impl PackedWeights {
    fn new(weights: Weights, rows: usize, cols: usize) -> Self {
        let nb = cols / QK;
        let groups = rows.next_multiple_of(TILE_ROWS) / LANES;
        let mut w = Self {
            codes: vec![0; groups * nb * LANES * QK],
            scales: vec![0.0; groups * nb * LANES],
            offsets: vec![0.0; groups * LANES * nb],
            nb,
            narrow: match weights {
                Weights::Blocks { dtype, .. } => narrow(dtype),
                Weights::Sparse(_) => false,
            },
        };
        w.codes
            .par_chunks_mut(nb * LANES * QK)
            .zip(w.scales.par_chunks_mut(nb * LANES))
            .zip(w.offsets.par_chunks_mut(LANES * nb))
            .enumerate()
            .for_each(|(g, ((codes, scales), offsets))| {
                let (mut u, mut d) = (vec![0u8; cols], vec![0f32; nb]);
                for lane in 0..LANES.min(rows.saturating_sub(g * LANES)) {
                    let m = &mut offsets[lane * nb..(lane + 1) * nb];
                    unpack_row(weights, cols, g * LANES + lane, &mut u, &mut d, m);
                    for (b, (u, d)) in u.chunks_exact(QK).zip(&d).enumerate() {
                        scales[b * LANES + lane] = *d;
                        for k in 0..QK / 4 {
                            let at = b * LANES * QK + (k * LANES + lane) * 4;
                            codes[at..at + 4].copy_from_slice(&u[4 * k..4 * k + 4]);
                        }
                    }
                }
            });
        w
    }

    /// Code `i` of block `b` of `row`, and the block's scale (for the reference).
    fn code(&self, row: usize, b: usize, i: usize) -> u8 {
        let (g, lane) = (row / LANES, row % LANES);
        self.codes[(g * self.nb + b) * LANES * QK + ((i / 4) * LANES + lane) * 4 + i % 4]
    }
    fn scale(&self, row: usize, b: usize) -> f32 {
        self.scales[(row / LANES * self.nb + b) * LANES + row % LANES]
    }
}

/// `y = x · Wᵀ` (`x`: `n × cols`, `y`: `n × rows`). The caller checks [`supports`] (or
/// [`supports_sparse`]) and the shapes.
pub fn matmul(weights: Weights, rows: usize, cols: usize, x: &[f32], n: usize, y: &mut [f32]) {
    debug_assert!(cols.is_multiple_of(QK));
    let nb = cols / QK;
    let w = PackedWeights::new(weights, rows, cols);
    let xq = Q8Act::quantize(x);
    // Each task owns a run of tokens (rows of y) and passes every weight row over them:
    // a tile's weights (32 rows × cols bytes) stay in the core's cache across tokens.
    let threads = rayon::current_num_threads();
    let per_task = n
        .div_ceil(4 * threads)
        .next_multiple_of(TOKENS)
        .clamp(TOKENS, MAX_TOKENS_PER_TASK);
    y.par_chunks_mut(per_task * rows)
        .enumerate()
        .for_each(|(task, out)| {
            let t_start = task * per_task;
            let tokens = out.len() / rows;
            let mut tile = [[0f32; TILE_ROWS]; TOKENS];
            for r0 in (0..rows).step_by(TILE_ROWS) {
                let r_len = TILE_ROWS.min(rows - r0);
                for t0 in (0..tokens).step_by(TOKENS) {
                    let t_len = TOKENS.min(tokens - t0);
                    tile_product(&w, r0, &xq, t_start + t0, t_len, &mut tile);
                    for (yrow, trow) in out.chunks_exact_mut(rows).skip(t0).zip(&tile[..t_len]) {
                        yrow[r0..r0 + r_len].copy_from_slice(&trow[..r_len]);
                    }
                }
            }
        });
    // y += S · Mᵀ with S[t][b] = dx·Σqx, the offsets' share.
    let s = View::new(&xq.s, n, nb);
    gemm::matmul(s, View::block(&w.offsets, nb, 0, rows, 0, nb).t(), y, 1.0);
}

/// `out[j][i] = Σ_b d·dx·(u · qx)` for rows `r0..r0+32` and tokens `t0..t0+t_len`.
fn tile_product(
    w: &PackedWeights,
    r0: usize,
    x: &Q8Act,
    t0: usize,
    t_len: usize,
    out: &mut [[f32; TILE_ROWS]; TOKENS],
) {
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        // SAFETY: VNNI was detected; `w` holds whole tiles of rows, `x` holds tokens
        // t0..t0+t_len, which is all the kernels read.
        unsafe {
            match t_len {
                4 => tile_vnni::<4>(w, r0, x, t0, out),
                3 => tile_vnni::<3>(w, r0, x, t0, out),
                2 => tile_vnni::<2>(w, r0, x, t0, out),
                _ => tile_vnni::<1>(w, r0, x, t0, out),
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && w.narrow {
        // SAFETY: AVX2 was detected and every code is below 32 (exact in 16 bits); reads
        // as for the VNNI tile.
        unsafe {
            match t_len {
                4 => tile_avx2::<4>(w, r0, x, t0, out),
                3 => tile_avx2::<3>(w, r0, x, t0, out),
                2 => tile_avx2::<2>(w, r0, x, t0, out),
                _ => tile_avx2::<1>(w, r0, x, t0, out),
            }
        }
        return;
    }
    tile_ref(w, r0, x, t0, t_len, out)
}

/// Plain reference of [`tile_product`].
fn tile_ref(
    w: &PackedWeights,
    r0: usize,
    x: &Q8Act,
    t0: usize,
    t_len: usize,
    out: &mut [[f32; TILE_ROWS]; TOKENS],
) {
    for (j, orow) in out.iter_mut().enumerate().take(t_len) {
        let xr = x.row(t0 + j, w.nb);
        for (i, o) in orow.iter_mut().enumerate() {
            *o = (0..w.nb)
                .map(|b| {
                    let dot: i32 = (0..QK)
                        .map(|k| w.code(r0 + i, b, k) as i32 * xr.qs[b * QK + k] as i32)
                        .sum();
                    w.scale(r0 + i, b) * xr.d[b] * dot as f32
                })
                .sum();
        }
    }
}

/// The tile with AVX2 (CPUs without VNNI): the same packing read as 8 rows per 32-byte
/// register (the two halves of a 64-byte step), one quarter of the tile's rows at a time.
/// Per step and token, `maddubs` multiplies the 8 rows' 4 codes by the token's 4
/// activation bytes broadcast to every row, summing pairs in 16 bits; four steps add up
/// in 16 bits (exact for codes below 32), one `madd` widens them to a 32-bit sum per
/// row, and each block ends with one conversion and one fused multiply-add, as VNNI's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const T: usize>(
    w: &PackedWeights,
    r0: usize,
    x: &Q8Act,
    t0: usize,
    out: &mut [[f32; TILE_ROWS]; TOKENS],
) {
    use std::arch::x86_64::*;
    debug_assert!(r0.is_multiple_of(TILE_ROWS) && T <= TOKENS && w.narrow);
    const QUARTER: usize = LANES / 2;
    let nb = w.nb;
    let xq = x.qs.as_ptr().add(t0 * nb * QK);
    let xd = x.d.as_ptr().add(t0 * nb);
    let ones = _mm256_set1_epi16(1);
    for q in 0..TILE_ROWS / QUARTER {
        let (g, half) = (r0 / LANES + q / 2, q % 2);
        let mut acc = [_mm256_setzero_ps(); T];
        for b in 0..nb {
            let codes = w.codes.as_ptr().add((g * nb + b) * LANES * QK + half * 32);
            let mut sums = [_mm256_setzero_si256(); T];
            for k0 in [0, 4] {
                let mut p16 = [_mm256_setzero_si256(); T];
                for k in k0..k0 + 4 {
                    let wv = _mm256_loadu_si256(codes.add(k * LANES * 4) as *const __m256i);
                    for (j, p16) in p16.iter_mut().enumerate() {
                        let four =
                            (xq.add((j * nb + b) * QK + 4 * k) as *const i32).read_unaligned();
                        let prod = _mm256_maddubs_epi16(wv, _mm256_set1_epi32(four));
                        *p16 = _mm256_add_epi16(*p16, prod);
                    }
                }
                for (sum, p16) in sums.iter_mut().zip(&p16) {
                    *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(*p16, ones));
                }
            }
            let wd = _mm256_loadu_ps(w.scales.as_ptr().add((g * nb + b) * LANES + half * QUARTER));
            for (j, (acc, sum)) in acc.iter_mut().zip(&sums).enumerate() {
                let scale = _mm256_mul_ps(wd, _mm256_set1_ps(*xd.add(j * nb + b)));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(*sum), scale, *acc);
            }
        }
        for (row, acc) in out.iter_mut().zip(&acc) {
            _mm256_storeu_ps(row.as_mut_ptr().add(q * QUARTER), *acc);
        }
    }
}

/// Per block: 8 steps × `GROUPS` × `T` `vpdpbusd` into integer sums, then per group and
/// token one conversion, one scale product and one fused multiply-add.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni<const T: usize>(
    w: &PackedWeights,
    r0: usize,
    x: &Q8Act,
    t0: usize,
    out: &mut [[f32; TILE_ROWS]; TOKENS],
) {
    use std::arch::x86_64::*;
    debug_assert!(r0.is_multiple_of(TILE_ROWS) && T <= TOKENS);
    let nb = w.nb;
    let g0 = r0 / LANES;
    let xq = x.qs.as_ptr().add(t0 * nb * QK);
    let xd = x.d.as_ptr().add(t0 * nb);
    let mut acc = [[_mm512_setzero_ps(); T]; GROUPS];
    for b in 0..nb {
        let mut sums = [[_mm512_setzero_si512(); T]; GROUPS];
        for k in 0..QK / 4 {
            let wv: [__m512i; GROUPS] = std::array::from_fn(|g| {
                let at = ((g0 + g) * nb + b) * LANES * QK + k * LANES * 4;
                _mm512_loadu_si512(w.codes.as_ptr().add(at) as *const _)
            });
            for j in 0..T {
                let four = (xq.add((j * nb + b) * QK + 4 * k) as *const i32).read_unaligned();
                let xv = _mm512_set1_epi32(four);
                for (sums, wv) in sums.iter_mut().zip(&wv) {
                    sums[j] = _mm512_dpbusd_epi32(sums[j], *wv, xv);
                }
            }
        }
        for (g, (acc, sums)) in acc.iter_mut().zip(&sums).enumerate() {
            let wd = _mm512_loadu_ps(w.scales.as_ptr().add(((g0 + g) * nb + b) * LANES));
            for (j, (acc, sum)) in acc.iter_mut().zip(sums).enumerate() {
                let scale = _mm512_mul_ps(wd, _mm512_set1_ps(*xd.add(j * nb + b)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*sum), scale, *acc);
            }
        }
    }
    for (g, acc) in acc.iter().enumerate() {
        for (row, acc) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(row.as_mut_ptr().add(g * LANES), *acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::blocks::{dequantize, quantize_q4_0, quantize_q4_1, quantize_q8_0};
    use crate::quant::kquants::quantize_q4_k;
    use crate::quant::test_data;

    fn encoded(w: &[f32], cols: usize) -> Vec<(GgmlType, Vec<u8>)> {
        let mut out = vec![
            (GgmlType::Q8_0, quantize_q8_0(w)),
            (GgmlType::Q4_0, quantize_q4_0(w)),
            (GgmlType::Q4_1, quantize_q4_1(w)),
        ];
        if cols.is_multiple_of(QK_K) {
            out.push((GgmlType::Q4K, quantize_q4_k(w, &vec![1.0; w.len()])));
        }
        for t in codes::TYPES.into_iter().filter(|&t| takes(t)) {
            if cols.is_multiple_of(t.block_len()) {
                out.push((t, codes::random_blocks(t, w.len() / t.block_len(), 9)));
            }
        }
        out
    }

    /// x·Wᵀ from the decoded weights and the 8-bit activations, in f64.
    fn reference(
        dtype: GgmlType,
        bytes: &[u8],
        rows: usize,
        cols: usize,
        x: &[f32],
        n: usize,
    ) -> Vec<f32> {
        let mut wf = vec![0f32; rows * cols];
        dequantize(dtype, bytes, &mut wf).unwrap();
        let xq = Q8Act::quantize(x);
        let xf: Vec<f32> = xq
            .qs
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * xq.d[i / QK])
            .collect();
        let mut y = vec![0f32; n * rows];
        for t in 0..n {
            for r in 0..rows {
                let s: f64 = (0..cols)
                    .map(|k| wf[r * cols + k] as f64 * xf[t * cols + k] as f64)
                    .sum();
                y[t * rows + r] = s as f32;
            }
        }
        y
    }

    #[test]
    fn products_match_decoded_weights_on_odd_shapes() {
        // Without VNNI this runs the reference tile: the packing and the offsets' product
        // are the same code.
        // Odd block count (7 pairs + 1), rows and tokens off the band and tile sizes; and
        // K-quant width.
        for (rows, cols, n) in [
            (37, 15 * QK, 9),
            (21, 2 * QK_K, 6),
            (TILE_ROWS, QK, 1),
            (TILE_ROWS + 1, 3 * QK, 2 * TOKENS + 1),
        ] {
            let w = test_data(rows * cols, 3);
            let x: Vec<f32> = test_data(n * cols, 4).iter().map(|v| v * 3.0).collect();
            for (dtype, bytes) in encoded(&w, cols) {
                let want = reference(dtype, &bytes, rows, cols, &x, n);
                let mut y = vec![f32::NAN; n * rows];
                let bytes = &bytes[..];
                matmul(Weights::Blocks { dtype, bytes }, rows, cols, &x, n, &mut y);
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{dtype} {rows}×{cols}×{n} [{i}]: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_simd_tiles_match_the_reference_tile() {
        if !has_vnni() && !has_avx2() {
            eprintln!("neither AVX-512 VNNI nor AVX2 here: nothing to compare");
            return;
        }
        let (rows, cols, n) = (2 * TILE_ROWS, 5 * QK, TOKENS + 3);
        let w = test_data(rows * cols, 5);
        let x = Q8Act::quantize(&test_data(n * cols, 6));
        for (dtype, bytes) in encoded(&w, cols) {
            let pw = PackedWeights::new(
                Weights::Blocks {
                    dtype,
                    bytes: &bytes,
                },
                rows,
                cols,
            );
            for r0 in (0..rows).step_by(TILE_ROWS) {
                for (t0, t_len) in [(0, TOKENS), (TOKENS, 3), (1, 2), (n - 1, 1)] {
                    let (mut fast, mut slow) =
                        ([[0f32; TILE_ROWS]; TOKENS], [[0f32; TILE_ROWS]; TOKENS]);
                    tile_product(&pw, r0, &x, t0, t_len, &mut fast);
                    tile_ref(&pw, r0, &x, t0, t_len, &mut slow);
                    for (a, b) in fast.iter().flatten().zip(slow.iter().flatten()) {
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "{dtype}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    /// A sparse layout and the dense Q8_0 copy of the same values give the same floats,
    /// bit for bit (one packing, one kernel, one order of operations).
    #[test]
    fn sparse_products_equal_dense_q8_0_products() {
        use crate::quant::sparse::{Sparse, SparseFormat};
        if !has_vnni() {
            eprintln!("no AVX-512 VNNI here: the integer product is not used, nothing to test");
            return;
        }
        let (rows, cols, n) = (TILE_ROWS + 5, 6 * QK, TOKENS + 3);
        // 2 of every 4 weights kept (the larger two), which both layouts can hold.
        let mut w = test_data(rows * cols, 7);
        for g in w.chunks_exact_mut(4) {
            let mut order = [0, 1, 2, 3];
            order.sort_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()));
            g[order[0]] = 0.0;
            g[order[1]] = 0.0;
        }
        let x = test_data(n * cols, 8);
        let dense = quantize_q8_0(&w);
        let mut want = vec![0f32; n * rows];
        let bytes = &dense[..];
        let blocks = Weights::Blocks {
            dtype: GgmlType::Q8_0,
            bytes,
        };
        matmul(blocks, rows, cols, &x, n, &mut want);
        for format in [SparseFormat::S24Q8, SparseFormat::BitmapQ8] {
            let s = Sparse::encode(format, &w, rows, cols).unwrap();
            let mut got = vec![0f32; n * rows];
            matmul(Weights::Sparse(&s), rows, cols, &x, n, &mut got);
            assert_eq!(got, want, "{format:?}");
        }
    }
}
