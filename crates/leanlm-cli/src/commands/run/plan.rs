//! From a checked recipe to variants (one per model or decoding) and the jobs that make
//! and measure them, each with a content key and the file that marks it done.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Result;
use leanlm::recipe::{Decode, ExitMeasure, Plan, Source, Stage, ORIGINAL};
use serde_json::json;

use super::keys::{self, FileKeys};

/// Bumped when a job's command line or output changes meaning.
const FORMAT: u32 = 2;

/// A model or a way of decoding one: a row of the report.
pub struct Variant {
    pub name: String,
    pub kind: &'static str,
    pub parent: Option<String>,
    pub model: PathBuf,
    pub decode: Option<Decode>,
    /// Jobs' done-files, for the report.
    pub info: PathBuf,
    pub eval: Option<PathBuf>,
    pub bench: PathBuf,
}

/// What a job leaves behind when it has finished.
pub enum Product {
    /// A model file the command writes itself (atomically).
    Model(PathBuf),
    /// The command's JSON on stdout, saved by the runner; with eval, its results file.
    Json {
        path: PathBuf,
        records: Option<Records>,
        /// What the report reads from it: a file without these is not a finished job.
        schema: Schema,
    },
}

/// The figures a job's JSON must hold to count as finished.
#[derive(Clone, Copy)]
pub enum Schema {
    /// `leanlm info --json`.
    Info,
    /// `leanlm eval --json`: a finite perplexity.
    Eval,
    /// `leanlm bench --json`: prompt and decode speeds.
    Bench,
}

impl Schema {
    /// Whether `v` is what a finished job of this kind printed.
    pub fn accepts(self, v: &serde_json::Value) -> bool {
        let finite = |x: &serde_json::Value| x.as_f64().is_some_and(f64::is_finite);
        match self {
            Schema::Info => {
                v["params"].is_u64()
                    && v["file_bytes"].is_u64()
                    && v["layers"].is_array()
                    && v["matrices"].is_array()
            }
            Schema::Eval => finite(&v["perplexity"]["ppl"]),
            Schema::Bench => v["results"]
                .as_array()
                .is_some_and(|r| r.len() == 2 && r.iter().all(|t| finite(&t["tokens_per_sec"]))),
        }
    }
}

/// A job file's JSON when it holds what `schema` needs; `None` for a missing, unreadable,
/// oversized or wrong file (the job then runs again and replaces it).
pub fn read_job_file(path: &Path, schema: Schema) -> Option<serde_json::Value> {
    // A job's JSON is a few kB (info lists every matrix: well under a MB).
    const MAX: u64 = 64 << 20;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    schema.accepts(&v).then_some(v)
}

/// An eval job's `--results` file: written by the command as `partial`, renamed to
/// `done` by the runner once the command has succeeded.
pub struct Records {
    pub partial: PathBuf,
    pub done: PathBuf,
}

impl Product {
    pub fn done(&self) -> bool {
        match self {
            Product::Model(p) => p.exists(),
            Product::Json {
                path,
                records,
                schema,
            } => {
                read_job_file(path, *schema).is_some()
                    && records.as_ref().is_none_or(|r| r.done.is_file())
            }
        }
    }
}

pub struct Job {
    /// "prune short6", "eval short6", …
    pub label: String,
    pub args: Vec<OsString>,
    pub product: Product,
    /// Estimated work, in token passes of the model, for the run's ETA.
    pub work: f64,
    /// Files to remove before a fresh start (stale temporaries).
    pub scratch: Vec<PathBuf>,
}

fn os(v: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    v.iter().map(|s| s.as_ref().to_os_string()).collect()
}

fn push(args: &mut Vec<OsString>, flag: &str, v: impl ToString) {
    args.push(flag.into());
    args.push(v.to_string().into());
}

