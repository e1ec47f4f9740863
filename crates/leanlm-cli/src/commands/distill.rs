//! `leanlm distill`: train a student (a pruned model, or blocks picked from the teacher)
//! to match a frozen teacher's next-token distributions, then write it like `prune` does.
//! `leanlm distill cache-teacher` stores the teacher's top-k log-probs once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::DType;
use leanlm::distill::{
    self, AdamWConfig, Dataset, Divergence, HiddenLoss, HiddenPair, LogLine, LossConfig, Schedule,
    Student, StudentOptions, Teacher, TrainConfig, Trainer,
};
use leanlm::measure::perplexity::{Chunks, PerplexityOptions, Protocol};
use leanlm::model::destination::{self, OutputKind};
use serde_json::json;

use super::output::{self, OutTypeArg};

#[derive(clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
    leanlm distill --teacher models/SmolLM2-135M-Instruct.Q4_1.gguf --student short6.gguf -o healed.gguf \\\n      \
      --data data/wikitext-2/valid.txt --steps 100 --eval-ppl data/wikitext-2-raw/wiki.test.raw\n  \
    leanlm distill --teacher T.gguf --init-from-teacher layers=0,3,6,9,12,15,18,21 -o draft.gguf --data valid.txt --tokens 200000\n  \
    leanlm distill cache-teacher --teacher T.gguf --data valid.txt -o teacher.cache\n\n\
    Interrupt with Ctrl-C: a checkpoint is written and `--resume` continues exactly where it stopped.\n\
    The log (--log, JSON lines) has one record per step and one per evaluation."
)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Sub>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Run the teacher once over the data and store its top-k log-probs for later runs.
    CacheTeacher(CacheArgs),
}

#[derive(clap::Args)]
struct DataArgs {
    /// Training text files (packed end to end).
    #[arg(long = "data", value_name = "FILE", num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 512)]
    seq: usize,
    /// Fraction of the data's sequences held out for evaluation.
    #[arg(long, default_value_t = 0.05)]
    holdout: f64,
    /// Seed of the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Teacher tokens kept per position (plus the remaining mass).
    #[arg(long, default_value_t = 64)]
    top_k: usize,
    /// Softmax temperature of teacher and student in the distillation loss.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
}

#[derive(clap::Args)]
struct CacheArgs {
    /// The teacher model.
    #[arg(long)]
    teacher: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Cache file to write (an existing file is refused unless it is a teacher cache and
    /// --force is given).
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Replace an existing teacher cache (never any other kind of file).
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// The teacher model (run frozen on its own, possibly quantized, weights).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// The student model (e.g. the output of `leanlm prune`).
    #[arg(long, conflicts_with = "init_from_teacher")]
    student: Option<PathBuf>,
    /// Build the student from teacher blocks: layers=0,2,4 or layers=0-7.
    #[arg(long, value_name = "layers=LIST")]
    init_from_teacher: Option<String>,
    /// Output: a .gguf file, or any other path for a Hugging Face folder. An existing path
    /// is refused unless it is an earlier leanlm output of the same kind and --force is given.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Replace an existing output that leanlm wrote (a GGUF file, or a folder with
    /// leanlm's .leanlm-output marker); nothing else is ever replaced.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    data: Option<DataArgs>,
    /// Optimizer steps.
    #[arg(long, conflicts_with = "tokens")]
    steps: Option<usize>,
    /// Training tokens (sets the steps: tokens / (batch × accum × seq)).
    #[arg(long)]
    tokens: Option<usize>,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 4)]
    accum: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Warm-up steps (linear).
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Learning-rate decay after warm-up.
    #[arg(long, value_parser = ["cosine", "linear", "constant"], default_value = "cosine")]
    schedule: String,
    /// The schedule ends at this fraction of the peak rate.
    #[arg(long, default_value_t = 0.1)]
    min_lr_ratio: f64,
    /// AdamW's decoupled weight decay (matrices only).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Loss: kl (forward KL), rkl (reverse KL), jsd:BETA (generalized JSD), ce (data only).
    #[arg(long, default_value = "kl")]
    loss: String,
    /// Weight of next-token cross-entropy on the data: α·CE + (1−α)·τ²·divergence.
    #[arg(long, default_value_t = 0.0)]
    alpha: f64,
    /// Hidden-state matching: STUDENT_LAYER:TEACHER_LAYER pairs (state after that many
    /// blocks; 0 = embeddings), e.g. 9:12,18:24.
    #[arg(long)]
    hidden: Option<String>,
    /// Hidden-state loss.
    #[arg(long, value_parser = ["mse", "cosine"], default_value = "mse")]
    hidden_loss: String,
    /// Weight of the hidden-state loss.
    #[arg(long, default_value_t = 1.0)]
    hidden_weight: f64,
    /// Read the teacher's top-k from this cache (`distill cache-teacher`) instead of
    /// running it every step.
    #[arg(long)]
    teacher_cache: Option<PathBuf>,
    /// Also train the token embedding (and an untied output head).
    #[arg(long)]
    train_embeddings: bool,
    /// Train every weight, also the zeros of pruned matrices (by default a matrix with
    /// ≥ 1% exact zeros keeps them at zero: a pruned model stays pruned).
    #[arg(long)]
    no_keep_zeros: bool,
    /// Evaluate every N steps (held-out loss, KLD, same-top; PPL with --eval-ppl).
    #[arg(long, default_value_t = 25)]
    eval_every: usize,
    /// Held-out sequences per evaluation.
    #[arg(long, default_value_t = 4)]
    eval_windows: usize,
    /// Perplexity text for evaluations (e.g. WikiText-2 test).
    #[arg(long, value_name = "FILE")]
    eval_ppl: Option<PathBuf>,
    /// 512-token chunks of --eval-ppl per evaluation.
    #[arg(long, default_value_t = 8)]
    eval_chunks: usize,
    /// Checkpoint every N steps (and at the end, and on Ctrl-C).
    #[arg(long, default_value_t = 25)]
    save_every: usize,
    /// Checkpoint file [default: OUTPUT.ckpt].
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint.
    #[arg(long)]
    resume: bool,
    /// Training log, JSON lines [default: OUTPUT.log.jsonl].
    #[arg(long)]
    log: Option<PathBuf>,
    /// Where the student trains: cpu, or cuda[:N] in a build with `--features cuda`
    /// (the teacher always runs on the CPU kernels).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Storage of the written matrices.
    #[arg(long, value_enum, default_value = "f16")]
    outtype: OutTypeArg,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        Some(Sub::CacheTeacher(c)) => cache_teacher(c),
        None => train(a.train),
    }
}

