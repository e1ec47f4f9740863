//! Choosing an early-exit threshold for a quality budget. On calibration text, one full
//! pass per chunk records, at every candidate exit, the confidence measure, whether the
//! exit's top token equals the full model's, and KL(full ‖ exit); any threshold's outcome
//! then follows without another pass: a position exits at the first candidate whose
//! confidence reaches the threshold.
//!
//! The passes are teacher-forced with every block run for earlier positions, as CALM
//! calibrates; in generation, skipped blocks' K/V come from the exit state instead, which
//! also moves later positions: on SmolLM2-135M a threshold with 0.7% teacher-forced
//! disagreement disagrees at 9% when decoded. `leanlm eval --calibrate-exit` therefore
//! checks its choice decoded as in generation and raises the threshold until it holds.

use serde::Serialize;

use super::early_exit::{softmax_top2, Confidence, ExitPolicy};
use crate::error::{Error, Result};
use crate::measure::kld::log_softmax;
use crate::model::{Hooks, Logits, Model, Pass};
use crate::numerics::cosine;
use crate::run::argmax;

/// What each calibration position would get at each candidate exit.
pub struct ExitProfile {
    /// Candidate exits, as blocks run (`min_layers`, `min_layers + every`, … < layers).
    pub exits: Vec<usize>,
    pub n_layers: usize,
    /// Row-major `(positions, exits)`.
    pub confidence: Vec<f32>,
    pub same_top: Vec<bool>,
    pub kld: Vec<f32>,
}

/// The outcome of one threshold over the calibration positions.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ThresholdPoint {
    /// `f32::INFINITY`: never exit.
    pub threshold: f32,
    pub mean_blocks: f64,
    /// Fraction of positions whose top token differs from the full model's.
    pub disagreement: f64,
    /// Mean KL(full ‖ early exit) per position, nats.
    pub mean_kld: f64,
}

/// A quality budget against the full model.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// At most this fraction of positions with another top token.
    Disagreement(f64),
    /// At most this mean KL divergence (nats).
    Kld(f64),
}

/// Block outputs (and the inputs before them, for saturation) at the candidate exits.
struct Capture {
    exits: Vec<usize>,
    out: Vec<Vec<f32>>,
    prev: Vec<Vec<f32>>,
}

impl Hooks for Capture {
    fn block_input(&mut self, layer: usize, x: &[f32], _rows: usize) {
        if let Some(i) = self.exits.iter().position(|&e| e == layer + 1) {
            self.prev[i] = x.to_vec();
        }
    }
    fn block_output(&mut self, layer: usize, x: &[f32], _rows: usize) {
        if let Some(i) = self.exits.iter().position(|&e| e == layer + 1) {
            self.out[i] = x.to_vec();
        }
    }
}

/// Profile the candidate exits of `policy` (its threshold is ignored) over `chunks`.
pub fn profile(model: &Model, chunks: &[Vec<u32>], policy: &ExitPolicy) -> Result<ExitProfile> {
    policy.check(model)?;
    let n = model.layers.len();
    let exits: Vec<usize> = (policy.min_layers..n).step_by(policy.every).collect();
    if exits.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no exit before the last of {n} blocks: lower the first exit ({})",
            policy.min_layers
        )));
    }
    let (d, v) = (model.config.d_model, model.vocab_size());
    let mut p = ExitProfile {
        exits: exits.clone(),
        n_layers: n,
        confidence: Vec::new(),
        same_top: Vec::new(),
        kld: Vec::new(),
    };
    for tokens in chunks.iter().filter(|c| !c.is_empty()) {
        let mut cap = Capture {
            exits: exits.clone(),
            out: vec![Vec::new(); exits.len()],
            prev: vec![Vec::new(); exits.len()],
        };
        let mut cache = model.new_cache();
        let pass = Pass {
            logits: Logits::All,
            exit_after: None,
            exit_when: None,
            hooks: &mut cap,
        };
        let full = model.forward_batch(&[tokens], &mut [&mut cache], pass)?;
        let at_exit: Vec<Vec<f32>> = cap.out.iter().map(|h| model.head(h)).collect();
        for pos in 0..tokens.len() {
            let f = &full[pos * v..(pos + 1) * v];
            let lf = log_softmax(f);
            let top = argmax(f);
            for (i, logits) in at_exit.iter().enumerate() {
                let e = &logits[pos * v..(pos + 1) * v];
                let conf = match policy.measure {
                    Confidence::MaxProb => softmax_top2(e).0,
                    Confidence::Margin => {
                        let (a, b) = softmax_top2(e);
                        a - b
                    }
                    Confidence::Saturation => {
                        let row = pos * d..(pos + 1) * d;
                        cosine(&cap.prev[i][row.clone()], &cap.out[i][row]) as f32
                    }
                };
                let le = log_softmax(e);
                let kl: f64 = lf
                    .iter()
                    .zip(&le)
                    .map(|(&a, &b)| (a as f64).exp() * (a - b) as f64)
                    .sum();
                p.confidence.push(conf);
                p.same_top.push(argmax(e) == top);
                p.kld.push(kl.max(0.0) as f32);
            }
        }
    }
    if p.confidence.is_empty() {
        return Err(Error::InvalidInput("no calibration tokens".into()));
    }
    Ok(p)
}

impl ExitProfile {
    pub fn positions(&self) -> usize {
        self.confidence.len() / self.exits.len()
    }

