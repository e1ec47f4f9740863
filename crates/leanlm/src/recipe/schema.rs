//! The recipe file: an ordered list of stages, each a small typed config, and the
//! evaluation every variant gets. Field names match the CLI flags of the stage's verb.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A whole recipe, as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Name of the run; the run folder defaults to `runs/NAME`.
    pub name: String,
    /// One line on what the recipe shows (for the report).
    #[serde(default)]
    pub description: String,
    /// The original model: every stage descends from it, KLD is measured against it.
    pub model: PathBuf,
    /// Worker threads of every job (None: all cores).
    #[serde(default)]
    pub threads: Option<usize>,
    pub eval: Eval,
    /// A target/draft pair measured beside the variants, when both files exist.
    #[serde(default)]
    pub pair: Option<Pair>,
    /// The `[[stage]]` tables, typed one by one so that errors name their lines.
    #[serde(rename = "stage", default)]
    pub(crate) raw_stages: Vec<toml::Spanned<toml::Value>>,
}

/// What every variant is measured on; the same for all of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Eval {
    /// Perplexity text (llama.cpp protocol: chunks of `ctx`, second half scored).
    pub ppl: PathBuf,
    #[serde(default = "default_ctx")]
    pub ctx: usize,
    /// Chunks of the text to score (None: all).
    #[serde(default)]
    pub chunks: Option<usize>,
    /// KL divergence and same-top rate against the original model, on the same chunks.
    #[serde(default = "yes")]
    pub kld: bool,
    /// HellaSwag tasks file (llama.cpp layout); None skips HellaSwag.
    #[serde(default)]
    pub hellaswag: Option<PathBuf>,
    #[serde(default)]
    pub tasks: Option<usize>,
    /// HumanEval pass@1 (code models), completions run in a sandbox.
    #[serde(default)]
    pub humaneval: bool,
    /// Only the first N HumanEval problems (None: all 164).
    #[serde(default)]
    pub problems: Option<usize>,
    /// HumanEval through the chat template (EvalPlus's instruct form) instead of the bare
    /// prompt.
    #[serde(default)]
    pub humaneval_chat: bool,
    #[serde(default)]
    pub bench: Bench,
}

/// A target and a draft model of one vocabulary (not stages of the recipe): the report
/// gives the target's plain decode speed beside its speed with speculative decoding, or
/// says that the pair was not run when a file is absent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    pub target: PathBuf,
    pub draft: PathBuf,
    /// Draft length per verification pass.
    #[serde(default = "default_pair_k")]
    pub k: usize,
    /// Draft-probability cut-off (`--draft-p-min`); unset takes the CLI's default.
    #[serde(default)]
    pub p_min: Option<f32>,
    /// Tokens decoded per repetition.
    #[serde(default = "default_gen")]
    pub gen: usize,
}

fn default_pair_k() -> usize {
    8
}

/// Speed measurement settings (`leanlm bench`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bench {
    #[serde(default = "default_prompt")]
    pub prompt: usize,
    #[serde(default = "default_gen")]
    pub gen: usize,
    #[serde(default = "default_reps")]
    pub reps: usize,
}

impl Default for Bench {
    fn default() -> Self {
        Self {
            prompt: default_prompt(),
            gen: default_gen(),
            reps: default_reps(),
        }
    }
}

/// One stage. `input` names the model it starts from: `original`, or an earlier stage's
/// name; by default the previous stage's output (the original for the first stage).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Stage {
    Prune(Prune),
    Distill(Distill),
    Quantize(Quantize),
    Decode(Decode),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PruneMethod {
    Magnitude,
    Wanda,
    Sparsegpt,
}

/// `leanlm prune`: weights (method + sparsity or pattern) or structures.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prune {
    pub name: String,
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub method: Option<PruneMethod>,
    #[serde(default)]
    pub sparsity: Option<f32>,
    /// N:M, e.g. "2:4".
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub owl: bool,
    /// heads=K, kv-heads=G, ffn=F or layers=N.
    #[serde(default)]
    pub structured: Option<String>,
    pub calib: PathBuf,
    #[serde(default = "default_nsamples")]
    pub nsamples: usize,
    #[serde(default = "default_seqlen")]
    pub seqlen: usize,
    #[serde(default)]
    pub seed: u64,
}

