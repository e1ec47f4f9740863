//! KL divergence of a variant against a base model, position by position over the same
//! evaluation chunks, with the other figures llama.cpp's `--kl-divergence` reports.
//!
//! The base is kept as its top-k log-probs per position plus the log-prob of the correct
//! token ([`BaseLogits`]), computed once and cached on disk, so that comparing many
//! variants costs one base pass. KL(P‖Q) is then taken between the two distributions
//! coarsened to "each of the base's top-k tokens, and everything else": by the data
//! processing inequality this is a lower bound of the full KL, and equals it when the
//! remaining mass is zero. With k = 64 the remainder is small for a well-trained model.

use std::io::{Read, Write};
use std::path::Path;

use super::perplexity::{Chunks, RunningNll};
use crate::error::{Error, Result};
use crate::model::Model;

const MAGIC: &[u8; 8] = b"LLMKLD01";

/// The base model's view of each scored position.
#[derive(Debug, Clone, PartialEq)]
pub struct BasePosition {
    pub target: u32,
    pub target_logp: f32,
    /// (token, log-prob), most likely first.
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BaseLogits {
    pub vocab: usize,
    /// Identifies the chunks (tokens, context, protocol) these positions belong to.
    pub fingerprint: u64,
    pub positions: Vec<BasePosition>,
}

/// Log-softmax of one row, in f64 for the normaliser.
pub fn log_softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    x.iter().map(|&v| (v as f64 - lse) as f32).collect()
}

fn top_k(lp: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..lp.len() as u32).collect();
    let k = k.min(lp.len());
    idx.select_nth_unstable_by(k - 1, |&a, &b| lp[b as usize].total_cmp(&lp[a as usize]));
    let mut top: Vec<(u32, f32)> = idx[..k].iter().map(|&i| (i, lp[i as usize])).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    top
}

impl BaseLogits {
    /// Run `model` over every chunk and keep its top-`k` log-probs per scored position.
    pub fn compute(
        model: &Model,
        chunks: &Chunks,
        k: usize,
        mut on_chunk: impl FnMut(usize, usize),
    ) -> Result<Self> {
        if k == 0 {
            return Err(Error::InvalidInput(
                "top-k for the base cache must be at least 1".into(),
            ));
        }
        let v = model.vocab_size();
        let mut positions = Vec::new();
        for c in 0..chunks.len() {
            // The base runs every block even when the variant exits early.
            let (logits, targets) = chunks.score_full(model, &chunks.get(c))?;
            for (j, &target) in targets.iter().enumerate() {
                let lp = log_softmax(&logits[j * v..(j + 1) * v]);
                positions.push(BasePosition {
                    target,
                    target_logp: lp[target as usize],
                    top: top_k(&lp, k),
                });
            }
            on_chunk(c, chunks.len());
        }
        Ok(Self {
            vocab: v,
            fingerprint: chunks.fingerprint(),
            positions,
        })
    }

