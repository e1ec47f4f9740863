use std::io::Write;

use anyhow::{Context, Result};
use leanlm::run::stop::StopStrings;
use leanlm::run::{generate, generate_early_exit, generate_speculative, Sampler};
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
    #[command(flatten)]
    sampling: super::SamplingArgs,
    /// Stop when the text contains TEXT (llama.cpp's reverse prompt; repeatable). The stop
    /// text is not printed, even when it spans several tokens.
    #[arg(short = 'r', long = "reverse-prompt", value_name = "TEXT")]
    stop: Vec<String>,
    /// Context size: the prompt plus the generated tokens must fit (default: the model's).
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    ctx: Option<usize>,
    #[command(flatten)]
    gpu: super::GpuArg,
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
    a.gpu.check()?;
    let prompt = a.text.read()?;
    let mut loaded = a.model.load()?;
    if let Some(c) = a.ctx {
        set_context(&mut loaded.model, c)?;
    }
    let loaded = loaded;
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
    let (config, seed) = a.sampling.config();
    if config.temperature > 0.0 && a.sampling.seed.is_none() && !a.json {
        eprintln!("seed: {seed}");
    }
    let mut sampler = Sampler::new(config)?;
    let mut stop_text = StopStrings::new(&a.stop)?;
    let mut stopped_by_text = false;
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
    // Text goes through the stop strings, which hold back what could begin one.
    let mut shown = String::new();
    let on_token = |id| {
        if stop.contains(&id) {
            return std::ops::ControlFlow::Continue(());
        }
        let r = stop_text.push(&stream.push(tok.token_bytes(id)));
        shown.push_str(&r.text);
        if !a.json {
            let _ = write!(out, "{}", r.text);
            let _ = out.flush();
        }
        if r.stopped {
            stopped_by_text = true;
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
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
    // What the stop strings held back, now that no stop string can complete.
    let mut tail = String::new();
    if !stopped_by_text {
        let r = stop_text.push(&stream.finish());
        tail.push_str(&r.text);
        if !r.stopped {
            tail.push_str(&stop_text.finish());
        }
    }
    shown.push_str(&tail);
    if a.json {
        let j = json!({
            "prompt_tokens": ids, "tokens": g.tokens, "text": shown, "seed": seed,
            "stopped_by": if stopped_by_text { "stop string" } else if g.tokens.last().is_some_and(|t| stop.contains(t)) { "end token" } else { "length" },
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
        writeln!(out, "{tail}")?;
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

/// Shorten the model's context to `c` positions (`-c`): the prompt and output must fit,
/// and the KV cache never grows past it.
pub fn set_context(model: &mut leanlm::model::Model, c: usize) -> Result<()> {
    let max = model.config.context_len;
    if c == 0 || c > max {
        anyhow::bail!("-c {c}: the context size must be between 1 and the model's {max}");
    }
    model.config.context_len = c;
    Ok(())
}
