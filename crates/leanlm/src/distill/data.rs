//! Training text: files tokenized and packed end to end (EOS between files), cut into
//! windows of `seq` tokens, the last windows held out. The training order is a fresh
//! seeded permutation each epoch, so the window of any sample index follows from the
//! index alone: resuming needs only the step count.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::numerics::SplitMix64;
use crate::tokenizer::Tokenizer;

pub struct Dataset {
    tokens: Vec<u32>,
    pub seq: usize,
    /// Windows 0..n_train train; n_train..n_windows are held out.
    pub n_train: usize,
    pub n_windows: usize,
    seed: u64,
}

impl Dataset {
    /// Tokenize `files` for `tok` and cut windows of `seq`; `holdout` is the fraction of
    /// windows kept for evaluation (at least one when it is positive).
    pub fn from_files(
        files: &[PathBuf],
        tok: &Tokenizer,
        seq: usize,
        holdout: f64,
        seed: u64,
    ) -> Result<Self> {
        if files.is_empty() {
            return Err(Error::InvalidInput(
                "no training data: give --data FILE".into(),
            ));
        }
        let mut tokens = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
            tokens.extend(tok.encode(&text, false, false)?);
            if let Some(eos) = tok.eos {
                tokens.push(eos);
            }
        }
        Self::from_tokens(tokens, seq, holdout, seed).map_err(|e| match e {
            Error::InvalidInput(m) => Error::InvalidInput(format!(
                "{}: {m}",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            e => e,
        })
    }

    pub fn from_tokens(tokens: Vec<u32>, seq: usize, holdout: f64, seed: u64) -> Result<Self> {
        if seq < 2 {
            return Err(Error::InvalidInput(format!(
                "--seq {seq} must be at least 2"
            )));
        }
        if !(0.0..1.0).contains(&holdout) {
            return Err(Error::InvalidInput(format!(
                "--holdout {holdout} must be in [0, 1)"
            )));
        }
        let n_windows = tokens.len() / seq;
        let n_hold = if holdout > 0.0 {
            ((n_windows as f64 * holdout).round() as usize).max(1)
        } else {
            0
        };
        if n_windows < n_hold + 1 {
            return Err(Error::InvalidInput(format!(
                "{} tokens make {n_windows} window(s) of {seq}: need at least {} (one to train{})",
                tokens.len(),
                n_hold + 1,
                if n_hold > 0 {
                    " and the held-out ones"
                } else {
                    ""
                }
            )));
        }
        Ok(Self {
            tokens,
            seq,
            n_train: n_windows - n_hold,
            n_windows,
            seed,
        })
    }

    pub fn window(&self, w: usize) -> &[u32] {
        &self.tokens[w * self.seq..(w + 1) * self.seq]
    }

    /// The training window of global sample index `i` (epoch = i / n_train).
    pub fn train_window(&self, i: usize) -> usize {
        let (epoch, j) = (i / self.n_train, i % self.n_train);
        self.permutation(epoch)[j]
    }

    fn permutation(&self, epoch: usize) -> Vec<usize> {
        let mut rng = SplitMix64(self.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut p: Vec<usize> = (0..self.n_train).collect();
        for i in (1..p.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            p.swap(i, j);
        }
        p
    }

    pub fn held_out(&self) -> std::ops::Range<usize> {
        self.n_train..self.n_windows
    }

    pub fn train_tokens(&self) -> usize {
        self.n_train * self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_and_the_split_is_disjoint() {
        let d = Dataset::from_tokens((0..1000).collect(), 10, 0.1, 3).unwrap();
        assert_eq!((d.n_train, d.n_windows), (90, 100));
        let mut e0: Vec<usize> = (0..90).map(|i| d.train_window(i)).collect();
        let e1: Vec<usize> = (90..180).map(|i| d.train_window(i)).collect();
        assert_ne!(e0, e1);
        e0.sort();
        assert_eq!(e0, (0..90).collect::<Vec<_>>());
        assert_eq!(d.window(95)[0], 950);
    }

    #[test]
    fn too_little_text_is_refused() {
        let e = Dataset::from_tokens(vec![1; 15], 16, 0.05, 0)
            .err()
            .unwrap();
        assert!(e.to_string().contains("0 window(s) of 16"), "{e}");
    }
}
