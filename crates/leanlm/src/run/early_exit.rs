//! Early exit (CALM, Schuster et al. 2022): while decoding, stop a token's pass after a
//! block once a confidence measure clears a threshold, and read the token from that
//! block's hidden state through the final norm and LM head.
//!
//! The blocks a token skips still need its K/V for later tokens; the forward pass fills
//! them from the exit hidden state (CALM's state propagation), which costs two small
//! projections per skipped block instead of a whole block.
//!
//! Measures: the softmax's top probability, the margin between the top two, or hidden-state
//! saturation (cosine similarity of consecutive blocks' outputs). The first two need the
//! LM head at each candidate exit; on a model whose head is as large as 8 blocks (SmolLM2:
//! 49,152 × 576) that check is expensive, so candidates are spaced by `every`.

use super::generate::{generate_with, Generation};
use super::sampler::Sampler;
use crate::error::{Error, Result};
use crate::model::{KvCache, Logits, Model, NoHooks, Pass};
use crate::numerics::cosine;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    MaxProb,
    Margin,
    Saturation,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct ExitPolicy {
    pub measure: Confidence,
    /// Exit when the measure reaches this value (above 1 never exits).
    pub threshold: f32,
    /// First block count after which an exit may happen.
    pub min_layers: usize,
    /// Check after every `every`-th block from `min_layers` on.
    pub every: usize,
}

/// Blocks run per generated token.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExitStats {
    /// `histogram[k]`: tokens that ran k blocks.
    pub histogram: Vec<usize>,
}

impl ExitStats {
    pub fn mean_layers(&self) -> f64 {
        mean_blocks(&self.histogram)
    }
}

/// Mean blocks run per token of a histogram whose entry k counts tokens that ran k blocks.
pub fn mean_blocks(histogram: &[usize]) -> f64 {
    let (sum, n) = histogram
        .iter()
        .enumerate()
        .fold((0usize, 0usize), |(s, n), (k, &c)| (s + k * c, n + c));
    sum as f64 / n.max(1) as f64
}

impl ExitPolicy {
    pub fn check(&self, model: &Model) -> Result<()> {
        let n = model.layers.len();
        if self.every == 0 || self.min_layers == 0 || self.min_layers > n {
            return Err(Error::InvalidInput(format!(
                "early exit needs 1 ≤ min layers ≤ {n} and a check interval ≥ 1 (got {} and {})",
                self.min_layers, self.every
            )));
        }
        if self.threshold.is_nan() {
            return Err(Error::InvalidInput(
                "the early-exit threshold is NaN".into(),
            ));
        }
        Ok(())
    }

    fn is_candidate(&self, blocks_done: usize) -> bool {
        blocks_done >= self.min_layers && (blocks_done - self.min_layers).is_multiple_of(self.every)
    }
}

/// One token's pass with early exit; returns its logits and the blocks it ran.
pub fn step(
    model: &Model,
    token: u32,
    cache: &mut KvCache,
    policy: &ExitPolicy,
) -> Result<(Vec<f32>, usize)> {
    let mut prev: Option<Vec<f32>> = None;
    let mut exited_at = model.layers.len();
    let mut decide = |l: usize, h: &[f32]| -> bool {
        let done = l + 1;
        let confident = policy.is_candidate(done)
            && match policy.measure {
                Confidence::MaxProb | Confidence::Margin => {
                    let p = softmax_top2(&model.head(h));
                    let c = if policy.measure == Confidence::MaxProb {
                        p.0
                    } else {
                        p.0 - p.1
                    };
                    c >= policy.threshold
                }
                Confidence::Saturation => prev
                    .as_deref()
                    .is_some_and(|q| cosine(q, h) >= policy.threshold as f64),
            };
        if policy.measure == Confidence::Saturation {
            prev = Some(h.to_vec());
        }
        if confident {
            exited_at = done;
        }
        confident
    };
    let pass = Pass {
        logits: Logits::Last,
        exit_after: None,
        exit_when: Some(&mut decide),
        hooks: &mut NoHooks,
    };
    let logits = model.forward_batch(&[&[token]], &mut [cache], pass)?;
    Ok((logits, exited_at))
}

/// [`super::generate`] with early exit on every generated token after the first (the
/// prompt runs through every block).
pub fn generate_early_exit(
    model: &Model,
    prompt: &[u32],
    n: usize,
    sampler: &mut Sampler,
    stop: &[u32],
    policy: &ExitPolicy,
    mut on_token: impl FnMut(u32) -> std::ops::ControlFlow<()>,
) -> Result<(Generation, ExitStats)> {
    policy.check(model)?;
    let mut stats = ExitStats {
        histogram: vec![0; model.layers.len() + 1],
    };
    let g = generate_with(
        model,
        prompt,
        n,
        sampler,
        stop,
        &mut on_token,
        |t, cache| {
            let (logits, blocks) = step(model, t, cache, policy)?;
            stats.histogram[blocks] += 1;
            Ok(logits)
        },
    )?;
    Ok((g, stats))
}

/// The two largest softmax probabilities.
/// The softmax probabilities of the two largest logits.
pub(crate) fn softmax_top2(logits: &[f32]) -> (f32, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    let mut sum = 0f64;
    for &l in logits {
        sum += ((l - max) as f64).exp();
        if l > a {
            b = a;
            a = l;
        } else if l > b {
            b = l;
        }
    }
    let p = |l: f32| (((l - max) as f64).exp() / sum) as f32;
    (p(a), p(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_measures_by_hand() {
        // logits [ln 1, ln 2, ln 5] → p = [0.125, 0.25, 0.625]
        let (a, b) = softmax_top2(&[0.0, 2f32.ln(), 5f32.ln()]);
        assert!((a - 0.625).abs() < 1e-6 && (b - 0.25).abs() < 1e-6);
        let stats = ExitStats {
            histogram: vec![0, 0, 3, 1],
        };
        assert!((stats.mean_layers() - 2.25).abs() < 1e-12);
    }

    #[test]
    fn candidates_start_at_the_minimum_and_are_spaced() {
        let p = ExitPolicy {
            measure: Confidence::MaxProb,
            threshold: 0.9,
            min_layers: 8,
            every: 4,
        };
        let c: Vec<usize> = (1..=30).filter(|&k| p.is_candidate(k)).collect();
        assert_eq!(c, [8, 12, 16, 20, 24, 28]);
    }
}
