//! `leanlm chat`: a conversation in the terminal, like `llama-cli -cnv`.
//!
//! Each turn renders the whole history through the model's chat template; the KV cache
//! keeps what the previous turns already ran (`run::session`). Ctrl-C stops the answer
//! being written; a second Ctrl-C, or one at the prompt, exits.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::SeqCst};
use std::sync::Arc;

use anyhow::{Context, Result};
use leanlm::run::chat::{self, Message};
use leanlm::run::session::Session;
use leanlm::run::stop::StopStrings;
use leanlm::run::Sampler;
use leanlm::tokenizer::StreamDecoder;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArg,
    /// A system message before the conversation (llama.cpp's -sys).
    #[arg(long = "system-prompt", visible_alias = "sys", value_name = "TEXT")]
    system: Option<String>,
    /// Most tokens per answer.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    n: usize,
    /// Context size for the whole conversation (default: the model's).
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    ctx: Option<usize>,
    /// Stop an answer when it contains TEXT (repeatable); TEXT is not shown.
    #[arg(short = 'r', long = "reverse-prompt", value_name = "TEXT")]
    stop: Vec<String>,
    #[command(flatten)]
    sampling: super::SamplingArgs,
    #[command(flatten)]
    gpu: super::GpuArg,
}

const HELP: &str = "/clear forgets the conversation, /save FILE writes it as JSON, /exit leaves; \
                    Ctrl-C stops an answer, a second Ctrl-C exits";

pub fn run(a: Args) -> Result<()> {
    a.gpu.check()?;
    let mut loaded = a.model.load()?;
    if let Some(c) = a.ctx {
        super::generate::set_context(&mut loaded.model, c)?;
    }
    let tok = &loaded.tokenizer;
    let model = &loaded.model;
    let family = model.config.family();
    let template = chat::template_of(tok, family).ok_or_else(|| {
        anyhow::anyhow!(
            "this model has no chat template (and {} has no default): use generate",
            family.gguf
        )
    })?;
    let (config, seed) = a.sampling.config();
    if config.temperature > 0.0 && a.sampling.seed.is_none() {
        eprintln!("seed: {seed}");
    }
    let mut sampler = Sampler::new(config)?;
    StopStrings::new(&a.stop)?;
    let end = tok.end_of_generation();

    // Ctrl-C: the first one while answering stops the answer; any other exits.
    let answering = Arc::new(AtomicBool::new(false));
    let interrupts = Arc::new(AtomicU8::new(0));
    {
        let (answering, interrupts) = (answering.clone(), interrupts.clone());
        ctrlc::set_handler(move || {
            if answering.load(SeqCst) && interrupts.fetch_add(1, SeqCst) == 0 {
                return;
            }
            eprintln!();
            std::process::exit(130);
        })
        .context("cannot install the Ctrl-C handler")?;
    }

    let mut history: Vec<Message> = a.system.iter().map(|s| Message::new("system", s)).collect();
    let mut session = Session::new(model);
    eprintln!(
        "leanlm chat: {} ({} context). {HELP}",
        a.model.path().display(),
        model.config.context_len
    );
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        write!(out, "\n> ")?;
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            writeln!(out)?;
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/help" => {
                eprintln!("{HELP}");
                continue;
            }
            "/clear" => {
                history.retain(|m| m.role == "system");
                session.clear();
                eprintln!("(conversation cleared)");
                continue;
            }
            cmd if cmd.starts_with("/save") => {
                let path = cmd.trim_start_matches("/save").trim();
                match save(path, &history) {
                    Ok(()) => eprintln!("(saved {} messages to {path})", history.len()),
                    Err(e) => eprintln!("error: {e:#}"),
                }
                continue;
            }
            cmd if cmd.starts_with('/') => {
                eprintln!("unknown command {cmd}; {HELP}");
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", line));
        let ids = chat::prompt_ids(tok, template, &history)?;
        let room = model.config.context_len.saturating_sub(ids.len());
        if room == 0 {
            history.pop();
            eprintln!(
                "the conversation ({} tokens) fills the context of {}: /clear to start again",
                ids.len(),
                model.config.context_len
            );
            continue;
        }
        let mut stops = StopStrings::new(&a.stop)?;
        let mut decoder = StreamDecoder::default();
        let mut answer = String::new();
        let interrupted = {
            let interrupts = interrupts.clone();
            move || interrupts.load(SeqCst) > 0
        };
        interrupts.store(0, SeqCst);
        answering.store(true, SeqCst);
        let mut on_token = |t: u32| {
            if end.contains(&t) {
                return std::ops::ControlFlow::Continue(());
            }
            let r = stops.push(&decoder.push(tok.token_bytes(t)));
            let _ = write!(out, "{}", r.text);
            let _ = out.flush();
            answer.push_str(&r.text);
            if r.stopped || interrupted() {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        };
        let result = session.generate(&ids, a.n.min(room), &mut sampler, &end, &mut on_token);
        answering.store(false, SeqCst);
        let (g, reused) = result?;
        // What the stop strings held back, now that none can complete.
        let rest = stops.push(&decoder.finish());
        let mut tail = rest.text;
        if !rest.stopped {
            tail.push_str(&stops.finish());
        }
        answer.push_str(&tail);
        writeln!(out, "{tail}")?;
        if interrupted() {
            eprintln!("(stopped)");
        }
        eprintln!(
            "[{} tokens, {:.1} tok/s; {} prompt tokens run, {reused} reused]",
            g.tokens.len(),
            g.decode_tokens_per_sec(),
            g.prompt_tokens
        );
        history.push(Message::new("assistant", &answer));
    }
}

/// Write the conversation as `{"messages": [...]}`, never over an existing file.
fn save(path: &str, history: &[Message]) -> Result<()> {
    if path.is_empty() {
        anyhow::bail!("/save needs a file name");
    }
    let json = serde_json::to_string_pretty(&serde_json::json!({ "messages": history }))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {path} (an existing file is never replaced)"))?;
    f.write_all(json.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}