/// The exit/speculation flags of a decode stage (shared by eval and bench).
fn decode_flags(d: &Decode, draft: Option<&Path>) -> Vec<OsString> {
    let mut a = Vec::new();
    if let Some(t) = d.early_exit {
        push(&mut a, "--early-exit", t);
        let m = match d.exit_measure {
            ExitMeasure::Maxprob => "maxprob",
            ExitMeasure::Margin => "margin",
            ExitMeasure::Saturation => "saturation",
        };
        push(&mut a, "--exit-measure", m);
        push(&mut a, "--exit-min", d.exit_min);
        push(&mut a, "--exit-every", d.exit_every);
        return a;
    }
    if let Some(e) = d.draft_layers {
        push(&mut a, "--draft-layers", e);
    }
    if let Some(p) = draft {
        push(&mut a, "--draft", p.display());
    }
    if let Some(n) = d.lookup {
        push(&mut a, "--lookup", n);
    }
    push(&mut a, "--draft-k", d.k);
    if d.adaptive {
        a.push("--adaptive".into());
    }
    if let Some(p) = d.p_min {
        push(&mut a, "--draft-p-min", p);
    }
    a
}

/// How a decode stage decodes, in words.
pub fn describe(d: &Decode, draft_name: Option<&str>) -> String {
    if let Some(t) = d.early_exit {
        return format!("early exit {t} ({:?})", d.exit_measure).to_lowercase();
    }
    let how = match (d.draft_layers, draft_name, d.lookup) {
        (Some(e), _, _) => format!("self-speculative, {e} draft blocks"),
        (_, Some(n), _) => format!("draft model {n}"),
        (_, _, Some(n)) => format!("prompt lookup, {n}-grams"),
        _ => "speculative".into(),
    };
    format!(
        "{how}, k={}{}",
        d.k,
        if d.adaptive { " adaptive" } else { "" }
    )
}

/// The done-files of the recipe's `[pair]` benches.
pub struct PairJobs {
    pub plain: PathBuf,
    pub speculative: PathBuf,
}

/// The `[pair]` benches when both models exist: the target plainly and with the draft,
/// decoding after prompts from the eval text. `Err(why)` inside says why it is not run.
pub fn pair_jobs(
    plan: &Plan,
    dir: &Path,
    files: &mut FileKeys,
) -> Result<(std::result::Result<PairJobs, String>, Vec<Job>)> {
    let r = &plan.recipe;
    let Some(p) = &r.pair else {
        return Ok((Err("no [pair] in the recipe".into()), Vec::new()));
    };
    if let Some(missing) = [&p.target, &p.draft].into_iter().find(|f| !f.is_file()) {
        return Ok((Err(format!("{} is absent", missing.display())), Vec::new()));
    }
    let version = env!("CARGO_PKG_VERSION");
    let threads = r.threads.unwrap_or_else(rayon::current_num_threads);
    let key = keys::of_json(&json!([
        FORMAT,
        version,
        files.of(&p.target)?,
        files.of(&p.draft)?,
        files.of(&r.eval.ppl)?,
        p,
        r.eval.bench,
        threads
    ]));
    let jobs_dir = dir.join("jobs");
    let b = &r.eval.bench;
    let mut jobs = Vec::new();
    let mut paths = Vec::new();
    for mode in ["plain", "speculative"] {
        let path = jobs_dir.join(format!("pair-{mode}-{}.json", keys::short(&key)));
        let mut args = os(&[&"bench", &p.target, &"--json"]);
        push(&mut args, "-p", b.prompt);
        push(&mut args, "-n", p.gen);
        push(&mut args, "-r", b.reps);
        if mode == "speculative" {
            push(&mut args, "--text", r.eval.ppl.display());
            push(&mut args, "--draft", p.draft.display());
            push(&mut args, "--draft-k", p.k);
            if let Some(v) = p.p_min {
                push(&mut args, "--draft-p-min", v);
            }
        }
        jobs.push(Job {
            label: format!("bench pair ({mode})"),
            args,
            product: Product::Json {
                path: path.clone(),
                records: None,
                schema: Schema::Bench,
            },
            // The pair's target is a larger model than the recipe's: weigh it as ten.
            work: 10.0 * (b.reps + 1) as f64 * (b.prompt as f64 + 2.5 * p.gen as f64),
            scratch: vec![],
        });
        paths.push(path);
    }
    let speculative = paths.pop().unwrap_or_default();
    let plain = paths.pop().unwrap_or_default();
    Ok((Ok(PairJobs { plain, speculative }), jobs))
}

