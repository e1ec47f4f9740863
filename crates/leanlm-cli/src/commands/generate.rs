use std::io::Write;

use anyhow::{Context, Result};
use leanlm::run::{generate, generate_early_exit, generate_speculative, Sampler, SamplerConfig};
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
    /// Render the prompt as one user turn through the model's own chat template (its
    /// Jinja template, or its family's default when the file has none) and print only the
    /// reply. Generation stops at end-of-turn tokens as well as EOS.
    #[arg(long)]
    chat: bool,
    /// With --chat: a system message before the user turn (llama.cpp's --system-prompt).
    #[arg(long = "system-prompt", visible_alias = "sys", requires = "chat")]
    system: Option<String>,
    /// Keep generating after the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// Print JSON with token ids, text and timings instead of streaming text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    spec: super::SpecArgs,
    #[command(flatten)]
    exit: super::ExitArgs,
}

pub fn run(a: Args) -> Result<()> {
    let prompt = a.text.read()?;
    let loaded = a.model.load()?;
    let tok = &loaded.tokenizer;
    let ids = if a.chat {
        use leanlm::run::chat::{self, Message};
        let family = loaded.model.config.family();
        let template = chat::template_of(tok, family).ok_or_else(|| {
            anyhow::anyhow!(
                "this model has no chat template (and {} has no default); drop --chat",
                family.gguf
            )
        })?;
        let mut messages: Vec<Message> =
            a.system.iter().map(|s| Message::new("system", s)).collect();
        messages.push(Message::new("user", &prompt));
        chat::prompt_ids(tok, template, &messages)?
    } else {
        tok.encode(&prompt, true, false)?
    };
    if ids.is_empty() {
        anyhow::bail!("the prompt is empty: give some text with -p or -f");
    }
    // The prompt and every generated token take a position of the context: a larger -n
    // could only fail later, after allocating for it.
    let context = loaded.model.config.context_len;
    let needed = ids.len().saturating_add(a.n);
    if needed > context {
        anyhow::bail!(
            "the prompt's {} tokens plus -n {} need {needed} positions but the context holds {context}",
            ids.len(),
            a.n
        );
    }
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    })?;
    let stop = if a.ignore_eos {
        Vec::new()
    } else {
        tok.end_of_generation()
    };
    let mut stream = StreamDecoder::default();
    let mut out = std::io::stdout().lock();
    // A chat prints only the reply, never the template's markup.
    if !a.json && !a.chat {
        write!(out, "{prompt}")?;
    }
    let on_token = |id| {
        if !a.json && !stop.contains(&id) {
            let _ = write!(out, "{}", stream.push(tok.token_bytes(id)));
            let _ = out.flush();
        }
        std::ops::ControlFlow::Continue(())
    };
    let draft = a.spec.load_draft(&loaded)?;
    if a.exit.threshold.is_some() && a.spec.enabled() {
        anyhow::bail!("choose early exit or speculative decoding, not both");
    }
    let mut exits = None;
    let (g, spec) = if let Some(policy) = a.exit.policy() {
        let (g, st) = generate_early_exit(
            &loaded.model,
            &ids,
            a.n,
            &mut sampler,
            &stop,
            &policy,
            on_token,
        )
        .context("early-exit generation failed")?;
        exits = Some(st);
        (g, None)
    } else if a.spec.enabled() {
        let drafter = a.spec.drafter(draft.as_ref().map(|d| &d.model));
        let (g, st) = generate_speculative(
            &loaded.model,
            &drafter,
            &ids,
            a.n,
            &mut sampler,
            &stop,
            a.spec.options(),
            on_token,
        )
        .context("speculative generation failed")?;
        (g, Some(st))
    } else {
        let g = generate(&loaded.model, &ids, a.n, &mut sampler, &stop, on_token)
            .context("generation failed")?;
        (g, None)
    };
    if a.json {
        let text = tok.decode_lossy(&g.tokens);
        let j = json!({
            "prompt_tokens": ids, "tokens": g.tokens, "text": text,
            "prompt_tokens_per_sec": g.prompt_tokens_per_sec(),
            "decode_tokens_per_sec": g.decode_tokens_per_sec(),
            "time_to_first_token_s": g.prompt_secs,
            "early_exit": exits.as_ref().map(|st| json!({
                "histogram": st.histogram, "mean_layers": st.mean_layers(),
            })),
            "speculative": spec.as_ref().map(|st| json!({
                "stats": st, "acceptance_rate": st.acceptance_rate(),
                "tokens_per_target_pass": st.tokens_per_round(),
            })),
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
        if let Some(st) = &exits {
            eprintln!(
                "early exit: {:.1} of {} blocks per token on average",
                st.mean_layers(),
                loaded.model.layers.len()
            );
        }
        if let Some(st) = &spec {
            eprintln!(
                "speculative: {} target passes, {}/{} drafts accepted ({:.0}%), {:.2} tokens per pass",
                st.rounds,
                st.accepted,
                st.drafted,
                100.0 * st.acceptance_rate(),
                st.tokens_per_round()
            );
        }
    }
    Ok(())
}
