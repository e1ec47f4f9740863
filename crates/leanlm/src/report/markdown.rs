//! The report as Markdown: the variant table and the verdict.

use super::{ratios, verdict, Row, Summary};

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or("—".into(), f)
}

fn pm(v: Option<f64>, se: Option<f64>, scale: f64, digits: usize) -> String {
    match (v, se) {
        (Some(v), Some(se)) => format!("{:.digits$} ± {:.digits$}", v * scale, se * scale),
        (Some(v), None) => format!("{:.digits$}", v * scale),
        _ => "—".into(),
    }
}

/// Column headers of the variant table.
pub const HEADERS: [&str; 17] = [
    "variant",
    "made by",
    "params M",
    "non-zero M",
    "file MB",
    "GFLOP/tok",
    "pp t/s",
    "tg t/s",
    "tg ×",
    "peak RSS MB",
    "PPL",
    "PPL ×",
    "KLD",
    "same-top %",
    "HellaSwag acc_norm %",
    "HumanEval pass@1 %",
    "notes",
];

/// One table row as cells, in [`HEADERS`] order.
pub fn cells(rows: &[Row], r: &Row) -> Vec<String> {
    let (speed, ppl_ratio) = ratios(rows, r);
    let made_by = match (&r.parent, &r.decoding) {
        (Some(p), Some(d)) => format!("{} of {p}: {d}", r.kind),
        (Some(p), None) => format!("{} of {p}", r.kind),
        _ => r.kind.clone(),
    };
    let mut notes = Vec::new();
    if let Some(q) = &r.quality_of {
        notes.push(format!("quality = {q}'s (lossless decoding)"));
    }
    if let Some(a) = r.acceptance {
        notes.push(format!("{:.0}% of drafts accepted", 100.0 * a));
    }
    if !r.exit_histogram.is_empty() {
        let b = crate::run::early_exit::mean_blocks(&r.exit_histogram);
        notes.push(format!("{b:.1} blocks/token"));
    }
    vec![
        r.variant.clone(),
        made_by,
        format!("{:.2}", r.params as f64 / 1e6),
        format!("{:.2}", r.params_nonzero as f64 / 1e6),
        format!("{:.1}", r.file_bytes as f64 / 1e6),
        format!("{:.3}", r.flops_per_token / 1e9),
        format!("{:.1}", r.pp_tokens_per_sec),
        format!("{:.1}", r.tg_tokens_per_sec),
        opt(speed, |v| format!("{v:.2}")),
        format!("{:.0}", r.peak_rss_bytes as f64 / 1e6),
        pm(r.ppl, r.ppl_stderr, 1.0, 3),
        opt(ppl_ratio, |v| format!("{v:.3}")),
        pm(r.kld, r.kld_stderr, 1.0, 4),
        opt(r.same_top, |v| format!("{:.1}", 100.0 * v)),
        pm(r.hellaswag_acc_norm, r.hellaswag_stderr, 100.0, 1),
        pm(r.humaneval_pass1, r.humaneval_stderr, 100.0, 1),
        notes.join("; "),
    ]
}

/// The variant table alone, as Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!("| {} |\n", HEADERS.join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(HEADERS.len())));
    for r in rows {
        out.push_str(&format!("| {} |\n", cells(rows, r).join(" | ")));
    }
    out
}

/// The whole report as Markdown; `plots` are file names of SVGs beside it.
pub fn markdown(s: &Summary, plots: &[(&str, &str)]) -> String {
    let mut out = format!("# leanlm run: {}\n\n", s.recipe);
    if !s.description.is_empty() {
        out.push_str(&format!("{}\n\n", s.description));
    }
    out.push_str(&format!(
        "Run folder `{}`; leanlm commit {}; {} threads. Every figure below was measured in this run.\n\n",
        s.run_dir,
        s.git_commit.as_deref().unwrap_or("unknown"),
        s.threads
    ));
    if let Some(n) = &s.note {
        out.push_str(&format!("> **{n}**\n\n"));
    }
    out.push_str(&format!("{}\n\n", verdict(s)));
    out.push_str(&table(&s.rows));
    if let Some(p) = &s.pair {
        out.push_str(&format!("\n{}\n", p.sentence()));
    }
    out.push_str(&format!("\nEvaluation settings: `{}`\n\n", s.eval));
    out.push_str(
        "PPL: WikiText-2 perplexity (llama.cpp protocol) ± one standard error. KLD: mean KL divergence \
         of the variant's next-token distribution from the original's on the same tokens (top-64 of the \
         original). HumanEval pass@1: share of the problems whose greedy completion passes its unit tests, \
         run in a sandbox, ± one standard error. tg ×, PPL ×: relative to the first row. Speeds: median of the bench repetitions.\n\n",
    );
    for (title, file) in plots {
        out.push_str(&format!("## {title}\n\n![{title}]({file})\n\n"));
    }
    out
}
