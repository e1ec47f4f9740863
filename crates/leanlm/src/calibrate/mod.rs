//! Calibration: the token windows that transforms (pruning, quantization with an
//! importance matrix) run through the model, and the statistics gathered from them.
//!
//! Windows are drawn as in the Wanda and SparseGPT code: `nsamples` random spans of
//! `seqlen` tokens from one tokenized text, reproducible from a seed, with no BOS.

mod importance;
mod stats;
mod sweep;

pub use importance::Importance;

pub use stats::{BlockStats, SiteStats};
pub use sweep::Sweep;

use crate::error::{Error, Result};
use crate::numerics::SplitMix64;

/// `nsamples` windows of `seqlen` tokens each.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub seqlen: usize,
    pub windows: Vec<Vec<u32>>,
}

impl Calibration {
    /// Draw `nsamples` windows from `tokens` with start offsets from a seeded generator.
    pub fn sample(tokens: &[u32], nsamples: usize, seqlen: usize, seed: u64) -> Result<Self> {
        if nsamples == 0 || seqlen < 2 {
            return Err(Error::InvalidInput(format!(
                "calibration needs at least one sample of at least 2 tokens (got {nsamples} × {seqlen})"
            )));
        }
        if tokens.len() <= seqlen {
            return Err(Error::InvalidInput(format!(
                "calibration text has {} tokens, shorter than one sample of {seqlen}",
                tokens.len()
            )));
        }
        let mut rng = SplitMix64(seed);
        let span = (tokens.len() - seqlen) as u64;
        let windows = (0..nsamples)
            .map(|_| {
                let start = (rng.next_u64() % span) as usize;
                tokens[start..start + seqlen].to_vec()
            })
            .collect();
        Ok(Self { seqlen, windows })
    }

    pub fn n_tokens(&self) -> usize {
        self.windows.len() * self.seqlen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_reproducible_in_range_and_checked() {
        let tokens: Vec<u32> = (0..100).collect();
        let a = Calibration::sample(&tokens, 5, 10, 0).unwrap();
        let b = Calibration::sample(&tokens, 5, 10, 0).unwrap();
        let c = Calibration::sample(&tokens, 5, 10, 1).unwrap();
        assert_eq!(a.windows, b.windows);
        assert_ne!(a.windows, c.windows);
        for w in &a.windows {
            assert_eq!(w.len(), 10);
            // Consecutive ids: each window is one contiguous span of the text.
            assert!(w.windows(2).all(|p| p[1] == p[0] + 1));
        }
        assert_eq!(a.n_tokens(), 50);
        assert!(Calibration::sample(&tokens, 1, 100, 0).is_err());
        assert!(Calibration::sample(&tokens, 0, 10, 0).is_err());
    }
}