    /// Write atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&(self.vocab as u64).to_le_bytes());
        b.extend_from_slice(&self.fingerprint.to_le_bytes());
        b.extend_from_slice(&(self.positions.len() as u64).to_le_bytes());
        for p in &self.positions {
            b.extend_from_slice(&p.target.to_le_bytes());
            b.extend_from_slice(&p.target_logp.to_le_bytes());
            b.extend_from_slice(&(p.top.len() as u32).to_le_bytes());
            for &(id, lp) in &p.top {
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&lp.to_le_bytes());
            }
        }
        let tmp = path.with_extension("partial");
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::write(&tmp, e))?;
        f.write_all(&b)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::write(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::write(path, e))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let mut raw = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .map_err(|e| Error::io(path, e))?;
        Self::parse(&raw).map_err(|why| {
            Error::InvalidInput(format!(
                "{}: not a valid leanlm base-logits cache ({why}); delete it to recompute",
                path.display()
            ))
        })
    }

    /// Decode a cache file, checking every count against the bytes left and every token
    /// id against the vocabulary, so that a corrupt file is an error, not a panic later.
    fn parse(raw: &[u8]) -> std::result::Result<Self, String> {
        let mut pos = 0usize;
        let mut take = |n: usize| -> std::result::Result<&[u8], String> {
            let s = pos
                .checked_add(n)
                .and_then(|end| raw.get(pos..end))
                .ok_or_else(|| format!("truncated at byte {pos}"))?;
            pos += n;
            Ok(s)
        };
        if take(8)? != MAGIC {
            return Err("bad magic".into());
        }
        let u64_at = |s: &[u8]| s.try_into().map(u64::from_le_bytes).unwrap_or(u64::MAX);
        let u32_at = |s: &[u8]| s.try_into().map(u32::from_le_bytes).unwrap_or(u32::MAX);
        let vocab = u64_at(take(8)?);
        let fingerprint = u64_at(take(8)?);
        let n = u64_at(take(8)?);
        if vocab == 0 || vocab > u32::MAX as u64 {
            return Err(format!("vocabulary size {vocab}"));
        }
        let vocab = vocab as usize;
        // A position takes at least 20 bytes (target, its log-prob, k ≥ 1, one entry).
        let left = (raw.len() - 32) as u64;
        if n > left / 20 {
            return Err(format!("{n} positions, more than the file holds"));
        }
        let mut positions = Vec::with_capacity(n as usize);
        for i in 0..n {
            let target = u32_at(take(4)?);
            let target_logp = f32::from_bits(u32_at(take(4)?));
            let k = u32_at(take(4)?) as usize;
            if k == 0 || k > vocab {
                return Err(format!(
                    "position {i} keeps {k} tokens (1 to {vocab} allowed)"
                ));
            }
            let bytes = take(k.checked_mul(8).ok_or("overflow")?)?;
            let top: Vec<(u32, f32)> = bytes
                .chunks_exact(8)
                .map(|c| (u32_at(&c[..4]), f32::from_bits(u32_at(&c[4..]))))
                .collect();
            if let Some(&bad) = std::iter::once(&target)
                .chain(top.iter().map(|(id, _)| id))
                .find(|&&id| id as usize >= vocab)
            {
                return Err(format!(
                    "position {i} names token {bad}, outside the vocabulary of {vocab}"
                ));
            }
            positions.push(BasePosition {
                target,
                target_logp,
                top,
            });
        }
        if pos != raw.len() {
            return Err(format!("{} bytes after the last position", raw.len() - pos));
        }
        Ok(Self {
            vocab,
            fingerprint,
            positions,
        })
    }
}

/// KL divergence and friends, as llama.cpp's `--kl-divergence` prints them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KldReport {
    pub positions: usize,
    pub mean_kld: f64,
    pub mean_kld_stderr: f64,
    /// (percentile, KLD): 99.9, 99, 95, 90, 50, 10, 5, 1, 0.1.
    pub kld_percentiles: Vec<(f64, f64)>,
    pub same_top: f64,
    pub same_top_stderr: f64,
    /// Mean of p_variant(correct) − p_base(correct).
    pub mean_delta_p: f64,
    pub mean_delta_p_stderr: f64,
    pub ppl_base: f64,
    pub ppl_variant: f64,
    pub ppl_ratio: f64,
    /// The variant's running perplexity after each chunk, so that one pass serves both
    /// the perplexity and the KL report.
    pub per_chunk_ppl: Vec<f64>,
    #[serde(skip)]
    pub variant_nll: RunningNll,
}

/// KL(P‖Q) between the base's top-k distribution (plus its remainder) and the variant's
/// log-probs `lq` coarsened the same way.
pub fn kld_top_k(base: &BasePosition, lq: &[f32]) -> f64 {
    let (mut kl, mut p_in, mut q_in) = (0f64, 0f64, 0f64);
    for &(id, lp) in &base.top {
        let (lp, lq) = (lp as f64, lq[id as usize] as f64);
        let p = lp.exp();
        kl += p * (lp - lq);
        p_in += p;
        q_in += lq.exp();
    }
    let (p_rest, q_rest) = ((1.0 - p_in).max(0.0), (1.0 - q_in).max(1e-30));
    if p_rest > 1e-12 {
        kl += p_rest * (p_rest.ln() - q_rest.ln());
    }
    kl.max(0.0)
}

