use std::time::Instant;

use anyhow::Result;
use leanlm::measure::cost;
use leanlm::model::{Logits, Model};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArg,
    /// Prompt tokens per prompt-processing test (like llama-bench -p).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Tokens generated per decode test (like llama-bench -n).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Repetitions of each test; the median is reported.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    reps: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Median and (min, max) of tokens/s over the repetitions.
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stat {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

/// Token ids spread over the vocabulary, fixed so runs compare.
fn tokens(model: &Model, n: usize) -> Vec<u32> {
    let v = model.vocab_size().min(32_000) as u64;
    (0..n as u64)
        .map(|i| ((i * 7919 + 13) % v) as u32)
        .collect()
}

fn prompt_speed(model: &Model, n: usize) -> Result<f64> {
    let toks = tokens(model, n);
    let mut cache = model.new_cache();
    let t = Instant::now();
    model.forward(&toks, &mut cache, Logits::Last)?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn decode_speed(model: &Model, n: usize) -> Result<f64> {
    let toks = tokens(model, n);
    let mut cache = model.new_cache();
    let t = Instant::now();
    for &tok in &toks {
        model.forward(&[tok], &mut cache, Logits::Last)?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

pub fn run(a: Args) -> Result<()> {
    if a.reps == 0 || a.n_prompt == 0 || a.n_gen == 0 {
        anyhow::bail!("-p, -n and -r must all be at least 1");
    }
    let loaded = a.model.load()?;
    let m = &loaded.model;
    if a.n_prompt.max(a.n_gen) > m.config.context_len {
        anyhow::bail!(
            "-p/-n exceed the model's context of {} tokens",
            m.config.context_len
        );
    }
    // One untimed warm-up of each, as llama-bench does.
    prompt_speed(m, a.n_prompt.min(64))?;
    decode_speed(m, 4)?;
    let pp = stat(
        (0..a.reps)
            .map(|_| prompt_speed(m, a.n_prompt))
            .collect::<Result<_>>()?,
    );
    let cpu0 = cost::cpu_seconds();
    let tg = stat(
        (0..a.reps)
            .map(|_| decode_speed(m, a.n_gen))
            .collect::<Result<_>>()?,
    );
    // CPU seconds (all threads) per decoded token → CPU-hours per million tokens.
    let cpu_hours_per_mtok = cpu0
        .zip(cost::cpu_seconds())
        .map(|(t0, t1)| (t1 - t0) / (a.reps * a.n_gen) as f64 * 1e6 / 3600.0);
    let threads = rayon::current_num_threads();
    let c = cost::ModelCost::of(m, a.n_prompt);
    let (rss, peak) = cost::memory().unwrap_or((0, 0));
    let weight_bytes = c.weight_bytes_per_token;
    let ttft = a.n_prompt as f64 / pp.median;
    if a.json {
        let s = |name: &str, n: usize, st: &Stat| json!({"test": name, "n": n, "tokens_per_sec": st.median, "min": st.min, "max": st.max, "reps": a.reps});
        println!(
            "{}",
            json!({
                "model": a.model.path(), "threads": threads, "kernels": leanlm::quant::dot::simd_level(),
                "cost": c, "file_bytes": loaded.file_bytes(), "rss_bytes": rss, "peak_rss_bytes": peak,
            "time_to_first_token_s": ttft, "cpu_hours_per_million_tokens": cpu_hours_per_mtok,
            "weight_bytes_per_token": weight_bytes,
                "results": [s(&format!("pp{}", a.n_prompt), a.n_prompt, &pp), s(&format!("tg{}", a.n_gen), a.n_gen, &tg)]
            })
        );
    } else {
        println!(
            "model: {} | threads: {threads} | kernels: {}",
            a.model.path().display(),
            leanlm::quant::dot::simd_level()
        );
        println!("{:>8} {:>12} {:>20}", "test", "t/s", "min … max");
        for (name, st) in [
            (format!("pp{}", a.n_prompt), &pp),
            (format!("tg{}", a.n_gen), &tg),
        ] {
            println!(
                "{name:>8} {:>12.2} {:>9.2} … {:>8.2}",
                st.median, st.min, st.max
            );
        }
        println!(
            "decode streams {:.1} MB of weights per token: {:.1} GB/s at tg median",
            weight_bytes as f64 / 1e6,
            weight_bytes as f64 * tg.median / 1e9
        );
        println!(
            "params {:.2} M ({:.2} M non-zero) | {:.1} MB on disk | FLOPs/token {:.1} M dense, {:.1} M effective (ctx {})",
            c.params as f64 / 1e6, c.params_nonzero as f64 / 1e6, loaded.file_bytes() as f64 / 1e6,
            c.flops_per_token_dense / 1e6, c.flops_per_token_effective / 1e6, c.ctx
        );
        println!(
            "time to first token {:.3} s ({} prompt tokens) | RSS {:.0} MB, peak {:.0} MB | {} CPU-hours per million decoded tokens",
            ttft, a.n_prompt, rss as f64 / 1e6, peak as f64 / 1e6,
            cpu_hours_per_mtok.map_or("?".into(), |h| format!("{h:.2}"))
        );
    }
    Ok(())
}