/// `leanlm distill`: the input (or `init` teacher blocks) learns from `teacher`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distill {
    pub name: String,
    #[serde(default)]
    pub input: Option<String>,
    /// `original` or an earlier stage.
    #[serde(default = "original")]
    pub teacher: String,
    /// Build the student from teacher blocks instead of the input: "layers=0-11".
    #[serde(default)]
    pub init: Option<String>,
    pub steps: usize,
    pub data: Vec<PathBuf>,
    #[serde(default = "default_seq")]
    pub seq: usize,
    #[serde(default = "one")]
    pub batch: usize,
    #[serde(default = "default_accum")]
    pub accum: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    /// kl, rkl, jsd:BETA or ce.
    #[serde(default = "default_loss")]
    pub loss: String,
    #[serde(default = "one_f")]
    pub temperature: f64,
    /// Hidden-state pairs "S:T,…".
    #[serde(default)]
    pub hidden: Option<String>,
    #[serde(default)]
    pub seed: u64,
}

fn default_imatrix_samples() -> usize {
    32
}

fn default_imatrix_seqlen() -> usize {
    512
}

/// The quantization types `leanlm quantize` writes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QuantType {
    Q8_0,
    Q4_0,
    Q4_1,
    #[serde(rename = "q4_k")]
    Q4K,
    #[serde(rename = "q6_k")]
    Q6K,
}

impl QuantType {
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Q8_0 => "q8_0",
            QuantType::Q4_0 => "q4_0",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q4K => "q4_k",
            QuantType::Q6K => "q6_k",
        }
    }
}

/// `leanlm quantize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantize {
    pub name: String,
    #[serde(default)]
    pub input: Option<String>,
    /// Target type of every matrix (`type` names the stage kind).
    pub quant: QuantType,
    /// Calibration text for an importance matrix (`leanlm quantize --imatrix`).
    #[serde(default)]
    pub imatrix: Option<PathBuf>,
    /// Calibration windows and their length for the importance matrix.
    #[serde(default = "default_imatrix_samples")]
    pub imatrix_samples: usize,
    #[serde(default = "default_imatrix_seqlen")]
    pub imatrix_seqlen: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExitMeasure {
    Maxprob,
    Margin,
    Saturation,
}

/// Decoding settings on the input's model: early exit or one speculative drafter. It
/// writes no model file; its variant is the input model decoded this way.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decode {
    pub name: String,
    #[serde(default)]
    pub input: Option<String>,
    /// Early exit once the confidence reaches this value.
    #[serde(default)]
    pub early_exit: Option<f32>,
    #[serde(default = "default_measure")]
    pub exit_measure: ExitMeasure,
    #[serde(default = "default_exit_min")]
    pub exit_min: usize,
    #[serde(default = "default_exit_every")]
    pub exit_every: usize,
    /// Self-speculation with the first E blocks.
    #[serde(default)]
    pub draft_layers: Option<usize>,
    /// Draft model: `original`, an earlier stage, or a model file (a path).
    #[serde(default)]
    pub draft: Option<String>,
    /// Prompt lookup with N-grams.
    #[serde(default)]
    pub lookup: Option<usize>,
    /// Draft length per verification.
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default)]
    pub adaptive: bool,
    /// Draft-probability cut-off (`--draft-p-min`); unset takes the CLI's default.
    #[serde(default)]
    pub p_min: Option<f32>,
}

impl Stage {
    pub fn name(&self) -> &str {
        match self {
            Stage::Prune(s) => &s.name,
            Stage::Distill(s) => &s.name,
            Stage::Quantize(s) => &s.name,
            Stage::Decode(s) => &s.name,
        }
    }

    pub fn input(&self) -> Option<&str> {
        match self {
            Stage::Prune(s) => s.input.as_deref(),
            Stage::Distill(s) => s.input.as_deref(),
            Stage::Quantize(s) => s.input.as_deref(),
            Stage::Decode(s) => s.input.as_deref(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Stage::Prune(_) => "prune",
            Stage::Distill(_) => "distill",
            Stage::Quantize(_) => "quantize",
            Stage::Decode(_) => "decode",
        }
    }

    /// Whether the stage writes a model file (decode stages do not).
    pub fn writes_model(&self) -> bool {
        !matches!(self, Stage::Decode(_))
    }
}

fn default_ctx() -> usize {
    512
}
fn yes() -> bool {
    true
}
fn default_prompt() -> usize {
    512
}
fn default_gen() -> usize {
    128
}
fn default_reps() -> usize {
    5
}
fn default_nsamples() -> usize {
    128
}
fn default_seqlen() -> usize {
    2048
}
fn original() -> String {
    super::ORIGINAL.to_string()
}
fn default_seq() -> usize {
    512
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn default_accum() -> usize {
    4
}
fn default_lr() -> f64 {
    1e-4
}
fn default_warmup() -> usize {
    10
}
fn default_loss() -> String {
    "kl".into()
}
fn default_measure() -> ExitMeasure {
    ExitMeasure::Maxprob
}
fn default_exit_min() -> usize {
    12
}
fn default_exit_every() -> usize {
    4
}
fn default_k() -> usize {
    4
}