/// Variants and jobs of a plan, in running order.
pub fn jobs(plan: &Plan, dir: &Path, files: &mut FileKeys) -> Result<(Vec<Variant>, Vec<Job>)> {
    let r = &plan.recipe;
    let e = &r.eval;
    let version = env!("CARGO_PKG_VERSION");
    let original_key = files.of(&r.model)?;
    // Per stage: its model file and content key (decode stages: the input's).
    let mut models: Vec<(PathBuf, String)> = Vec::new();
    let model_of = |models: &Vec<(PathBuf, String)>, s: Source| match s {
        Source::Original => (r.model.clone(), original_key.clone()),
        Source::Stage(i) => models[i].clone(),
    };
    let eval_settings = json!({
        "ppl": e.ppl, "ppl_key": files.of(&e.ppl)?, "ctx": e.ctx, "chunks": e.chunks, "kld": e.kld,
        "hellaswag": e.hellaswag, "hellaswag_key": e.hellaswag.as_ref().map(|h| files.of(h)).transpose()?,
        "tasks": e.tasks,
        "humaneval": e.humaneval.then(|| files.of(Path::new(leanlm::measure::humaneval::DEFAULT_FILE))).transpose()?,
        "problems": e.problems, "humaneval_chat": e.humaneval_chat,
    });
    let threads = r.threads.unwrap_or_else(rayon::current_num_threads);
    let base_cache = dir.join(format!(
        "base-{}.kld",
        keys::short(&keys::of_json(&json!([original_key, eval_settings])))
    ));
    let jobs_dir = dir.join("jobs");
    let mut variants = Vec::new();
    let mut jobs = Vec::new();
    let text_tokens = std::fs::metadata(&e.ppl).map_or(300_000.0, |m| m.len() as f64 / 4.0);
    let ppl_tokens = e
        .chunks
        .map_or(text_tokens, |c| (c * e.ctx) as f64)
        .min(text_tokens);

    // The measurement jobs of one variant.
    let measure = |jobs: &mut Vec<Job>,
                   name: &str,
                   kind: &'static str,
                   parent: Option<String>,
                   (model, key): (PathBuf, String),
                   decode: Option<(&Decode, Option<&(PathBuf, String)>)>|
     -> Result<Variant> {
        let decode_key =
            decode.map(|(d, draft)| json!({"decode": d, "draft": draft.map(|x| &x.1)}));
        let flags = decode
            .map(|(d, draft)| decode_flags(d, draft.map(|x| x.0.as_path())))
            .unwrap_or_default();
        let info = jobs_dir.join(format!("info-{}.json", keys::short(&key)));
        jobs.push(Job {
            label: format!("info {name}"),
            args: os(&[&"info", &model, &"--json", &"-c", &e.ctx.to_string()]),
            product: Product::Json {
                path: info.clone(),
                records: None,
                schema: Schema::Info,
            },
            work: 500.0,
            scratch: vec![],
        });
        // Speculative decoding is lossless: its quality is the input's.
        let lossless = decode.is_some_and(|(d, _)| d.early_exit.is_none());
        let eval = (!lossless)
            .then(|| -> Result<PathBuf> {
                let k = keys::of_json(&json!([
                    FORMAT,
                    version,
                    key,
                    eval_settings,
                    decode_key,
                    e.kld.then_some(&original_key)
                ]));
                let path = jobs_dir.join(format!("eval-{name}-{}.json", keys::short(&k)));
                let records = path.with_extension("records.jsonl");
                let partial = path.with_extension("records.jsonl.partial");
                let mut args = os(&[&"eval", &model, &"--ppl", &e.ppl, &"-c", &e.ctx.to_string()]);
                if let Some(c) = e.chunks {
                    push(&mut args, "--chunks", c);
                }
                if e.kld {
                    push(&mut args, "--base", r.model.display());
                    push(&mut args, "--base-cache", base_cache.display());
                }
                if let Some(h) = &e.hellaswag {
                    push(&mut args, "--hellaswag", h.display());
                    if let Some(t) = e.tasks {
                        push(&mut args, "--tasks", t);
                    }
                }
                let samples = path.with_extension("humaneval.jsonl");
                if e.humaneval {
                    args.push("--humaneval".into());
                    args.push(leanlm::measure::humaneval::DEFAULT_FILE.into());
                    if let Some(n) = e.problems {
                        push(&mut args, "--problems", n);
                    }
                    if e.humaneval_chat {
                        args.push("--chat".into());
                    }
                    push(&mut args, "--samples-out", samples.display());
                }
                push(&mut args, "--variant", name);
                push(&mut args, "--results", partial.display());
                args.push("--json".into());
                args.extend(flags.iter().cloned());
                let exit_factor = if decode.is_some() { 3.0 } else { 1.0 };
                let problems = if e.humaneval {
                    e.problems.unwrap_or(164) as f64
                } else {
                    0.0
                };
                let tasks = e
                    .hellaswag
                    .as_ref()
                    .map_or(0.0, |_| e.tasks.unwrap_or(10_042) as f64);
                jobs.push(Job {
                    label: format!("eval {name}"),
                    args,
                    product: Product::Json {
                        path: path.clone(),
                        records: Some(Records {
                            partial: partial.clone(),
                            done: records,
                        }),
                        schema: Schema::Eval,
                    },
                    // A HumanEval problem: a prompt and up to 512 generated tokens.
                    work: ppl_tokens * exit_factor + tasks * 300.0 + problems * 2000.0,
                    scratch: vec![partial, samples],
                });
                Ok(path)
            })
            .transpose()?;
        let bk = keys::of_json(&json!([FORMAT, version, key, e.bench, threads, decode_key]));
        let bench = jobs_dir.join(format!("bench-{name}-{}.json", keys::short(&bk)));
        let b = &e.bench;
        let mut args = os(&[&"bench", &model, &"--json"]);
        push(&mut args, "-p", b.prompt);
        push(&mut args, "-n", b.gen);
        push(&mut args, "-r", b.reps);
        if decode.is_some() {
            push(&mut args, "--text", e.ppl.display());
            args.extend(flags);
        }
        jobs.push(Job {
            label: format!("bench {name}"),
            args,
            product: Product::Json {
                path: bench.clone(),
                records: None,
                schema: Schema::Bench,
            },
            work: (b.reps + 1) as f64 * (b.prompt as f64 + 2.5 * b.gen as f64),
            scratch: vec![],
        });
        Ok(Variant {
            name: name.to_string(),
            kind,
            parent,
            model,
            decode: decode.map(|d| d.0.clone()),
            info,
            eval,
            bench,
        })
    };

    variants.push(measure(
        &mut jobs,
        ORIGINAL,
        "original",
        None,
        (r.model.clone(), original_key.clone()),
        None,
    )?);
    for p in &plan.stages {
        let name = p.stage.name();
        let (input, input_key) = model_of(&models, p.input);
        let parent = Some(plan.name_of(p.input).to_string());
        if let Stage::Decode(d) = &p.stage {
            let draft = match (&p.draft, &p.draft_file) {
                (Some(s), _) => Some(model_of(&models, *s)),
                (None, Some(f)) => Some((f.clone(), files.of(f)?)),
                (None, None) => None,
            };
            models.push((input.clone(), input_key.clone()));
            let v = measure(
                &mut jobs,
                name,
                "decode",
                parent,
                (input, input_key),
                Some((d, draft.as_ref())),
            )?;
            variants.push(v);
            continue;
        }
        // The stage's settings without names (they only label), plus what it reads.
        let mut cfg = serde_json::to_value(&p.stage)?;
        if let Some(o) = cfg.as_object_mut() {
            for k in ["name", "input", "teacher"] {
                o.remove(k);
            }
        }
        let teacher = p.teacher.map(|t| model_of(&models, t));
        let data: Vec<String> = match &p.stage {
            Stage::Prune(s) => vec![files.of(&s.calib)?],
            Stage::Quantize(q) => q
                .imatrix
                .iter()
                .map(|f| files.of(f))
                .collect::<Result<_>>()?,
            Stage::Distill(d) => d.data.iter().map(|f| files.of(f)).collect::<Result<_>>()?,
            _ => vec![],
        };
        let key = keys::of_json(&json!([
            FORMAT,
            version,
            cfg,
            input_key,
            teacher.as_ref().map(|t| &t.1),
            data
        ]));
        let out = dir
            .join("models")
            .join(format!("{name}-{}.gguf", keys::short(&key)));
        let (args, work, scratch) = stage_job(
            &p.stage,
            &input,
            teacher.as_ref().map(|t| t.0.as_path()),
            &out,
            dir,
            &key,
        );
        jobs.push(Job {
            label: format!("{} {name}", p.stage.kind()),
            args,
            product: Product::Model(out.clone()),
            work,
            scratch,
        });
        models.push((out.clone(), key.clone()));
        let v = measure(&mut jobs, name, p.stage.kind(), parent, (out, key), None)?;
        variants.push(v);
    }
    Ok((variants, jobs))
}

