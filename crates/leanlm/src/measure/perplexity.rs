//! Perplexity. The text is tokenized once and cut into non-overlapping chunks of `ctx`
//! tokens. llama.cpp's protocol scores only the second half of each chunk (every scored
//! token sees at least ctx/2 tokens of context); the papers' protocol (Wanda, SparseGPT:
//! seqlen 2048) scores every token after the first.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::{Logits, Model};
use crate::run::early_exit::{step, ExitPolicy};
use crate::tokenizer::Tokenizer;

/// Accumulates negative log-likelihoods; PPL = exp(mean NLL), and its uncertainty is the
/// standard error of the mean NLL propagated through exp (as llama.cpp reports it).
#[derive(Debug, Default, Clone, Copy)]
pub struct RunningNll {
    sum: f64,
    sum_sq: f64,
    count: usize,
}

impl RunningNll {
    pub fn push(&mut self, nll: f64) {
        self.sum += nll;
        self.sum_sq += nll * nll;
        self.count += 1;
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }

    pub fn ppl(&self) -> f64 {
        self.mean().exp()
    }

    /// Standard error of the PPL estimate: ppl · sqrt(var(nll) / (n − 1)).
    pub fn ppl_stderr(&self) -> f64 {
        if self.count < 2 {
            return f64::NAN;
        }
        let n = self.count as f64;
        let var = (self.sum_sq / n - self.mean().powi(2)).max(0.0);
        self.ppl() * (var / (n - 1.0)).sqrt()
    }
}

/// −log softmax(logits)[target], computed stably.
pub fn nll_of(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln() - logits[target as usize] as f64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Second half of each chunk (llama-perplexity).
    LlamaCpp,
    /// Every position after the first (the pruning papers).
    Full,
}