    /// The outcome of `threshold`: each position exits at its first confident candidate.
    pub fn at(&self, threshold: f32) -> ThresholdPoint {
        let c = self.exits.len();
        let (mut blocks, mut differ, mut kld) = (0usize, 0usize, 0f64);
        for pos in 0..self.positions() {
            let row = pos * c..(pos + 1) * c;
            match self.confidence[row.clone()]
                .iter()
                .position(|&x| x >= threshold)
            {
                Some(i) => {
                    blocks += self.exits[i];
                    differ += usize::from(!self.same_top[row.start + i]);
                    kld += self.kld[row.start + i] as f64;
                }
                None => blocks += self.n_layers,
            }
        }
        let n = self.positions() as f64;
        ThresholdPoint {
            threshold,
            mean_blocks: blocks as f64 / n,
            disagreement: differ as f64 / n,
            mean_kld: kld / n,
        }
    }

    /// Outcomes over thresholds at the quantiles of the observed confidences (`steps`
    /// of them), from "never exit" down to the most permissive.
    pub fn sweep(&self, steps: usize) -> Vec<ThresholdPoint> {
        let mut conf: Vec<f32> = self
            .confidence
            .iter()
            .copied()
            .filter(|c| c.is_finite())
            .collect();
        conf.sort_by(|a, b| b.total_cmp(a));
        let mut ts = vec![f32::INFINITY];
        for k in 0..steps.max(1) {
            let i = (k * conf.len()) / steps.max(1);
            if let Some(&t) = conf.get(i) {
                if ts.last() != Some(&t) {
                    ts.push(t);
                }
            }
        }
        ts.into_iter().map(|t| self.at(t)).collect()
    }

    /// The point of `sweep` with the fewest blocks per token that meets `budget` ("never
    /// exit" always does).
    pub fn choose(&self, budget: Budget, steps: usize) -> ThresholdPoint {
        let ok = |p: &ThresholdPoint| match budget {
            Budget::Disagreement(f) => p.disagreement <= f,
            Budget::Kld(k) => p.mean_kld <= k,
        };
        self.sweep(steps)
            .into_iter()
            .filter(ok)
            .min_by(|a, b| a.mean_blocks.total_cmp(&b.mean_blocks))
            .expect("never exiting meets every budget")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::{random_model, RandomSpec};
    use crate::model::NoHooks;

    fn setup(measure: Confidence) -> (Model, Vec<Vec<u32>>, ExitPolicy) {
        let spec = RandomSpec {
            layers: 6,
            ..RandomSpec::default()
        };
        let m = random_model(spec, 7).unwrap();
        let chunks = vec![
            (0..24).map(|i| (i * 7 + 3) % 64).collect(),
            (0..16).map(|i| (i * 5 + 1) % 64).collect(),
        ];
        let policy = ExitPolicy {
            measure,
            threshold: 0.0,
            min_layers: 2,
            every: 2,
        };
        (m, chunks, policy)
    }

    #[test]
    fn the_profile_matches_passes_that_stop_after_each_exit() {
        let (m, chunks, policy) = setup(Confidence::MaxProb);
        let p = profile(&m, &chunks, &policy).unwrap();
        assert_eq!(p.exits, vec![2, 4]);
        assert_eq!(p.positions(), 40);
        let v = m.vocab_size();
        let mut pos = 0;
        for tokens in &chunks {
            let full = m.forward(tokens, &mut m.new_cache(), Logits::All).unwrap();
            for (i, &e) in p.exits.iter().enumerate() {
                let pass = Pass {
                    logits: Logits::All,
                    exit_after: Some(e),
                    exit_when: None,
                    hooks: &mut NoHooks,
                };
                let early = m
                    .forward_batch(&[tokens], &mut [&mut m.new_cache()], pass)
                    .unwrap();
                for t in 0..tokens.len() {
                    let row = |x: &[f32]| x[t * v..(t + 1) * v].to_vec();
                    let k = (pos + t) * p.exits.len() + i;
                    assert!((p.confidence[k] - softmax_top2(&row(&early)).0).abs() < 1e-5);
                    assert_eq!(p.same_top[k], argmax(&row(&early)) == argmax(&row(&full)));
                }
            }
            pos += tokens.len();
        }
    }

    #[test]
    fn thresholds_trade_blocks_for_agreement_and_budgets_hold() {
        for measure in [
            Confidence::MaxProb,
            Confidence::Margin,
            Confidence::Saturation,
        ] {
            let (m, chunks, policy) = setup(measure);
            let p = profile(&m, &chunks, &policy).unwrap();
            let never = p.at(f32::INFINITY);
            assert_eq!(
                (never.mean_blocks, never.disagreement, never.mean_kld),
                (6.0, 0.0, 0.0)
            );
            // The most permissive threshold exits every position at the first candidate.
            let always = p.at(f32::NEG_INFINITY);
            assert_eq!(always.mean_blocks, 2.0);
            let n = p.positions() as f64;
            let differ = (0..p.positions()).filter(|&i| !p.same_top[i * 2]).count() as f64;
            assert!((always.disagreement - differ / n).abs() < 1e-12);
            for budget in [0.0, 0.1, 0.5, 1.0] {
                let c = p.choose(Budget::Disagreement(budget), 50);
                assert!(c.disagreement <= budget, "{measure:?} {c:?}");
                // No swept point meets the budget with fewer blocks.
                assert!(p
                    .sweep(50)
                    .iter()
                    .all(|q| q.disagreement > budget || q.mean_blocks >= c.mean_blocks));
                let k = p.choose(Budget::Kld(budget), 50);
                assert!(k.mean_kld <= budget);
            }
            assert_eq!(p.choose(Budget::Disagreement(1.0), 50).mean_blocks, 2.0);
        }
    }
}
