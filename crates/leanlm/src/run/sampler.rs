//! Next-token choice, in llama.cpp's order: repetition penalties over the recent tokens,
//! then top-k, top-p and min-p on the penalized logits, then temperature, then a draw
//! (or the largest logit when the temperature is 0).

use std::collections::{HashMap, VecDeque};

use crate::error::{Error, Result};
use crate::numerics::SplitMix64;

/// Penalties on tokens seen in the last `last_n` tokens (prompt included), as llama.cpp's
/// `--repeat-penalty`, `--frequency-penalty`, `--presence-penalty`, `--repeat-last-n`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalties {
    /// A seen token's logit is divided by this when positive, multiplied when negative
    /// (1.0 is off; CTRL's rule, llama.cpp's `--repeat-penalty`).
    pub repeat: f32,
    /// Subtracted once per occurrence (OpenAI's `frequency_penalty`; 0 is off).
    pub frequency: f32,
    /// Subtracted once for any occurrence (OpenAI's `presence_penalty`; 0 is off).
    pub presence: f32,
    /// How many recent tokens count (0 disables the penalties).
    pub last_n: usize,
}

impl Default for Penalties {
    fn default() -> Self {
        Self {
            repeat: 1.0,
            frequency: 0.0,
            presence: 0.0,
            last_n: 64,
        }
    }
}

impl Penalties {
    pub fn active(&self) -> bool {
        self.last_n > 0 && (self.repeat != 1.0 || self.frequency != 0.0 || self.presence != 0.0)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SamplerConfig {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 keeps every token.
    pub top_k: usize,
    /// 1.0 keeps every token.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0 keeps all).
    pub min_p: f32,
    pub penalties: Penalties,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.0,
            penalties: Penalties::default(),
            seed: 0,
        }
    }
}

pub struct Sampler {
    cfg: SamplerConfig,
    rng: SplitMix64,
    /// The last `penalties.last_n` tokens, oldest first.
    recent: VecDeque<u32>,
}