impl Protocol {
    /// First scored target position within a chunk.
    pub fn first_target(self, ctx: usize) -> usize {
        match self {
            Protocol::LlamaCpp => ctx / 2 + 1,
            Protocol::Full => 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct PerplexityOptions {
    pub ctx: usize,
    pub protocol: Protocol,
    /// Evaluate only the first N chunks.
    pub max_chunks: Option<usize>,
}

pub struct PerplexityReport {
    pub tokens_in_file: usize,
    pub chunks: usize,
    pub ctx: usize,
    pub nll: RunningNll,
    /// Running PPL after each chunk, as llama-perplexity prints it.
    pub per_chunk: Vec<f64>,
}

/// Run the protocol over `text`; `on_chunk(i, n, running)` is called after each chunk.
pub fn perplexity(
    model: &Model,
    tok: &Tokenizer,
    text: &str,
    opt: &PerplexityOptions,
    on_chunk: impl FnMut(usize, usize, &RunningNll),
) -> Result<PerplexityReport> {
    let chunks = Chunks::new(model, tok, text, opt)?;
    perplexity_of(model, &chunks, on_chunk)
}

/// The perplexity protocol over chunks already cut.
pub fn perplexity_of(
    model: &Model,
    chunks: &Chunks,
    mut on_chunk: impl FnMut(usize, usize, &RunningNll),
) -> Result<PerplexityReport> {
    let mut nll = RunningNll::default();
    let mut per_chunk = Vec::with_capacity(chunks.len());
    let v = model.vocab_size();
    for c in 0..chunks.len() {
        let (logits, targets) = chunks.score(model, &chunks.get(c))?;
        for (j, &target) in targets.iter().enumerate() {
            nll.push(nll_of(&logits[j * v..(j + 1) * v], target));
        }
        per_chunk.push(nll.ppl());
        on_chunk(c, chunks.len(), &nll);
    }
    Ok(PerplexityReport {
        tokens_in_file: chunks.tokens.len(),
        chunks: chunks.len(),
        ctx: chunks.ctx,
        nll,
        per_chunk,
    })
}

/// A text cut into evaluation chunks.
pub struct Chunks {
    pub tokens: Vec<u32>,
    ctx: usize,
    count: usize,
    protocol: Protocol,
    bos: Option<u32>,
    /// Score positions token by token with early exit (the unscored prefix runs whole).
    early_exit: Option<ExitPolicy>,
    /// Blocks run by early-exit positions, and their count.
    exit_blocks: AtomicUsize,
    exit_positions: AtomicUsize,
}

impl Chunks {
    /// Tokenize `text` and cut it for `model`; the context must fit the model and hold
    /// at least one scored token.
    pub fn new(
        model: &Model,
        tok: &Tokenizer,
        text: &str,
        opt: &PerplexityOptions,
    ) -> Result<Self> {
        let ctx = opt.ctx;
        if ctx < 2 || opt.protocol.first_target(ctx) >= ctx {
            return Err(Error::InvalidInput(format!(
                "context {ctx} is too small: no token of a chunk would be scored"
            )));
        }
        if ctx > model.config.context_len {
            return Err(Error::InvalidInput(format!(
                "context {ctx} is larger than the model's {} positions",
                model.config.context_len
            )));
        }
        let tokens = tok.encode(text, true, false)?;
        let available = tokens.len() / ctx;
        if available == 0 {
            return Err(Error::InvalidInput(format!(
                "the text has {} tokens, fewer than one chunk of {ctx}",
                tokens.len()
            )));
        }
        Ok(Self {
            count: opt.max_chunks.map_or(available, |c| c.min(available)),
            tokens,
            ctx,
            protocol: opt.protocol,
            // llama.cpp starts every chunk with BOS when the model wants one.
            bos: if tok.add_bos { tok.bos } else { None },
            early_exit: None,
            exit_blocks: AtomicUsize::new(0),
            exit_positions: AtomicUsize::new(0),
        })
    }

    /// Score with early exit under `policy` (checked against `model`); the exit counts
    /// start again from zero.
    pub fn with_early_exit(mut self, model: &Model, policy: ExitPolicy) -> Result<Self> {
        policy.check(model)?;
        self.early_exit = Some(policy);
        self.exit_blocks.store(0, Ordering::Relaxed);
        self.exit_positions.store(0, Ordering::Relaxed);
        Ok(self)
    }

    /// Mean blocks run per scored position under early exit.
    pub fn mean_exit_blocks(&self) -> Option<f64> {
        self.early_exit?;
        let n = self.exit_positions.load(Ordering::Relaxed);
        Some(self.exit_blocks.load(Ordering::Relaxed) as f64 / n.max(1) as f64)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// FNV-1a over the tokens evaluated, the context and the protocol: identifies the
    /// positions a base-logits cache belongs to.
    pub fn fingerprint(&self) -> u64 {
        let mut h = crate::numerics::Fnv1a::default();
        h.eat(self.ctx as u64);
        h.eat(self.protocol.first_target(self.ctx) as u64);
        h.eat(self.bos.map_or(u64::MAX, |b| b as u64));
        for &t in &self.tokens[..self.count * self.ctx] {
            h.eat(t as u64);
        }
        h.0
    }

    pub fn get(&self, c: usize) -> Vec<u32> {
        let mut chunk = self.tokens[c * self.ctx..(c + 1) * self.ctx].to_vec();
        if let Some(bos) = self.bos {
            chunk[0] = bos;
        }
        chunk
    }

    /// Run `model` on `chunk`: logits of the scored positions (row j predicts
    /// `targets[j]`) and those targets.
    pub fn score(&self, model: &Model, chunk: &[u32]) -> Result<(Vec<f32>, Vec<u32>)> {
        let first = self.protocol.first_target(self.ctx);
        let mut cache = model.new_cache();
        if let Some(policy) = &self.early_exit {
            // As in generation: the prefix in one pass, then one token at a time.
            let v = model.vocab_size();
            let mut logits = Vec::with_capacity((self.ctx - first) * v);
            logits.extend(model.forward(&chunk[..first], &mut cache, Logits::Last)?);
            for &t in &chunk[first..self.ctx - 1] {
                let (l, blocks) = step(model, t, &mut cache, policy)?;
                logits.extend(l);
                self.exit_blocks.fetch_add(blocks, Ordering::Relaxed);
                self.exit_positions.fetch_add(1, Ordering::Relaxed);
            }
            return Ok((logits, chunk[first..].to_vec()));
        }
        self.score_full(model, chunk)
    }

    /// [`Self::score`] with every block run, whatever the early-exit policy: the
    /// reference a base model's logits are taken from.
    pub fn score_full(&self, model: &Model, chunk: &[u32]) -> Result<(Vec<f32>, Vec<u32>)> {
        let first = self.protocol.first_target(self.ctx);
        let mut cache = model.new_cache();
        // Positions first-1 .. ctx-2 predict tokens first .. ctx-1; the last position's
        // logits (predicting past the chunk) are computed and dropped.
        let mut logits = model.forward(chunk, &mut cache, Logits::Tail(self.ctx - first + 1))?;
        logits.truncate((self.ctx - first) * model.vocab_size());
        Ok((logits, chunk[first..].to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_hand_checked() {
        // logits ln(1), ln(2), ln(1): p = [0.25, 0.5, 0.25]
        let l = [0f32, 2f32.ln(), 0.0];
        assert!((nll_of(&l, 1) - 2f64.ln()).abs() < 1e-6);
        assert!((nll_of(&l, 0) - 4f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn running_ppl_and_error_hand_checked() {
        // NLLs ln2 and ln8: mean ln4, PPL 4. var = ((ln2−ln4)² + (ln8−ln4)²)/2 = ln²2,
        // stderr of mean = sqrt(ln²2 / 1) = ln2, PPL error = 4·ln2.
        let mut r = RunningNll::default();
        r.push(2f64.ln());
        r.push(8f64.ln());
        assert!((r.ppl() - 4.0).abs() < 1e-9);
        assert!((r.ppl_stderr() - 4.0 * 2f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn uniform_model_has_perplexity_equal_to_vocab() {
        let mut r = RunningNll::default();
        for t in 0..5u32 {
            r.push(nll_of(&[0.3f32; 7], t));
        }
        assert!((r.ppl() - 7.0).abs() < 1e-5);
    }
}
