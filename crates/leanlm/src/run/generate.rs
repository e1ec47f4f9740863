//! Autoregressive generation: one batched pass over the prompt, then one token at a time.

use std::ops::ControlFlow;
use std::time::Instant;

use super::sampler::Sampler;
use crate::error::{Error, Result};
use crate::model::{KvCache, Logits, Model};

pub struct Generation {
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    /// Seconds for the prompt pass (time to first token).
    pub prompt_secs: f64,
    /// Seconds for the tokens after the first.
    pub decode_secs: f64,
}

impl Generation {
    pub fn decode_tokens_per_sec(&self) -> f64 {
        let n = self.tokens.len().saturating_sub(1);
        if n == 0 || self.decode_secs == 0.0 {
            0.0
        } else {
            n as f64 / self.decode_secs
        }
    }
    pub fn prompt_tokens_per_sec(&self) -> f64 {
        if self.prompt_secs == 0.0 {
            0.0
        } else {
            self.prompt_tokens as f64 / self.prompt_secs
        }
    }
}

/// `on_token` for callers that never stop early.
pub fn keep_going(_: u32) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// Generate up to `n` tokens after `prompt`, stopping early after any token of `stop`. `on_token` sees
/// each token as soon as it is chosen, and ends the generation after it by returning
/// `ControlFlow::Break` (a stop string found in the text, a client gone).
pub fn generate(
    model: &Model,
    prompt: &[u32],
    n: usize,
    sampler: &mut Sampler,
    stop: &[u32],
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Generation> {
    generate_with(
        model,
        prompt,
        n,
        sampler,
        stop,
        &mut on_token,
        |t, cache| model.forward(&[t], cache, Logits::Last),
    )
}

/// The generation loop with the per-token pass supplied: `next(token, cache)` runs one
/// token and returns its logits (a plain pass, or one that may exit early).
pub fn generate_with(
    model: &Model,
    prompt: &[u32],
    n: usize,
    sampler: &mut Sampler,
    stop: &[u32],
    on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    mut next: impl FnMut(u32, &mut KvCache) -> Result<Vec<f32>>,
) -> Result<Generation> {
    check_room(model, prompt, n)?;
    sampler.prime(prompt);
    let mut cache = model.new_cache();
    let t0 = Instant::now();
    let logits = model.forward(prompt, &mut cache, Logits::Last)?;
    let prompt_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let tokens = decode_loop(logits, n, sampler, stop, on_token, |t| next(t, &mut cache))?;
    Ok(Generation {
        tokens,
        prompt_tokens: prompt.len(),
        prompt_secs,
        decode_secs: t1.elapsed().as_secs_f64(),
    })
}

/// What every generation checks before it runs: a prompt, and room in the context for it
/// and `n` more tokens.
pub(crate) fn check_room(model: &Model, prompt: &[u32], n: usize) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::InvalidInput(
            "the prompt is empty: give at least one token".into(),
        ));
    }
    let ctx = model.config.context_len;
    if prompt.len() + n > ctx {
        return Err(Error::ContextOverflow {
            needed: prompt.len() + n,
            ctx,
        });
    }
    Ok(())
}

/// Choose up to `n` tokens, the first from `logits`; each goes to `on_token`, and
/// `next(token)` runs it to give the next logits. Ends after a token of `stop`, at `n`, or
/// when `on_token` breaks (that token included).
pub(crate) fn decode_loop(
    mut logits: Vec<f32>,
    n: usize,
    sampler: &mut Sampler,
    stop: &[u32],
    on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    mut next: impl FnMut(u32) -> Result<Vec<f32>>,
) -> Result<Vec<u32>> {
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let t = sampler.sample(&logits);
        tokens.push(t);
        let flow = on_token(t);
        if stop.contains(&t) || i + 1 == n || flow.is_break() {
            break;
        }
        logits = next(t)?;
    }
    Ok(tokens)
}