/// Index of the largest value (the first one on ties, as llama.cpp's greedy sampler).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Result<Self> {
        // Written so that NaN fails too.
        let valid = cfg.temperature >= 0.0 && cfg.top_p > 0.0 && cfg.top_p <= 1.0;
        if !valid {
            return Err(Error::InvalidInput(format!(
                "temperature must be ≥ 0 and top-p in (0, 1] (got {} and {})",
                cfg.temperature, cfg.top_p
            )));
        }
        if !(cfg.min_p >= 0.0 && cfg.min_p <= 1.0) {
            return Err(Error::InvalidInput(format!(
                "min-p must be in [0, 1] (got {})",
                cfg.min_p
            )));
        }
        let p = cfg.penalties;
        if !(p.repeat > 0.0 && p.repeat.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "the repeat penalty must be a positive number (got {}; 1.0 is off)",
                p.repeat
            )));
        }
        if !(p.frequency.is_finite() && p.presence.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "frequency and presence penalties must be finite (got {} and {})",
                p.frequency, p.presence
            )));
        }
        Ok(Self {
            cfg,
            rng: SplitMix64(cfg.seed ^ 0x9e37_79b9_7f4a_7c15),
            recent: VecDeque::with_capacity(p.last_n.min(1 << 16)),
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    pub fn is_greedy(&self) -> bool {
        self.cfg.temperature == 0.0
    }

    /// Whether the choice depends on the recent tokens (speculative decoding, which
    /// scores several positions at once from one state, refuses such a sampler).
    pub fn has_penalties(&self) -> bool {
        self.cfg.penalties.active()
    }

    /// Record tokens the penalties should see (the prompt, before the first sample).
    pub fn prime(&mut self, tokens: &[u32]) {
        for &t in tokens {
            self.accept(t);
        }
    }

    /// Record one token (`sample` records the tokens it returns).
    pub fn accept(&mut self, t: u32) {
        let n = self.cfg.penalties.last_n;
        if n == 0 {
            return;
        }
        if self.recent.len() == n {
            self.recent.pop_front();
        }
        self.recent.push_back(t);
    }

    /// A uniform draw in [0, 1) from the sampler's stream.
    pub fn uniform(&mut self) -> f64 {
        self.next_f64()
    }

    /// Draw from a normalized sparse distribution.
    pub fn draw(&mut self, probs: &[(u32, f64)]) -> u32 {
        let r = self.next_f64();
        let mut acc = 0f64;
        for &(id, p) in probs {
            acc += p;
            if r < acc {
                return id;
            }
        }
        probs.last().map_or(0, |&(id, _)| id)
    }

    fn next_f64(&mut self) -> f64 {
        self.rng.next_f64()
    }

    /// The next token: penalties, then greedy or a draw from the filtered distribution.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let t = if self.has_penalties() {
            let mut l = logits.to_vec();
            self.penalize(&mut l);
            self.choose(&l)
        } else {
            self.choose(logits)
        };
        self.accept(t);
        t
    }

    fn choose(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature == 0.0 {
            return argmax(logits);
        }
        let probs = self.filtered_probs(logits);
        self.draw(&probs)
    }

    /// Apply the repetition penalties for the recent tokens to `logits` in place.
    pub fn penalize(&self, logits: &mut [f32]) {
        let p = self.cfg.penalties;
        if !p.active() {
            return;
        }
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in &self.recent {
            *counts.entry(t).or_default() += 1;
        }
        for (&t, &c) in &counts {
            let Some(l) = logits.get_mut(t as usize) else {
                continue;
            };
            *l = if *l <= 0.0 {
                *l * p.repeat
            } else {
                *l / p.repeat
            };
            *l -= c as f32 * p.frequency + p.presence;
        }
    }

    /// The distribution sampled from (penalties not applied): top-k, top-p and min-p on
    /// the logits, then the temperature over what is left; sorted by decreasing
    /// probability and normalized. The filters see the untempered distribution, as in
    /// llama.cpp's default chain, so they keep the same tokens at every temperature.
    pub fn filtered_probs(&self, logits: &[f32]) -> Vec<(u32, f64)> {
        let mut items: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l as f64))
            .collect();
        items.sort_by(|a, b| b.1.total_cmp(&a.1));
        if self.cfg.top_k > 0 {
            items.truncate(self.cfg.top_k);
        }
        let max = items.first().map_or(0.0, |x| x.1);
        let weights: Vec<f64> = items.iter().map(|x| (x.1 - max).exp()).collect();
        let sum: f64 = weights.iter().sum();
        let mut kept = 0;
        let mut acc = 0.0;
        for w in &weights {
            acc += w / sum;
            kept += 1;
            if acc >= self.cfg.top_p as f64 {
                break;
            }
        }
        // min-p: relative to the top token, whose weight is 1.
        let min_p = self.cfg.min_p as f64;
        kept = weights[..kept]
            .iter()
            .take_while(|&&w| w >= min_p)
            .count()
            .max(1);
        items.truncate(kept);
        let t = (self.cfg.temperature as f64).max(1e-6);
        let mut total = 0.0;
        for it in items.iter_mut() {
            it.1 = ((it.1 - max) / t).exp();
            total += it.1;
        }
        for it in items.iter_mut() {
            it.1 /= total;
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.8,
            top_k: 1,
            top_p: 1.0,
            seed: 3,
            ..Default::default()
        })
        .unwrap();
        for _ in 0..10 {
            assert_eq!(s.sample(&[0.1, 2.0, 1.9]), 1);
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // softmax of ln(0.5), ln(0.3), ln(0.2) = 0.5, 0.3, 0.2; top-p 0.7 keeps the first two.
        let s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.7,
            seed: 0,
            ..Default::default()
        })
        .unwrap();
        let p = s.filtered_probs(&[0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()]);
        assert_eq!(p.len(), 2);
        assert!((p[0].1 - 0.625).abs() < 1e-6); // 0.5 / 0.8
    }

    #[test]
    fn same_seed_same_samples() {
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 42,
            ..Default::default()
        };
        let logits = [0.0f32, 0.1, 0.2, 0.3];
        let (mut a, mut b) = (Sampler::new(cfg).unwrap(), Sampler::new(cfg).unwrap());
        let xa: Vec<u32> = (0..20).map(|_| a.sample(&logits)).collect();
        let xb: Vec<u32> = (0..20).map(|_| b.sample(&logits)).collect();
        assert_eq!(xa, xb);
    }

    #[test]
    fn bad_options_are_errors() {
        assert!(Sampler::new(SamplerConfig {
            temperature: -1.0,
            ..Default::default()
        })
        .is_err());
        assert!(Sampler::new(SamplerConfig {
            top_p: 0.0,
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn min_p_drops_tokens_far_below_the_top_one() {
        // Probabilities 0.6, 0.3, 0.1: min-p 0.2 keeps tokens with p ≥ 0.12.
        let s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.2,
            ..Default::default()
        })
        .unwrap();
        let p = s.filtered_probs(&[0.6f32.ln(), 0.3f32.ln(), 0.1f32.ln()]);
        assert_eq!(p.iter().map(|x| x.0).collect::<Vec<_>>(), [0, 1]);
        assert!((p[0].1 - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn the_filters_see_the_untempered_distribution() {
        // top-p 0.7 keeps tokens 0 and 1 at any temperature; the temperature then
        // reshapes only those two.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        for t in [0.5f32, 1.0, 3.0] {
            let s = Sampler::new(SamplerConfig {
                temperature: t,
                top_k: 0,
                top_p: 0.7,
                ..Default::default()
            })
            .unwrap();
            let p = s.filtered_probs(&logits);
            assert_eq!(p.len(), 2, "temperature {t}");
            let want = 1.0 / (1.0 + (0.6f64).powf(1.0 / t as f64));
            assert!((p[0].1 - want).abs() < 1e-6, "temperature {t}: {p:?}");
        }
    }

    #[test]
    fn penalties_follow_llama_cpps_rule() {
        let mut s = Sampler::new(SamplerConfig {
            penalties: Penalties {
                repeat: 2.0,
                frequency: 0.5,
                presence: 0.25,
                last_n: 3,
            },
            ..Default::default()
        })
        .unwrap();
        // Token 0 falls out of the window of 3; 1 is seen twice, 2 once.
        s.prime(&[0, 1, 2, 1]);
        let mut l = [4.0f32, 4.0, -1.0, 4.0];
        s.penalize(&mut l);
        assert_eq!(
            l,
            [4.0, 4.0 / 2.0 - 2.0 * 0.5 - 0.25, -2.0 - 0.5 - 0.25, 4.0]
        );
    }

    #[test]
    fn a_repeat_penalty_changes_a_greedy_choice() {
        // Greedy on fixed logits repeats token 1 forever; with the penalty a recent token
        // loses to the runner-up when its logit falls below it (3 / 1.3 < 2.5).
        let logits = [1.0f32, 3.0, 2.5];
        let mut plain = Sampler::new(SamplerConfig::default()).unwrap();
        assert!((0..4).all(|_| plain.sample(&logits) == 1));
        let mut s = Sampler::new(SamplerConfig {
            penalties: Penalties {
                repeat: 1.3,
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        let got: Vec<u32> = (0..4).map(|_| s.sample(&logits)).collect();
        assert_eq!(got, [1, 2, 1, 1]);
    }

    #[test]
    fn bad_penalties_and_min_p_are_errors() {
        for cfg in [
            SamplerConfig {
                min_p: 1.5,
                ..Default::default()
            },
            SamplerConfig {
                penalties: Penalties {
                    repeat: 0.0,
                    ..Default::default()
                },
                ..Default::default()
            },
            SamplerConfig {
                penalties: Penalties {
                    frequency: f32::NAN,
                    ..Default::default()
                },
                ..Default::default()
            },
        ] {
            assert!(Sampler::new(cfg).is_err(), "{cfg:?}");
        }
    }
}
