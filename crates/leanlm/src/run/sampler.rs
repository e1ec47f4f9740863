//! Next-token choice: greedy (temperature 0) or temperature with top-k / top-p filtering.

use crate::error::{Error, Result};
use crate::numerics::SplitMix64;

#[derive(Debug, Clone, Copy)]
pub struct SamplerConfig {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 keeps every token.
    pub top_k: usize,
    /// 1.0 keeps every token.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            seed: 0,
        }
    }
}

pub struct Sampler {
    cfg: SamplerConfig,
    rng: SplitMix64,
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
        Ok(Self {
            cfg,
            rng: SplitMix64(cfg.seed ^ 0x9e37_79b9_7f4a_7c15),
        })
    }

    /// The next uniform draw in [0, 1) from the seeded splitmix64 stream.
    pub fn is_greedy(&self) -> bool {
        self.cfg.temperature == 0.0
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

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature == 0.0 {
            return argmax(logits);
        }
        let probs = self.filtered_probs(logits);
        self.draw(&probs)
    }

    /// The distribution sampled from, after temperature, top-k and top-p, sorted by
    /// decreasing probability and normalized.
    pub fn filtered_probs(&self, logits: &[f32]) -> Vec<(u32, f64)> {
        let t = self.cfg.temperature.max(1e-6) as f64;
        let mut items: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l as f64 / t))
            .collect();
        items.sort_by(|a, b| b.1.total_cmp(&a.1));
        if self.cfg.top_k > 0 {
            items.truncate(self.cfg.top_k);
        }
        let max = items.first().map_or(0.0, |x| x.1);
        let mut sum = 0.0;
        for it in items.iter_mut() {
            it.1 = (it.1 - max).exp();
            sum += it.1;
        }
        let mut kept = 0;
        let mut acc = 0.0;
        for it in items.iter_mut() {
            it.1 /= sum;
            acc += it.1;
            kept += 1;
            if acc >= self.cfg.top_p as f64 {
                break;
            }
        }
        items.truncate(kept);
        let total: f64 = items.iter().map(|x| x.1).sum();
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
}