fn mean_and_stderr(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// Compare a variant against `base` over the same chunks.
pub fn compare(
    base: &BaseLogits,
    variant: &Model,
    chunks: &Chunks,
    mut on_chunk: impl FnMut(usize, usize),
) -> Result<KldReport> {
    if variant.vocab_size() != base.vocab {
        return Err(Error::InvalidInput(format!(
            "the base model has a vocabulary of {} tokens and the variant {}: KL divergence needs the same vocabulary",
            base.vocab,
            variant.vocab_size()
        )));
    }
    if chunks.fingerprint() != base.fingerprint {
        return Err(Error::InvalidInput(
            "the base logits were computed on other text or settings (file, --ctx, --chunks or protocol differ)".into(),
        ));
    }
    let v = variant.vocab_size();
    let (mut kld, mut same, mut dp, mut nll_b) = (vec![], vec![], vec![], 0f64);
    let (mut nll_v, mut per_chunk_ppl) = (RunningNll::default(), Vec::with_capacity(chunks.len()));
    let mut next = 0usize;
    for c in 0..chunks.len() {
        let (logits, targets) = chunks.score(variant, &chunks.get(c))?;
        for (j, &target) in targets.iter().enumerate() {
            let b = base.positions.get(next).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the base logits hold {} positions, fewer than the chunks score",
                    base.positions.len()
                ))
            })?;
            next += 1;
            let row = &logits[j * v..(j + 1) * v];
            let lq = log_softmax(row);
            kld.push(kld_top_k(b, &lq));
            let base_top = b.top.first().map(|t| t.0);
            same.push((base_top == Some(crate::run::argmax(row))) as u8 as f64);
            dp.push((lq[target as usize] as f64).exp() - (b.target_logp as f64).exp());
            nll_b -= b.target_logp as f64;
            // Same rounding as the base's stored log-prob, so a model against itself gives exactly 1.
            nll_v.push(-(lq[target as usize] as f64));
        }
        per_chunk_ppl.push(nll_v.ppl());
        on_chunk(c, chunks.len());
    }
    if next != base.positions.len() {
        return Err(Error::InvalidInput(format!(
            "the base logits hold {} positions but the chunks score {next}",
            base.positions.len()
        )));
    }
    let n = kld.len();
    let (mean_kld, mean_kld_stderr) = mean_and_stderr(&kld);
    let (same_top, same_top_stderr) = mean_and_stderr(&same);
    let (mean_delta_p, mean_delta_p_stderr) = mean_and_stderr(&dp);
    let mut sorted = kld.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[(((p / 100.0) * (n - 1) as f64).round() as usize).min(n - 1)];
    let kld_percentiles = [99.9, 99.0, 95.0, 90.0, 50.0, 10.0, 5.0, 1.0, 0.1]
        .iter()
        .map(|&p| (p, pct(p)))
        .collect();
    let (ppl_base, ppl_variant) = ((nll_b / n as f64).exp(), nll_v.ppl());
    Ok(KldReport {
        positions: n,
        mean_kld,
        mean_kld_stderr,
        kld_percentiles,
        same_top,
        same_top_stderr,
        mean_delta_p,
        mean_delta_p_stderr,
        ppl_base,
        ppl_variant,
        ppl_ratio: ppl_variant / ppl_base,
        per_chunk_ppl,
        variant_nll: nll_v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-token vocabulary: base P = (0.5, 0.25, 0.25), variant Q = (0.25, 0.5, 0.25).
    /// KL(P‖Q) = 0.5·ln(0.5/0.25) + 0.25·ln(0.25/0.5) + 0 = 0.25·ln 2 ≈ 0.1733.
    #[test]
    fn kld_hand_checked_full_top_k() {
        let lp = [0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
        let lq = [0.25f32.ln(), 0.5f32.ln(), 0.25f32.ln()];
        let base = BasePosition {
            target: 0,
            target_logp: lp[0],
            top: top_k(&lp, 3),
        };
        assert!((kld_top_k(&base, &lq) - 0.25 * 2f64.ln()).abs() < 1e-6);
        assert!(
            kld_top_k(&base, &lp).abs() < 1e-7,
            "KL of a distribution with itself is 0"
        );
    }

    /// With k = 1 the distributions are coarsened to {token 0, rest}: P = (0.5, 0.5),
    /// Q = (0.25, 0.75): KL = 0.5·ln 2 + 0.5·ln(2/3) ≈ 0.1438 ≤ the full 0.1733.
    #[test]
    fn kld_top_1_is_the_coarsened_lower_bound() {
        let lp = [0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
        let lq = [0.25f32.ln(), 0.5f32.ln(), 0.25f32.ln()];
        let base = BasePosition {
            target: 0,
            target_logp: lp[0],
            top: top_k(&lp, 1),
        };
        let want = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!((kld_top_k(&base, &lq) - want).abs() < 1e-6);
    }

    #[test]
    fn top_k_orders_by_probability() {
        assert_eq!(top_k(&[-3.0, -1.0, -2.0], 2), vec![(1, -1.0), (2, -2.0)]);
    }

    /// A cache of vocabulary 3 with one position.
    fn tiny_cache() -> BaseLogits {
        BaseLogits {
            vocab: 3,
            fingerprint: 42,
            positions: vec![BasePosition {
                target: 1,
                target_logp: -0.7,
                top: vec![(1, -0.7), (0, -1.2)],
            }],
        }
    }

    #[test]
    fn cache_round_trips() {
        let b = tiny_cache();
        let p = std::env::temp_dir().join(format!("leanlm-kld-{}.bin", std::process::id()));
        b.save(&p).unwrap();
        assert_eq!(BaseLogits::load(&p).unwrap(), b);
        std::fs::write(&p, b"LLMKLD01\x03").unwrap();
        assert!(BaseLogits::load(&p).is_err());
        std::fs::remove_file(&p).unwrap();
    }

    /// A valid cache (vocab 3, one position) with `edit` applied to its bytes.
    fn corrupt(edit: impl Fn(&mut Vec<u8>)) -> String {
        let b = tiny_cache();
        let p = std::env::temp_dir().join(format!(
            "leanlm-kld-bad-{}-{:?}.bin",
            std::process::id(),
            std::thread::current().id()
        ));
        b.save(&p).unwrap();
        let mut raw = std::fs::read(&p).unwrap();
        edit(&mut raw);
        std::fs::write(&p, &raw).unwrap();
        let e = BaseLogits::load(&p).map(|_| ()).unwrap_err().to_string();
        std::fs::remove_file(&p).unwrap();
        assert!(e.contains("not a valid leanlm base-logits cache"), "{e}");
        e
    }

    #[test]
    fn corrupt_caches_are_errors_not_panics() {
        // Layout: magic 8, vocab 8, fingerprint 8, n 8, then target 4, logp 4, k 4, k × 8.
        let set_u32 = |raw: &mut Vec<u8>, at: usize, v: u32| {
            raw[at..at + 4].copy_from_slice(&v.to_le_bytes())
        };
        let e = corrupt(|r| r[24..32].copy_from_slice(&u64::MAX.to_le_bytes()));
        assert!(e.contains("more than the file holds"), "{e}");
        let e = corrupt(|r| set_u32(r, 32, 7)); // target outside the vocabulary
        assert!(e.contains("token 7"), "{e}");
        let e = corrupt(|r| set_u32(r, 44, 9)); // a top-k id outside it
        assert!(e.contains("token 9"), "{e}");
        let e = corrupt(|r| set_u32(r, 40, 0)); // k = 0: `top[0]` would panic
        assert!(e.contains("keeps 0 tokens"), "{e}");
        let e = corrupt(|r| set_u32(r, 40, u32::MAX));
        assert!(e.contains("keeps 4294967295"), "{e}");
        let e = corrupt(|r| r[8..16].copy_from_slice(&0u64.to_le_bytes()));
        assert!(e.contains("vocabulary size 0"), "{e}");
        let e = corrupt(|r| r.truncate(r.len() - 3));
        assert!(e.contains("truncated"), "{e}");
        let e = corrupt(|r| r.push(0));
        assert!(e.contains("after the last position"), "{e}");
    }
}
