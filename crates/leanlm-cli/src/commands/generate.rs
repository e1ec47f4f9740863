use std::io::Write;

use anyhow::{Context, Result};
use leanlm::run::{generate, Sampler, SamplerConfig};
use leanlm::tokenizer::StreamDecoder;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArg,
    #[command(flatten)]
    text: super::TextArg,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 64)]
    n: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long = "temp", default_value_t = 0.0)]
    temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Random seed for sampling (same seed, same text).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Wrap the prompt in the model's chat template (one user turn).
    #[arg(long)]
    chat: bool,
    /// Keep generating after the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// Print JSON with token ids, text and timings instead of streaming text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let prompt = a.text.read()?;
    let loaded = a.model.load()?;
    let tok = &loaded.tokenizer;
    let text = if a.chat {
        leanlm::run::chat::user_turn(tok.chat_template.as_deref(), &prompt)?
    } else {
        prompt
    };
    let ids = tok.encode(&text, true, a.chat)?;
    if ids.is_empty() {
        anyhow::bail!("the prompt is empty: give some text with -p or -f");
    }
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    })?;
    let stop = if a.ignore_eos { None } else { tok.eos };
    let mut stream = StreamDecoder::default();
    let mut out = std::io::stdout().lock();
    if !a.json {
        write!(out, "{text}")?;
    }
    let g = generate(&loaded.model, &ids, a.n, &mut sampler, stop, |id| {
        if !a.json && Some(id) != stop {
            let _ = write!(out, "{}", stream.push(tok.token_bytes(id)));
            let _ = out.flush();
        }
    })
    .context("generation failed")?;
    if a.json {
        let text = tok.decode_lossy(&g.tokens);
        let j = json!({
            "prompt_tokens": ids, "tokens": g.tokens, "text": text,
            "prompt_tokens_per_sec": g.prompt_tokens_per_sec(),
            "decode_tokens_per_sec": g.decode_tokens_per_sec(),
            "time_to_first_token_s": g.prompt_secs,
        });
        println!("{j}");
    } else {
        writeln!(out, "{}", stream.finish())?;
        eprintln!(
            "\nprompt: {} tokens, {:.1} tok/s | generated: {} tokens, {:.1} tok/s | {} threads, {} kernels",
            g.prompt_tokens,
            g.prompt_tokens_per_sec(),
            g.tokens.len(),
            g.decode_tokens_per_sec(),
            rayon::current_num_threads(),
            leanlm::quant::dot::simd_level()
        );
    }
    Ok(())
}
