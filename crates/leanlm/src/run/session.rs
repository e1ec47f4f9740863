//! A conversation's generations on one KV cache: each turn's prompt is the whole
//! conversation rendered again, and only what differs from what the cache already holds
//! is run (the unchanged prefix, usually everything before the new user message, is
//! reused).

use std::ops::ControlFlow;
use std::time::Instant;

use super::generate::{check_room, decode_loop, Generation};
use super::sampler::Sampler;
use crate::error::Result;
use crate::model::{KvCache, Logits, Model};

pub struct Session<'a> {
    model: &'a Model,
    cache: KvCache,
    /// The tokens whose K/V the cache holds, in order.
    cached: Vec<u32>,
}

impl<'a> Session<'a> {
    pub fn new(model: &'a Model) -> Self {
        Self {
            model,
            cache: model.new_cache(),
            cached: Vec::new(),
        }
    }

    /// Forget everything (`/clear`).
    pub fn clear(&mut self) {
        self.cache.clear();
        self.cached.clear();
    }

    /// Positions the cache holds.
    pub fn cached(&self) -> usize {
        self.cached.len()
    }

    /// Generate up to `n` tokens after `prompt`, running only the part of `prompt` past
    /// the longest prefix the cache already holds. Returns the generation and how many
    /// prompt tokens were reused. As [`super::generate`]: stops after a token of `stop`,
    /// or when `on_token` breaks.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        n: usize,
        sampler: &mut Sampler,
        stop: &[u32],
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<(Generation, usize)> {
        check_room(self.model, prompt, n)?;
        let common = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // At least one prompt token runs, for the logits of the next one.
        let reuse = common.min(prompt.len() - 1);
        self.cache.truncate(reuse);
        self.cached.truncate(reuse);
        sampler.prime(prompt);
        let t0 = Instant::now();
        let logits = self
            .model
            .forward(&prompt[reuse..], &mut self.cache, Logits::Last)?;
        self.cached.extend_from_slice(&prompt[reuse..]);
        let prompt_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let tokens = decode_loop(logits, n, sampler, stop, on_token, |t| {
            let logits = self.model.forward(&[t], &mut self.cache, Logits::Last)?;
            self.cached.push(t);
            Ok(logits)
        })?;
        Ok((
            Generation {
                tokens,
                prompt_tokens: prompt.len() - reuse,
                prompt_secs,
                decode_secs: t1.elapsed().as_secs_f64(),
            },
            reuse,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::{random_model, RandomSpec};
    use crate::run::{generate, keep_going, SamplerConfig};

    /// A second turn that extends the first gives the tokens a fresh generation gives,
    /// while running only the new part of the prompt.
    #[test]
    fn reusing_the_prefix_changes_nothing_but_the_work() {
        let model = random_model(RandomSpec::default(), 3).unwrap();
        let greedy = || Sampler::new(SamplerConfig::default()).unwrap();
        let mut s = Session::new(&model);
        let first: Vec<u32> = vec![1, 5, 9, 2];
        let (g1, reused) = s
            .generate(&first, 5, &mut greedy(), &[], &mut keep_going)
            .unwrap();
        assert_eq!(reused, 0);
        // The next turn: the first prompt, the answer, and more.
        let mut second = first.clone();
        second.extend_from_slice(&g1.tokens);
        second.extend_from_slice(&[7, 3]);
        let (g2, reused) = s
            .generate(&second, 6, &mut greedy(), &[], &mut keep_going)
            .unwrap();
        // The cache held the prompt and all but the last answer token.
        assert_eq!(reused, first.len() + g1.tokens.len() - 1);
        assert_eq!(g2.prompt_tokens, second.len() - reused);
        let fresh = generate(&model, &second, 6, &mut greedy(), &[], keep_going).unwrap();
        assert_eq!(g2.tokens, fresh.tokens);
        // A prompt that diverges early reuses only the shared start.
        let (g3, reused) = s
            .generate(&[1, 5, 4], 3, &mut greedy(), &[], &mut keep_going)
            .unwrap();
        assert_eq!(reused, 2);
        let fresh = generate(&model, &[1, 5, 4], 3, &mut greedy(), &[], keep_going).unwrap();
        assert_eq!(g3.tokens, fresh.tokens);
        s.clear();
        assert_eq!(s.cached(), 0);
    }
}
