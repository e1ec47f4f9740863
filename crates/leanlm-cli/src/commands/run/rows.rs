//! From the jobs' JSON to report rows, results.jsonl, summary.json, report.md/.html.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use leanlm::measure::results::Record;
use leanlm::recipe::Plan;
use leanlm::report::{self, CostAxis, Goal, PairReport, Row, Summary};
use serde_json::{json, Value};

use super::plan::{describe, PairJobs, Variant};
use super::write_atomic;

fn read(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

fn f(v: &Value, ptr: &str) -> Option<f64> {
    v.pointer(ptr).and_then(Value::as_f64)
}

/// Zero fraction of each block's matrices, from `info --json`'s per-matrix table.
fn layer_sparsity(info: &Value) -> Vec<f64> {
    let mut acc: Vec<(f64, f64)> = Vec::new();
    for m in info["matrices"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("");
        let Some(block) = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|b| b.parse::<usize>().ok())
        else {
            continue;
        };
        let size = m["shape"]
            .as_array()
            .map_or(0.0, |s| s.iter().filter_map(Value::as_f64).product());
        if acc.len() <= block {
            acc.resize(block + 1, (0.0, 0.0));
        }
        acc[block].0 += size * m["sparsity"].as_f64().unwrap_or(0.0);
        acc[block].1 += size;
    }
    acc.iter()
        .map(|(z, n)| if *n > 0.0 { z / n } else { 0.0 })
        .collect()
}

/// One report row from a variant's info, eval and bench output.
fn row(v: &Variant, plan: &Plan, quality: Option<&Row>) -> Result<Row> {
    let info = read(&v.info)?;
    let bench = read(&v.bench)?;
    let eval = v.eval.as_deref().map(read).transpose()?;
    let results = bench["results"].as_array().cloned().unwrap_or_default();
    let tps = |i: usize| {
        results
            .get(i)
            .and_then(|r| r["tokens_per_sec"].as_f64())
            .unwrap_or(0.0)
    };
    let adaptive = &bench["adaptive"];
    let n_layers = info["layers"].as_array().map_or(1, |l| l.len().max(1)) as f64;
    let mut flops = f(&info, "/flops_per_token_effective").unwrap_or(0.0);
    let mut r = Row {
        variant: v.name.clone(),
        kind: v.kind.to_string(),
        parent: v.parent.clone(),
        model: v.model.display().to_string(),
        decoding: v.decode.as_ref().map(|d| {
            let planned = plan.stages.iter().find(|p| p.stage.name() == v.name);
            let draft = planned.and_then(|p| match (p.draft, &p.draft_file) {
                (Some(s), _) => Some(plan.name_of(s).to_string()),
                (None, Some(f)) => Some(f.display().to_string()),
                (None, None) => None,
            });
            describe(d, draft.as_deref())
        }),
        params: info["params"].as_u64().unwrap_or(0),
        params_nonzero: info["params"].as_u64().unwrap_or(0)
            - info["zero_params"].as_u64().unwrap_or(0),
        file_bytes: info["file_bytes"].as_u64().unwrap_or(0),
        pp_tokens_per_sec: tps(0),
        tg_tokens_per_sec: tps(1),
        peak_rss_bytes: bench["peak_rss_bytes"].as_u64().unwrap_or(0),
        layer_sparsity: layer_sparsity(&info),
        exit_histogram: adaptive["exit_histogram"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter_map(Value::as_u64)
                    .map(|c| c as usize)
                    .collect()
            })
            .unwrap_or_default(),
        acceptance: adaptive["drafted"]
            .as_u64()
            .filter(|&d| d > 0)
            .map(|d| adaptive["accepted"].as_u64().unwrap_or(0) as f64 / d as f64),
        ..Row::default()
    };
    if let Some(e) = &eval {
        r.ppl = f(e, "/perplexity/ppl");
        r.ppl_stderr = f(e, "/perplexity/ppl_stderr");
        r.kld = f(e, "/kld/mean_kld");
        r.kld_stderr = f(e, "/kld/mean_kld_stderr");
        r.same_top = f(e, "/kld/same_top");
        r.hellaswag_acc_norm = f(e, "/hellaswag/acc_norm");
        r.hellaswag_stderr = f(e, "/hellaswag/acc_norm_stderr");
        r.humaneval_pass1 = f(e, "/humaneval/pass_at_1");
        r.humaneval_stderr = f(e, "/humaneval/pass_at_1_stderr");
        if let Some(x) = f(e, "/perplexity/early_exit_flops_per_token") {
            flops = x;
        }
    } else if let Some(q) = quality {
        r.ppl = q.ppl;
        r.ppl_stderr = q.ppl_stderr;
        r.kld = q.kld;
        r.kld_stderr = q.kld_stderr;
        r.same_top = q.same_top;
        r.hellaswag_acc_norm = q.hellaswag_acc_norm;
        r.hellaswag_stderr = q.hellaswag_stderr;
        r.humaneval_pass1 = q.humaneval_pass1;
        r.humaneval_stderr = q.humaneval_stderr;
        r.quality_of = Some(q.variant.clone());
    }
    // Speculation runs blocks of the draft and the target per emitted token.
    if let Some(b) = f(adaptive, "/blocks_per_token").filter(|_| r.exit_histogram.is_empty()) {
        flops *= b / n_layers;
    }
    r.flops_per_token = flops;
    Ok(r)
}

