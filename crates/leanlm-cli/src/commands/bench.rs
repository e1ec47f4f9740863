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
    /// Also measure this machine's memory read bandwidth with the same threads (1 GiB
    /// buffer, best of 5 passes), to see how close decoding comes to the physical limit.
    #[arg(long)]
    bandwidth: bool,
    /// Real text for the decode test with early exit or speculation, whose speed depends
    /// on the tokens: each repetition decodes -n tokens greedily after 64 tokens of it.
    #[arg(long, value_name = "FILE")]
    text: Option<std::path::PathBuf>,
    #[command(flatten)]
    spec: super::SpecArgs,
    #[command(flatten)]
    exit: super::ExitArgs,
}

/// What adaptive decoding did over all decode repetitions.
#[derive(Default, serde::Serialize)]
struct Adaptive {
    exit_histogram: Vec<usize>,
    mean_blocks: Option<f64>,
    drafted: usize,
    accepted: usize,
    rounds: usize,
    /// Blocks run (draft and target) per token decoded after the first.
    blocks_per_token: Option<f64>,
    /// Accepted drafts per verification pass, plus the target's own token.
    tokens_per_target_pass: Option<f64>,
    /// FLOPs per decoded token: the dense figure scaled by blocks run per token.
    effective_flops_per_token: Option<f64>,
    #[serde(skip)]
    layer_evals: usize,
    #[serde(skip)]
    decoded: usize,
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

/// Decode `n` tokens greedily after 64 tokens of `text` starting at `offset`, with early
/// exit or speculation; tokens/s after the first token.
fn adaptive_decode_speed(
    loaded: &leanlm::model::Loaded,
    draft: Option<&Model>,
    a: &Args,
    text: &[u32],
    offset: usize,
    acc: &mut Adaptive,
) -> Result<f64> {
    let start = offset % text.len().saturating_sub(64).max(1);
    let prompt = &text[start..(start + 64).min(text.len())];
    let mut sampler = leanlm::run::Sampler::new(leanlm::run::SamplerConfig::default())?;
    let m = &loaded.model;
    let g = if let Some(policy) = a.exit.policy() {
        let (g, st) = leanlm::run::generate_early_exit(
            m,
            prompt,
            a.n_gen,
            &mut sampler,
            &[],
            &policy,
            leanlm::run::keep_going,
        )?;
        acc.exit_histogram.resize(st.histogram.len(), 0);
        for (h, c) in acc.exit_histogram.iter_mut().zip(&st.histogram) {
            *h += c;
        }
        g
    } else {
        let drafter = a.spec.drafter(draft);
        let (g, st) = leanlm::run::generate_speculative(
            m,
            &drafter,
            prompt,
            a.n_gen,
            &mut sampler,
            &[],
            a.spec.options(),
            leanlm::run::keep_going,
        )?;
        acc.drafted += st.drafted;
        acc.accepted += st.accepted;
        acc.rounds += st.rounds;
        acc.layer_evals += st.draft_layer_evals + st.target_layer_evals;
        acc.decoded += g.tokens.len().saturating_sub(1);
        g
    };
    Ok(g.decode_tokens_per_sec())
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
    // The median needs a handful; a count beyond this is a typo that would run for ever.
    if a.reps > 1000 {
        anyhow::bail!("-r {}: at most 1000 repetitions", a.reps);
    }
    let adaptive = a.exit.threshold.is_some() || a.spec.enabled();
    if a.exit.threshold.is_some() && a.spec.enabled() {
        anyhow::bail!("choose early exit or speculative decoding, not both");
    }
    if adaptive && a.text.is_none() {
        anyhow::bail!(
            "early exit and speculation depend on the tokens: give --text FILE (e.g. WikiText-2) for the decode test"
        );
    }
    let loaded = a.model.load()?;
    let m = &loaded.model;
    let draft = a.spec.load_draft(&loaded)?;
    let text = match &a.text {
        Some(p) if adaptive => {
            let ids = loaded
                .tokenizer
                .encode(&super::read_utf8(p)?, false, false)?;
            if ids.len() < 65 {
                anyhow::bail!("{}: fewer than 65 tokens", p.display());
            }
            ids
        }
        _ => Vec::new(),
    };
    let mut acc = Adaptive::default();
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
            .map(|r| {
                if adaptive {
                    let d = draft.as_ref().map(|d| &d.model);
                    adaptive_decode_speed(&loaded, d, &a, &text, r * 7919, &mut acc)
                } else {
                    decode_speed(m, a.n_gen)
                }
            })
            .collect::<Result<_>>()?,
    );
    if !acc.exit_histogram.is_empty() {
        acc.mean_blocks = Some(leanlm::run::early_exit::mean_blocks(&acc.exit_histogram));
        acc.blocks_per_token = acc.mean_blocks;
    } else if acc.decoded > 0 {
        acc.blocks_per_token = Some(acc.layer_evals as f64 / acc.decoded as f64);
        acc.tokens_per_target_pass =
            Some((acc.accepted + acc.rounds) as f64 / acc.rounds.max(1) as f64);
    }
    // CPU seconds (all threads) per decoded token → CPU-hours per million tokens.
    let cpu_hours_per_mtok = cpu0
        .zip(cost::cpu_seconds())
        .map(|(t0, t1)| (t1 - t0) / (a.reps * a.n_gen) as f64 * 1e6 / 3600.0);
    let threads = rayon::current_num_threads();
    let c = cost::ModelCost::of(m, a.n_prompt);
    acc.effective_flops_per_token = acc
        .blocks_per_token
        .map(|b| c.flops_per_token_effective * b / m.layers.len() as f64);
    let (rss, peak) = cost::memory().unwrap_or((0, 0));
    let weight_bytes = c.weight_bytes_per_token;
    let ttft = a.n_prompt as f64 / pp.median;
    let weight_rate = weight_bytes as f64 * tg.median;
    let bandwidth = a
        .bandwidth
        .then(|| leanlm::measure::bandwidth::read_bandwidth(1 << 30, 5));
    if a.json {
        let s = |name: &str, n: usize, st: &Stat| json!({"test": name, "n": n, "tokens_per_sec": st.median, "min": st.min, "max": st.max, "reps": a.reps});
        println!(
            "{}",
            json!({
                "model": a.model.path(), "threads": threads, "kernels": leanlm::quant::dot::simd_level(),
                "activation_bits": activation_bits(loaded.model.precision),
                "cost": c, "file_bytes": loaded.file_bytes(), "rss_bytes": rss, "peak_rss_bytes": peak,
            "time_to_first_token_s": ttft, "cpu_hours_per_million_tokens": cpu_hours_per_mtok,
            "weight_bytes_per_token": weight_bytes,
            "weight_bytes_per_sec_at_tg": weight_rate, "memory_read_bytes_per_sec": bandwidth,
                "adaptive": adaptive.then_some(&acc),
                "results": [s(&format!("pp{}", a.n_prompt), a.n_prompt, &pp), s(&format!("tg{}", a.n_gen), a.n_gen, &tg)]
            })
        );
    } else {
        println!(
            "model: {} | threads: {threads} | kernels: {} | activations: {}-bit",
            a.model.path().display(),
            leanlm::quant::dot::simd_level(),
            activation_bits(loaded.model.precision)
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
        if let Some(b) = acc.mean_blocks {
            println!(
                "early exit: {b:.2} of {} blocks per decoded token",
                m.layers.len()
            );
        }
        if acc.rounds > 0 {
            println!(
                "speculative: {}/{} drafts accepted ({:.0}%), {:.2} tokens per target pass",
                acc.accepted,
                acc.drafted,
                100.0 * acc.accepted as f64 / acc.drafted.max(1) as f64,
                (acc.accepted + acc.rounds) as f64 / acc.rounds as f64
            );
        }
        println!(
            "decode streams {:.1} MB of weights per token: {:.1} GB/s at tg median{}",
            weight_bytes as f64 / 1e6,
            weight_rate / 1e9,
            bandwidth.map_or(String::new(), |b| format!(
                " ({:.0}% of the {:.1} GB/s this machine reads with {threads} threads)",
                100.0 * weight_rate / b,
                b / 1e9
            ))
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

/// Bits the quantized kernels round activations to.
fn activation_bits(p: leanlm::quant::activation::Precision) -> u32 {
    match p {
        leanlm::quant::activation::Precision::Int8 => 8,
        leanlm::quant::activation::Precision::Int16 => 16,
    }
}
