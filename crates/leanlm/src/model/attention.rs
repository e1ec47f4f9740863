//! Causal grouped-query attention of new queries over each sequence's KV cache.
//!
//! Two evaluation orders of the same softmax(q·kᵀ/√d)·v: one query row at a time (decode,
//! short speculative batches), and, for prompts, blocks of query rows per head through a
//! tiled matrix product, so that each key and value row is read once per block instead of
//! once per query. Both are tested against each other. Sliding-window blocks (Gemma 3)
//! see only the last `window` keys, their own position included, as llama.cpp's
//! standard window masks them.

use rayon::prelude::*;

use super::vec_math::exp_shifted_sum;
use crate::quant::dot::dot_f32;
use crate::quant::gemm::{self, View};

/// Query rows per block of the tiled order.
const QUERY_BLOCK: usize = 64;
/// Queries per sequence from which the tiled order pays for its setup.
const TILED_MIN_QUERIES: usize = 32;

/// Head layout of one layer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Keys a query sees, its own position included; `None`: all earlier keys.
    pub window: Option<usize>,
}

impl Heads {
    /// Widths of a query row and of a key (or value) row.
    fn widths(&self) -> (usize, usize) {
        (
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        )
    }
    /// First column of query head `head`'s key/value head (grouped-query attention).
    fn kv_column(&self, head: usize) -> usize {
        head / (self.n_heads / self.n_kv_heads) * self.head_dim
    }
    /// 1/√d, the scores' scale.
    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
    /// The first key visible to the query at position `pos`.
    fn first_key(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }
}

/// `q` holds `t` new query rows per sequence `(b·t, n_heads·head_dim)`; sequence `s`'s
/// cache `kv[s] = (k, v)` holds `starts[s] + t` positions `(pos, n_kv_heads·head_dim)`,
/// the new ones included. Returns the attention output, shaped like `q`.
pub(super) fn attend(
    q: &[f32],
    t: usize,
    starts: &[usize],
    kv: &[(&[f32], &[f32])],
    heads: Heads,
) -> Vec<f32> {
    if t >= TILED_MIN_QUERIES {
        attend_tiled(q, t, starts, kv, heads)
    } else {
        attend_rows(q, t, starts, kv, heads)
    }
}

/// One query row at a time, all heads.
fn attend_rows(
    q: &[f32],
    t: usize,
    starts: &[usize],
    kv: &[(&[f32], &[f32])],
    h: Heads,
) -> Vec<f32> {
    let (hd, (qw, kw), scale) = (h.head_dim, h.widths(), h.scale());
    let mut out = vec![0f32; q.len()];
    out.par_chunks_mut(qw).enumerate().for_each(|(r, o)| {
        let (s, i) = (r / t, r % t);
        let (kc, vc) = kv[s];
        let n_keys = starts[s] + i + 1; // causal: keys lo..=pos
        let lo = h.first_key(n_keys - 1);
        let mut scores = vec![0f32; n_keys - lo];
        for head in 0..h.n_heads {
            let qh = &q[r * qw + head * hd..r * qw + (head + 1) * hd];
            let c0 = h.kv_column(head);
            for (p, sc) in (lo..).zip(scores.iter_mut()) {
                *sc = dot_f32(qh, &kc[p * kw + c0..p * kw + c0 + hd]) * scale;
            }
            let sum = softmax_unnormalized(&mut scores);
            let oh = &mut o[head * hd..(head + 1) * hd];
            for (p, &w) in (lo..).zip(scores.iter()) {
                let w = w / sum;
                for (a, &b) in oh.iter_mut().zip(&vc[p * kw + c0..p * kw + c0 + hd]) {
                    *a += w * b;
                }
            }
        }
    });
    out
}