/// The `[pair]` figures, or why there are none.
fn pair_report(
    plan: &Plan,
    jobs: &std::result::Result<PairJobs, String>,
) -> Result<Option<PairReport>> {
    let Some(p) = &plan.recipe.pair else {
        return Ok(None);
    };
    let mut r = PairReport {
        target: p.target.display().to_string(),
        draft: p.draft.display().to_string(),
        k: p.k,
        ..PairReport::default()
    };
    match jobs {
        Err(why) => r.not_run = Some(why.clone()),
        Ok(j) => {
            let plain = read(&j.plain)?;
            let spec = read(&j.speculative)?;
            r.plain_tg_tokens_per_sec = f(&plain, "/results/1/tokens_per_sec");
            r.speculative_tg_tokens_per_sec = f(&spec, "/results/1/tokens_per_sec");
            let a = &spec["adaptive"];
            r.acceptance = a["drafted"]
                .as_u64()
                .filter(|&d| d > 0)
                .map(|d| a["accepted"].as_u64().unwrap_or(0) as f64 / d as f64);
            r.tokens_per_target_pass = f(a, "/tokens_per_target_pass");
        }
    }
    Ok(Some(r))
}

pub fn summarize(
    plan: &Plan,
    variants: &[Variant],
    pair: &std::result::Result<PairJobs, String>,
    dir: &Path,
    threads: usize,
    tiny: bool,
) -> Result<Summary> {
    let mut rows: Vec<Row> = Vec::new();
    for v in variants {
        let quality = v
            .parent
            .as_ref()
            .and_then(|p| rows.iter().find(|r| &r.variant == p))
            .cloned();
        rows.push(row(v, plan, quality.as_ref())?);
    }
    let e = &plan.recipe.eval;
    Ok(Summary {
        recipe: plan.recipe.name.clone(),
        description: plan.recipe.description.clone(),
        run_dir: dir.display().to_string(),
        git_commit: super::super::git_commit(),
        threads,
        eval: json!({"ppl": e.ppl, "ctx": e.ctx, "chunks": e.chunks, "kld_vs_original": e.kld,
                     "hellaswag": e.hellaswag, "tasks": e.tasks, "humaneval": e.humaneval,
                     "problems": e.problems, "humaneval_chat": e.humaneval_chat, "bench": e.bench}),
        goal: Goal::default(),
        note: tiny.then(|| {
            "Smoke test (--tiny): every count was shrunk to a few samples; these figures say nothing about the recipe.".to_string()
        }),
        rows,
        pair: pair_report(plan, pair)?,
    })
}

/// results.jsonl (every eval record plus the cost and speed figures), summary.json,
/// the plots, report.md and report.html; returns the HTML's path.
pub fn write_report(s: &Summary, variants: &[Variant], dir: &Path) -> Result<PathBuf> {
    let mut lines = String::new();
    for v in variants {
        if let Some(e) = &v.eval {
            let rec = e.with_extension("records.jsonl");
            lines.push_str(
                &std::fs::read_to_string(&rec)
                    .with_context(|| format!("reading {}", rec.display()))?,
            );
        }
    }
    for r in &s.rows {
        let settings =
            json!({"threads": s.threads, "bench": s.eval["bench"], "decoding": r.decoding});
        for (metric, value) in [
            ("pp_tokens_per_sec", r.pp_tokens_per_sec),
            ("tg_tokens_per_sec", r.tg_tokens_per_sec),
            ("peak_rss_bytes", r.peak_rss_bytes as f64),
            ("params_nonzero", r.params_nonzero as f64),
            ("file_bytes", r.file_bytes as f64),
            ("flops_per_token", r.flops_per_token),
        ] {
            let mut rec = Record::new(&r.model, &r.variant, metric, value, None, settings.clone());
            rec.git_commit = s.git_commit.clone();
            lines.push_str(&serde_json::to_string(&rec)?);
            lines.push('\n');
        }
    }
    write_atomic(&dir.join("results.jsonl"), lines.as_bytes())?;
    write_atomic(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(s)?.as_bytes(),
    )?;

    let goal = Some((s.goal.speedup, s.goal.max_ppl_ratio));
    let mut plots: Vec<(String, String, String)> = Vec::new();
    let mut add = |title: &str, file: &str, svg: Result<String, String>| {
        if let Ok(svg) = svg {
            plots.push((title.to_string(), file.to_string(), svg));
        }
    };
    add(
        "Quality against measured decode speed",
        "quality-vs-speed.svg",
        report::quality_vs_cost_svg(&s.rows, CostAxis::DecodeSpeed, goal),
    );
    add(
        "Quality against FLOPs per token",
        "quality-vs-flops.svg",
        report::quality_vs_cost_svg(&s.rows, CostAxis::Flops, None),
    );
    add(
        "Zero weights per block",
        "sparsity.svg",
        report::sparsity_svg(&s.rows),
    );
    for r in s.rows.iter().filter(|r| !r.exit_histogram.is_empty()) {
        let file = format!("exits-{}.svg", r.variant);
        add(
            &format!("Early exit: blocks run per token ({})", r.variant),
            &file,
            report::exit_histogram_svg(r),
        );
    }
    for (_, file, svg) in &plots {
        write_atomic(&dir.join("plots").join(file), svg.as_bytes())?;
    }
    let md_plots: Vec<(String, String)> = plots
        .iter()
        .map(|(t, f, _)| (t.clone(), format!("plots/{f}")))
        .collect();
    let md_refs: Vec<(&str, &str)> = md_plots
        .iter()
        .map(|(t, f)| (t.as_str(), f.as_str()))
        .collect();
    write_atomic(
        &dir.join("report.md"),
        report::markdown(s, &md_refs).as_bytes(),
    )?;
    let inline: Vec<(String, String)> = plots.into_iter().map(|(t, _, svg)| (t, svg)).collect();
    let html = dir.join("report.html");
    write_atomic(&html, report::html(s, &inline).as_bytes())?;
    Ok(html)
}
