//! The run report: one row per variant (cost beside quality), a verdict against the
//! speed/quality goal, and the same content as Markdown and as HTML with SVG plots.

mod html;
mod markdown;
mod plots;

use serde::{Deserialize, Serialize};

pub use html::html;
pub use markdown::{markdown, table};
pub use plots::{exit_histogram_svg, quality_vs_cost_svg, sparsity_svg, CostAxis};

/// Every figure of one variant, as measured in the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Row {
    pub variant: String,
    /// "original", "prune", "distill", "quantize" or "decode".
    pub kind: String,
    /// The variant it was made from.
    pub parent: Option<String>,
    pub model: String,
    /// How it decodes, for decode variants ("early exit 0.9", "draft short6, k=4").
    pub decoding: Option<String>,
    pub params: u64,
    pub params_nonzero: u64,
    pub file_bytes: u64,
    /// FLOPs per token counting non-zero weights (and the mean blocks run, with early exit).
    pub flops_per_token: f64,
    pub pp_tokens_per_sec: f64,
    pub tg_tokens_per_sec: f64,
    pub peak_rss_bytes: u64,
    pub ppl: Option<f64>,
    pub ppl_stderr: Option<f64>,
    pub kld: Option<f64>,
    pub kld_stderr: Option<f64>,
    pub same_top: Option<f64>,
    pub hellaswag_acc_norm: Option<f64>,
    pub hellaswag_stderr: Option<f64>,
    /// HumanEval pass@1 (greedy) and its standard error.
    #[serde(default)]
    pub humaneval_pass1: Option<f64>,
    #[serde(default)]
    pub humaneval_stderr: Option<f64>,
    /// Set when the quality figures are another variant's because decoding is lossless
    /// (greedy speculative decoding gives the target's tokens).
    pub quality_of: Option<String>,
    /// Fraction of zero weights per block (block matrices only).
    pub layer_sparsity: Vec<f64>,
    /// Decoded tokens per number of blocks run (early exit).
    pub exit_histogram: Vec<usize>,
    /// Accepted / drafted tokens (speculative decoding).
    pub acceptance: Option<f64>,
}

/// The goal of the recipe's best variant against the original.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Goal {
    /// At least this multiple of the original's decode tokens/s…
    pub speedup: f64,
    /// …at no more than this multiple of its perplexity.
    pub max_ppl_ratio: f64,
}

impl Default for Goal {
    fn default() -> Self {
        Self {
            speedup: 1.5,
            max_ppl_ratio: 1.10,
        }
    }
}

/// A whole run: what `summary.json` holds and `leanlm compare` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub recipe: String,
    pub description: String,
    pub run_dir: String,
    pub git_commit: Option<String>,
    pub threads: usize,
    /// The evaluation settings every row was measured with.
    pub eval: serde_json::Value,
    pub goal: Goal,
    /// A warning shown above the table (e.g. a smoke-test run's figures mean nothing).
    #[serde(default)]
    pub note: Option<String>,
    pub rows: Vec<Row>,
    /// The recipe's `[pair]`: measured, or why not.
    #[serde(default)]
    pub pair: Option<PairReport>,
}

/// A target's plain decoding beside its speculative decoding with a draft model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PairReport {
    pub target: String,
    pub draft: String,
    pub k: usize,
    /// Why the pair was not measured (a file is absent); `None` when it was.
    pub not_run: Option<String>,
    pub plain_tg_tokens_per_sec: Option<f64>,
    pub speculative_tg_tokens_per_sec: Option<f64>,
    pub acceptance: Option<f64>,
    pub tokens_per_target_pass: Option<f64>,
}

impl PairReport {
    /// One sentence for the report.
    pub fn sentence(&self) -> String {
        let head = format!(
            "Speculative pair: {} with draft {} (k = {}, greedy)",
            self.target, self.draft, self.k
        );
        if let Some(why) = &self.not_run {
            return format!("{head}: not run in this run ({why}).");
        }
        let (Some(p), Some(s)) = (
            self.plain_tg_tokens_per_sec,
            self.speculative_tg_tokens_per_sec,
        ) else {
            return format!("{head}: no figures.");
        };
        format!(
            "{head}, measured in this run: plain decoding {p:.1} tokens/s, speculative {s:.1} \
             tokens/s ({:.2}×), {:.0}% of drafts accepted, {:.2} tokens per target pass.",
            s / p,
            100.0 * self.acceptance.unwrap_or(0.0),
            self.tokens_per_target_pass.unwrap_or(0.0)
        )
    }
}

/// Speed and perplexity of a row relative to the first row (the original).
pub fn ratios(rows: &[Row], r: &Row) -> (Option<f64>, Option<f64>) {
    let base = rows.first();
    let speed = base
        .filter(|b| b.tg_tokens_per_sec > 0.0)
        .map(|b| r.tg_tokens_per_sec / b.tg_tokens_per_sec);
    let ppl = base.and_then(|b| Some(r.ppl? / b.ppl?));
    (speed, ppl)
}

/// What the run achieved against the goal, in one paragraph.
pub fn verdict(s: &Summary) -> String {
    let g = s.goal;
    let rows = &s.rows;
    let scored: Vec<(&Row, f64, f64)> = rows
        .iter()
        .skip(1)
        .filter_map(|r| match ratios(rows, r) {
            (Some(sp), Some(pp)) => Some((r, sp, pp)),
            _ => None,
        })
        .collect();
    if scored.is_empty() {
        return "No variant besides the original has both a speed and a perplexity figure.".into();
    }
    let within = scored
        .iter()
        .filter(|(_, _, pp)| *pp <= g.max_ppl_ratio)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let fastest = scored
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("non-empty");
    let mut out = format!(
        "Goal: ≥ {:.2}× the original's decode speed at PPL ≤ {:.2}× the original's. ",
        g.speedup, g.max_ppl_ratio
    );
    match within {
        Some((r, sp, pp)) if *sp >= g.speedup => out.push_str(&format!(
            "Met by **{}**: {sp:.2}× decode speed at {pp:.3}× PPL.",
            r.variant
        )),
        Some((r, sp, pp)) => out.push_str(&format!(
            "Not met. Fastest variant within the quality budget: **{}**, {sp:.2}× decode speed at {pp:.3}× PPL. ",
            r.variant
        )),
        None => out.push_str("Not met: no variant stays within the quality budget. "),
    }
    let (r, sp, pp) = fastest;
    if within.is_none_or(|w| w.0.variant != r.variant) {
        out.push_str(&format!(
            "Fastest variant overall: **{}**, {sp:.2}× decode speed at {pp:.3}× PPL.",
            r.variant
        ));
    }
    out
}

/// The variants no other variant beats on both `cost` (higher speed or lower FLOPs) and
/// perplexity: indices into `rows`, in order of increasing cost.
pub fn pareto(rows: &[Row], axis: CostAxis) -> Vec<usize> {
    let pts: Vec<(usize, f64, f64)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, axis.cost(r)?, r.ppl?)))
        .collect();
    let mut front: Vec<(usize, f64, f64)> = pts
        .iter()
        .filter(|(i, c, q)| {
            !pts.iter()
                .any(|(j, c2, q2)| j != i && c2 <= c && q2 <= q && (c2 < c || q2 < q))
        })
        .copied()
        .collect();
    front.sort_by(|a, b| a.1.total_cmp(&b.1));
    front.into_iter().map(|p| p.0).collect()
}

#[cfg(test)]
mod tests;
