use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use leanlm::measure::{perplexity, PerplexityOptions};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArg,
    /// Text file for perplexity (llama.cpp protocol: chunks of --ctx, second half scored).
    #[arg(long = "ppl", value_name = "FILE")]
    ppl: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    ctx: usize,
    /// Evaluate only the first N chunks (llama-perplexity --chunks).
    #[arg(long)]
    chunks: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let bytes = std::fs::read(&a.ppl).with_context(|| format!("reading {}", a.ppl.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", a.ppl.display()))?;
    if text.trim().is_empty() {
        anyhow::bail!("{} is empty", a.ppl.display());
    }
    let loaded = a.model.load()?;
    if a.chunks == Some(0) {
        anyhow::bail!("--chunks must be at least 1");
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} chunks, ETA {eta} {msg}")
            .expect("static template"),
    );
    let t0 = std::time::Instant::now();
    let opt = PerplexityOptions {
        ctx: a.ctx,
        max_chunks: a.chunks,
    };
    let r = perplexity(
        &loaded.model,
        &loaded.tokenizer,
        &text,
        &opt,
        |i, n, nll| {
            bar.set_length(n as u64);
            bar.set_position(i as u64 + 1);
            bar.set_message(format!("PPL {:.4} ± {:.4}", nll.ppl(), nll.ppl_stderr()));
        },
    )?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            json!({
                "model": a.model.path(), "file": a.ppl, "protocol": "llama.cpp", "ctx": r.ctx, "chunks": r.chunks,
                "tokens_in_file": r.tokens_in_file, "scored_tokens": r.nll.count(),
                "ppl": r.nll.ppl(), "ppl_stderr": r.nll.ppl_stderr(), "per_chunk": r.per_chunk, "seconds": secs,
            })
        );
    } else {
        let running: Vec<String> = r
            .per_chunk
            .iter()
            .enumerate()
            .map(|(i, p)| format!("[{}]{p:.4}", i + 1))
            .collect();
        println!("{}", running.join(","));
        println!(
            "Final estimate: PPL = {:.4} +/- {:.5} ({} chunks of {}, {} tokens scored, {:.1} s)",
            r.nll.ppl(),
            r.nll.ppl_stderr(),
            r.chunks,
            r.ctx,
            r.nll.count(),
            secs
        );
    }
    Ok(())
}