/// Blocks of up to `QUERY_BLOCK` query rows of one head: S = Q·Kᵀ over the keys the
/// block's rows may see (from the first row's window start to the last row's position),
/// masked and exponentiated in place, then O = S·V / Σ.
fn attend_tiled(
    q: &[f32],
    t: usize,
    starts: &[usize],
    kv: &[(&[f32], &[f32])],
    h: Heads,
) -> Vec<f32> {
    let (hd, (qw, kw), scale) = (h.head_dim, h.widths(), h.scale());
    let blocks = t.div_ceil(QUERY_BLOCK);
    // Task (s, head, block) → its output block (rows × hd), gathered afterwards.
    let tasks: Vec<(usize, usize, usize)> = (0..starts.len())
        .flat_map(|s| (0..h.n_heads).flat_map(move |hh| (0..blocks).map(move |c| (s, hh, c))))
        .collect();
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(s, head, c)| {
            let (kc, vc) = kv[s];
            let i0 = c * QUERY_BLOCK;
            let rows = QUERY_BLOCK.min(t - i0);
            let end = starts[s] + i0 + rows; // the last row's causal horizon
            let lo = h.first_key(starts[s] + i0); // the first row's window start
            let n_keys = end - lo;
            let (qc, kc0) = (head * hd, h.kv_column(head));
            let qv = View::block(q, qw, s * t + i0, rows, qc, hd); // (rows, hd)
            let kv_ = View::block(kc, kw, lo, n_keys, kc0, hd); // (n_keys, hd)
            let vv = View::block(vc, kw, lo, n_keys, kc0, hd); // (n_keys, hd)
            let mut scores = vec![0f32; rows * n_keys]; // (rows, n_keys)
            gemm::matmul_serial(qv, kv_.t(), &mut scores, 0.0);
            let mut sums = vec![0f32; rows];
            for (r, row) in scores.chunks_exact_mut(n_keys).enumerate() {
                let pos = starts[s] + i0 + r;
                let (first, visible) = (h.first_key(pos) - lo, pos + 1 - lo);
                row.iter_mut().for_each(|v| *v *= scale);
                sums[r] = softmax_unnormalized(&mut row[first..visible]);
                row[..first].fill(0.0);
                row[visible..].fill(0.0);
            }
            let mut o = vec![0f32; rows * hd]; // (rows, hd)
            gemm::matmul_serial(View::new(&scores, rows, n_keys), vv, &mut o, 0.0);
            for (row, sum) in o.chunks_exact_mut(hd).zip(&sums) {
                row.iter_mut().for_each(|v| *v /= sum);
            }
            o
        })
        .collect();
    let mut out = vec![0f32; q.len()];
    for (&(s, head, c), o) in tasks.iter().zip(&results) {
        for (r, row) in o.chunks_exact(hd).enumerate() {
            let at = (s * t + c * QUERY_BLOCK + r) * qw + head * hd;
            out[at..at + hd].copy_from_slice(row);
        }
    }
    out
}

/// `x ← exp(x − max x)` in place; returns the sum (the softmax denominator).
fn softmax_unnormalized(x: &mut [f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    exp_shifted_sum(x, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    /// softmax(q·kᵀ/√d)·v for one query row and head, written out from the definition.
    fn naive(q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>]) -> Vec<f32> {
        let scale = 1.0 / (q.len() as f32).sqrt();
        let s: Vec<f64> = k
            .iter()
            .map(|k| q.iter().zip(k).map(|(a, b)| (a * b) as f64).sum::<f64>() * scale as f64)
            .collect();
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let z: f64 = e.iter().sum();
        (0..q.len())
            .map(|j| (e.iter().zip(v).map(|(w, v)| w * v[j] as f64).sum::<f64>() / z) as f32)
            .collect()
    }

    #[test]
    fn both_orders_match_the_definition_with_caches_and_odd_lengths() {
        // Without a window, and with one shorter than a query block and than the cached
        // prefix (so that whole blocks of keys fall out of view).
        for window in [None, Some(9), Some(QUERY_BLOCK + 5)] {
            check_against_definition(window);
        }
    }

    fn check_against_definition(window: Option<usize>) {
        // Two sequences with different cached prefixes, t not a multiple of the block,
        // grouped heads (6 query heads over 2 KV heads), head_dim not a SIMD multiple.
        let h = Heads {
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 20,
            window,
        };
        let (t, starts) = (TILED_MIN_QUERIES + QUERY_BLOCK + 7, [0usize, 13]);
        let (qw, kw) = (h.n_heads * h.head_dim, h.n_kv_heads * h.head_dim);
        let q = values(starts.len() * t * qw, 1);
        let caches: Vec<(Vec<f32>, Vec<f32>)> = starts
            .iter()
            .enumerate()
            .map(|(s, &p)| {
                (
                    values((p + t) * kw, 10 + s as u64),
                    values((p + t) * kw, 20 + s as u64),
                )
            })
            .collect();
        let kv: Vec<(&[f32], &[f32])> = caches.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let tiled = attend_tiled(&q, t, &starts, &kv, h);
        let rows = attend_rows(&q, t, &starts, &kv, h);
        let hd = h.head_dim;
        let mut worst = 0f32;
        for s in 0..starts.len() {
            for i in 0..t {
                for head in 0..h.n_heads {
                    let c0 = (head / (h.n_heads / h.n_kv_heads)) * hd;
                    let n_keys = starts[s] + i + 1;
                    let lo = window.map_or(0, |w| n_keys.saturating_sub(w));
                    let slice = |m: &[f32], p: usize| m[p * kw + c0..p * kw + c0 + hd].to_vec();
                    let k: Vec<_> = (lo..n_keys).map(|p| slice(&caches[s].0, p)).collect();
                    let v: Vec<_> = (lo..n_keys).map(|p| slice(&caches[s].1, p)).collect();
                    let r = s * t + i;
                    let qh = &q[r * qw + head * hd..r * qw + (head + 1) * hd];
                    let want = naive(qh, &k, &v);
                    for (j, w) in want.iter().enumerate() {
                        let at = r * qw + head * hd + j;
                        worst = worst.max((tiled[at] - w).abs()).max((rows[at] - w).abs());
                    }
                }
            }
        }
        assert!(
            worst < 1e-4,
            "window {window:?}: largest deviation from the definition {worst}"
        );
    }
}