fn cache_teacher(a: CacheArgs) -> Result<()> {
    check_temperature(a.data.temperature)?;
    // The cache's own `.partial` is continued by a re-run, so only the path is checked.
    let inputs: Vec<&Path> = std::iter::once(a.teacher.as_path())
        .chain(a.data.data.iter().map(|p| p.as_path()))
        .collect();
    destination::check(&a.output, OutputKind::TeacherCache, &inputs, a.force)?;
    let teacher = super::load(&a.teacher)?;
    let data = dataset(&a.data, &teacher)?;
    let bar = super::bar("teacher");
    let t0 = Instant::now();
    distill::write_cache(
        &teacher.model,
        &data,
        a.data.top_k,
        a.data.temperature as f32,
        &a.output,
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({} sequences of {} tokens, top-{}, {:.1} MB) in {:.1} s",
        a.output.display(),
        data.n_windows,
        data.seq,
        a.data.top_k,
        output::disk_bytes(&a.output) as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn check_temperature(t: f64) -> Result<()> {
    if !(t > 0.0 && t.is_finite()) {
        anyhow::bail!("--temperature {t} must be a positive number");
    }
    Ok(())
}

fn dataset(d: &DataArgs, teacher: &leanlm::model::Loaded) -> Result<Dataset> {
    if d.top_k == 0 {
        anyhow::bail!("--top-k must be at least 1");
    }
    if d.seq > teacher.model.config.context_len {
        anyhow::bail!(
            "--seq {} is longer than the teacher's context ({})",
            d.seq,
            teacher.model.config.context_len
        );
    }
    Ok(Dataset::from_files(
        &d.data,
        &teacher.tokenizer,
        d.seq,
        d.holdout,
        d.seed,
    )?)
}

fn train(a: TrainArgs) -> Result<()> {
    // Everything that can be checked without loading a model, first.
    let teacher_path = a
        .teacher
        .clone()
        .context("give the teacher: --teacher MODEL")?;
    let out = a
        .output
        .clone()
        .context("give the output: -o OUT.gguf (or a folder)")?;
    let d = a.data.as_ref().context("give training text: --data FILE")?;
    output::check(&out, a.outtype)?;
    let inputs: Vec<&Path> = [&a.teacher, &a.student, &a.teacher_cache]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .chain(d.data.iter().map(|p| p.as_path()))
        .collect();
    output::prepare(&out, &inputs, a.force)?;
    check_temperature(d.temperature)?;
    let divergence = Divergence::parse(&a.loss)?;
    let hidden = a
        .hidden
        .as_deref()
        .map(HiddenPair::parse_list)
        .transpose()?
        .unwrap_or_default();
    let keep = match &a.init_from_teacher {
        Some(s) => Some(distill::parse_layer_list(
            s.strip_prefix("layers=")
                .context("--init-from-teacher takes layers=LIST, e.g. layers=0,2,4")?,
        )?),
        None => None,
    };
    if a.student.is_none() && keep.is_none() {
        anyhow::bail!("give the student: --student MODEL, or --init-from-teacher layers=LIST");
    }
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        anyhow::bail!("--lr {} must be a positive number", a.lr);
    }
    let device = distill::device(&a.device)?;
    let checkpoint = a
        .checkpoint
        .clone()
        .unwrap_or_else(|| suffixed(&out, ".ckpt"));
    let log_path = a
        .log
        .clone()
        .unwrap_or_else(|| suffixed(&out, ".log.jsonl"));
    if checkpoint.exists() && !a.resume {
        anyhow::bail!(
            "{} exists from an earlier run: add --resume to continue it, or remove it",
            checkpoint.display()
        );
    }
    // A fresh run starts its log empty: never truncate a file that was there before
    // unless asked to (--force replaces the earlier run's output, and its log with it).
    if log_path.exists() && !a.resume && !a.force {
        anyhow::bail!(
            "{} already exists: add --force to replace it, or name another --log",
            log_path.display()
        );
    }
    // Sequences per micro-batch are held at once (activations and gradients of each).
    if a.batch > 1024 {
        anyhow::bail!(
            "--batch {}: at most 1024 sequences per micro-batch",
            a.batch
        );
    }

    let teacher = super::load(&teacher_path)?;
    let student_model = match (&a.student, &keep) {
        (Some(p), _) => {
            let s = super::load(p)?;
            // Both the tokenizers and the output heads must agree, token for token.
            if s.tokenizer.spellings() != teacher.tokenizer.spellings()
                || s.model.vocab_size() != teacher.model.vocab_size()
            {
                anyhow::bail!(
                    "teacher and student vocabularies differ (teacher: {} tokens, head {}; student: {} \
                     tokens, head {}): distillation compares them token by token",
                    teacher.tokenizer.vocab_size(),
                    teacher.model.vocab_size(),
                    s.tokenizer.vocab_size(),
                    s.model.vocab_size()
                );
            }
            s.model
        }
        (None, Some(keep)) => distill::init_from_teacher(&teacher.model, keep)?,
        (None, None) => unreachable!("checked above"),
    };
    let data = dataset(d, &teacher)?;
    let steps = match (a.steps, a.tokens) {
        (Some(s), _) => s,
        (None, Some(t)) => t.div_ceil(a.batch.max(1) * a.accum.max(1) * data.seq),
        (None, None) => 100,
    };
    let ppl_chunks = match &a.eval_ppl {
        Some(p) => {
            let text = super::read_utf8(p)?;
            let opt = PerplexityOptions {
                ctx: 512.min(student_model.config.context_len),
                protocol: Protocol::LlamaCpp,
                max_chunks: Some(a.eval_chunks.max(1)),
            };
            Some(Chunks::new(
                &student_model,
                &teacher.tokenizer,
                &text,
                &opt,
            )?)
        }
        None => None,
    };
    let teacher_src = match &a.teacher_cache {
        Some(p) => Teacher::open_cache(p, &data, teacher.model.vocab_size(), d.temperature as f32)?,
        None => Teacher::Live {
            model: &teacher.model,
            k: d.top_k,
            tau: d.temperature as f32,
        },
    };
    let student = Student::new(
        &student_model,
        StudentOptions {
            train_embeddings: a.train_embeddings,
            keep_zeros_above: (!a.no_keep_zeros).then_some(0.01),
        },
        &device,
        DType::F32,
    )?;
    let cfg = TrainConfig {
        steps,
        batch: a.batch,
        accum: a.accum,
        adamw: AdamWConfig {
            lr: a.lr,
            weight_decay: a.weight_decay,
            clip: (a.clip > 0.0).then_some(a.clip),
            ..AdamWConfig::default()
        },
        schedule: Schedule::parse(&a.schedule)?,
        warmup: a.warmup,
        min_lr_ratio: a.min_lr_ratio,
        loss: LossConfig {
            divergence,
            temperature: d.temperature,
            alpha: a.alpha,
        },
        hidden,
        hidden_loss: if a.hidden_loss == "cosine" {
            HiddenLoss::Cosine
        } else {
            HiddenLoss::Mse
        },
        hidden_weight: a.hidden_weight,
        eval_every: a.eval_every,
        eval_windows: a.eval_windows,
        save_every: a.save_every,
        checkpoint: checkpoint.clone(),
        seed: d.seed,
    };
    let mut trainer = Trainer::new(
        cfg,
        student,
        &teacher.model,
        teacher_src,
        &data,
        ppl_chunks.as_ref(),
    )?;

    // Resume: the checkpoint's step, and the log cut back to it.
    let resumed = if a.resume { trainer.resume()? } else { None };
    match resumed {
        Some(step) => {
            truncate_log(&log_path, step)?;
            eprintln!(
                "resuming at step {step} of {steps} from {}",
                checkpoint.display()
            );
        }
        None => {
            if a.resume {
                eprintln!(
                    "no checkpoint at {}: starting from step 0",
                    checkpoint.display()
                );
            }
            std::fs::write(&log_path, b"")
                .with_context(|| format!("cannot write {}", log_path.display()))?;
        }
    }
    let mut log_file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot write {}", log_path.display()))?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // First Ctrl-C: finish the step, checkpoint, exit. Second: exit now.
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: checkpointing after this step (Ctrl-C again to quit now)");
        })
        .context("installing the Ctrl-C handler")?;
    }

    eprintln!(
        "distilling {} blocks from {} blocks: {steps} steps × {} tokens, {} train / {} held-out sequences of {}",
        trainer.student.n_layers(),
        teacher.model.layers.len(),
        trainer.cfg.tokens_per_step(data.seq),
        data.n_train,
        data.n_windows - data.n_train,
        data.seq
    );
    let bar = super::bar("distill");
    bar.set_length(steps as u64);
    bar.set_position(trainer.step as u64);
    let t0 = Instant::now();
    let first_step = trainer.step;
    let mut last_eval_msg = String::new();
    let outcome = trainer.run(&stop, &mut |line| {
        let json = serde_json::to_string(line).expect("log records serialize");
        writeln!(log_file, "{json}").map_err(|e| leanlm::Error::io(&log_path, e))?;
        match line {
            LogLine::Step(s) => {
                bar.set_position(s.step as u64);
                bar.set_message(format!(
                    "loss {:.4} | {:.0} tok/s | lr {:.2e}{last_eval_msg}",
                    s.loss, s.tokens_per_s, s.lr
                ));
            }
            LogLine::Eval(e) => {
                last_eval_msg = format!(
                    " | held-out KLD {:.4}, same-top {:.1}%{}",
                    e.heldout_kld,
                    100.0 * e.heldout_same_top,
                    e.ppl.map_or(String::new(), |p| format!(", PPL {p:.2}"))
                );
                bar.println(format!(
                    "step {}: held-out loss {:.4}{last_eval_msg}",
                    e.step, e.heldout_loss
                ));
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let trained_tokens = (outcome.steps_done - first_step) * trainer.cfg.tokens_per_step(data.seq);
    if outcome.interrupted {
        eprintln!(
            "stopped at step {} of {steps}; checkpoint {}: rerun with --resume to continue",
            outcome.steps_done,
            checkpoint.display()
        );
        return Ok(());
    }
    let out_model = output::write(&trainer.student.to_model()?, &teacher, &out, a.outtype)?;
    let peak = leanlm::measure::cost::memory().map(|(_, p)| p);
    let tps = trained_tokens as f64 / secs;
    if a.json {
        let v = json!({
            "output": out,
            "bytes": output::disk_bytes(&out),
            "layers": out_model.layers.len(),
            "params": out_model.n_params(),
            "steps": outcome.steps_done,
            "train_tokens_per_s": tps,
            "seconds": secs,
            "peak_rss_bytes": peak,
            "last_eval": outcome.last_eval,
            "log": log_path,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        eprintln!(
            "wrote {} ({} blocks, {:.1}M params) after {} steps; {:.1} train tok/s{}; log {}",
            out.display(),
            out_model.layers.len(),
            out_model.n_params() as f64 / 1e6,
            outcome.steps_done,
            tps,
            peak.map_or(String::new(), |p| format!(
                ", peak RSS {:.0} MB",
                p as f64 / 1e6
            )),
            log_path.display()
        );
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name (works for folders too).
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Keep the log's records up to `step` (what the checkpoint holds), atomically.
fn truncate_log(path: &Path, step: usize) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step")?.as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let tmp = suffixed(path, ".partial");
    std::fs::write(&tmp, kept).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