/// Command line, estimated work and scratch files of a model-writing stage.
fn stage_job(
    stage: &Stage,
    input: &Path,
    teacher: Option<&Path>,
    out: &Path,
    dir: &Path,
    key: &str,
) -> (Vec<OsString>, f64, Vec<PathBuf>) {
    match stage {
        Stage::Prune(p) => {
            let mut a = os(&[&"prune", &input, &"-o", &out, &"--calib", &p.calib]);
            push(&mut a, "--nsamples", p.nsamples);
            push(&mut a, "--seqlen", p.seqlen);
            push(&mut a, "--seed", p.seed);
            if let Some(s) = &p.structured {
                push(&mut a, "--structured", s);
            } else {
                let m = match p.method {
                    Some(leanlm::recipe::PruneMethod::Magnitude) => "magnitude",
                    Some(leanlm::recipe::PruneMethod::Sparsegpt) => "sparsegpt",
                    _ => "wanda",
                };
                push(&mut a, "--method", m);
                if let Some(s) = p.sparsity {
                    push(&mut a, "--sparsity", s);
                }
                if let Some(pat) = &p.pattern {
                    push(&mut a, "--pattern", pat);
                }
                if p.owl {
                    a.push("--owl".into());
                }
            }
            a.push("--json".into());
            (a, (p.nsamples * p.seqlen) as f64 * 3.0, vec![])
        }
        Stage::Distill(d) => {
            let work_dir = dir.join("work");
            let stem = format!("{}-{}", d.name, keys::short(key));
            let ckpt = work_dir.join(format!("{stem}.ckpt"));
            let log = work_dir.join(format!("{stem}.log.jsonl"));
            let mut a = os(&[
                &"distill",
                &"--teacher",
                &teacher.unwrap_or(input),
                &"-o",
                &out,
            ]);
            match &d.init {
                Some(init) => push(&mut a, "--init-from-teacher", init),
                None => push(&mut a, "--student", input.display()),
            }
            a.push("--data".into());
            a.extend(d.data.iter().map(|f| f.as_os_str().to_os_string()));
            push(&mut a, "--steps", d.steps);
            push(&mut a, "--seq", d.seq);
            push(&mut a, "--batch", d.batch);
            push(&mut a, "--accum", d.accum);
            push(&mut a, "--lr", d.lr);
            push(&mut a, "--warmup", d.warmup.min(d.steps.saturating_sub(1)));
            push(&mut a, "--loss", &d.loss);
            push(&mut a, "--temperature", d.temperature);
            push(&mut a, "--seed", d.seed);
            if let Some(h) = &d.hidden {
                push(&mut a, "--hidden", h);
            }
            // Evaluate at the start and the end only: the run measures the result anyway.
            push(&mut a, "--eval-every", d.steps);
            push(&mut a, "--save-every", 5);
            push(&mut a, "--checkpoint", ckpt.display());
            push(&mut a, "--log", log.display());
            a.push("--resume".into());
            a.push("--json".into());
            let work = (d.steps * d.batch * d.accum * d.seq) as f64 * 7.0;
            (a, work, vec![])
        }
        Stage::Quantize(q) => {
            let mut a = os(&[&"quantize", &input, &"-o", &out]);
            push(&mut a, "--type", q.quant.name());
            // A recipe names its source model and compares every stage with it: quantizing
            // an already quantized source is the experiment it asks for.
            a.push("--allow-requantize".into());
            let mut work = 5_000.0;
            if let Some(f) = &q.imatrix {
                push(&mut a, "--imatrix", f.display());
                push(&mut a, "--imatrix-samples", q.imatrix_samples);
                push(&mut a, "--imatrix-seqlen", q.imatrix_seqlen);
                work += (q.imatrix_samples * q.imatrix_seqlen) as f64;
            }
            (a, work, vec![])
        }
        Stage::Decode(_) => unreachable!("decode stages write no model"),
    }
}
