//! Perplexity with llama.cpp's protocol: the text is tokenized once, cut into
//! non-overlapping chunks of `ctx` tokens, and in each chunk only the second half of the
//! positions is scored (each scored token sees at least ctx/2 tokens of context).

use crate::error::{Error, Result};
use crate::model::{Logits, Model};
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

pub struct PerplexityOptions {
    pub ctx: usize,
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
    mut on_chunk: impl FnMut(usize, usize, &RunningNll),
) -> Result<PerplexityReport> {
    let ctx = opt.ctx;
    if ctx < 2 {
        return Err(Error::InvalidInput(format!(
            "context {ctx} is too small: at least 2 tokens"
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
    let chunks = opt.max_chunks.map_or(available, |c| c.min(available));
    let first = ctx / 2;
    let mut nll = RunningNll::default();
    let mut per_chunk = Vec::with_capacity(chunks);
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        // llama.cpp starts every chunk with BOS when the model wants one.
        if let (true, Some(bos)) = (tok.add_bos, tok.bos) {
            chunk[0] = bos;
        }
        let mut cache = model.new_cache();
        // The logits of positions first .. ctx-2 predict tokens first+1 .. ctx-1.
        let logits = model.forward(&chunk, &mut cache, Logits::Tail(ctx - first))?;
        let v = model.vocab_size();
        for j in 0..ctx - 1 - first {
            nll.push(nll_of(&logits[j * v..(j + 1) * v], chunk[first + j + 1]));
        }
        per_chunk.push(nll.ppl());
        on_chunk(c, chunks, &nll);
    }
    Ok(PerplexityReport {
        tokens_in_file: tokens.len(),
        chunks,
        ctx,
        nll,
        per_chunk,
    })
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
