pub mod bench;
pub mod chat;
pub mod compare;
pub mod distill;
pub mod eval;
pub mod generate;
pub mod info;
pub mod output;
pub mod prune;
pub mod quantize;
pub mod recipe;
pub mod run;
pub mod serve;
pub mod tokenize;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use leanlm::run::{Drafter, SpecOptions};

/// The model to use: positional `MODEL` or `-m MODEL` (llama.cpp's flag).
#[derive(clap::Args)]
pub struct ModelArg {
    /// Model: a GGUF file or a Hugging Face folder [default: models/SmolLM2-135M-Instruct.Q4_1.gguf]
    #[arg(value_name = "MODEL")]
    model: Option<PathBuf>,
    /// Same as MODEL, llama.cpp style.
    #[arg(
        short = 'm',
        long = "model",
        value_name = "MODEL",
        conflicts_with = "model"
    )]
    model_flag: Option<PathBuf>,
}

pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

impl ModelArg {
    pub fn path(&self) -> PathBuf {
        self.model
            .clone()
            .or_else(|| self.model_flag.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL))
    }

    pub fn load(&self) -> Result<leanlm::model::Loaded> {
        let path = self.path();
        if !path.exists() && path == Path::new(DEFAULT_MODEL) {
            anyhow::bail!(
                "{DEFAULT_MODEL} not found: run scripts/fetch-model.sh first, or name a model"
            );
        }
        load(&path)
    }

    /// Only the model's tokenizer (its weights are not read).
    pub fn load_tokenizer(&self) -> Result<leanlm::tokenizer::Tokenizer> {
        let path = self.path();
        if !path.exists() && path == Path::new(DEFAULT_MODEL) {
            anyhow::bail!(
                "{DEFAULT_MODEL} not found: run scripts/fetch-model.sh first, or name a model"
            );
        }
        leanlm::model::load_tokenizer(&path)
            .with_context(|| format!("cannot load the tokenizer of {}", path.display()))
    }

    /// [`ModelArg::load`] that accepts non-finite weights (for commands that report them).
    pub fn load_allowing_non_finite(&self) -> Result<leanlm::model::Loaded> {
        let path = self.path();
        if !path.exists() && path == Path::new(DEFAULT_MODEL) {
            anyhow::bail!(
                "{DEFAULT_MODEL} not found: run scripts/fetch-model.sh first, or name a model"
            );
        }
        let options = leanlm::model::LoadOptions {
            allow_non_finite: true,
        };
        leanlm::model::load_with(&path, options).context("cannot load model")
    }
}

/// `--allow-non-finite`, set once from the command line before any model is loaded.
static ALLOW_NON_FINITE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_allow_non_finite(allow: bool) {
    ALLOW_NON_FINITE.store(allow, std::sync::atomic::Ordering::Relaxed);
}

/// Load a model and its tokenizer, naming the path in any error.
pub fn load(path: &Path) -> Result<leanlm::model::Loaded> {
    let options = leanlm::model::LoadOptions {
        allow_non_finite: ALLOW_NON_FINITE.load(std::sync::atomic::Ordering::Relaxed),
    };
    let loaded = leanlm::model::load_with(path, options).context("cannot load model")?;
    warn_f32_fallbacks(&loaded);
    Ok(loaded)
}

/// Says once, at load, which matrices run as f32 because no kernel takes their type.
fn warn_f32_fallbacks(loaded: &leanlm::model::Loaded) {
    let f = loaded.f32_fallbacks();
    if f.is_empty() {
        return;
    }
    let mut types: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, t) in &f {
        *types.entry(t.to_string()).or_default() += 1;
    }
    let types: Vec<String> = types.iter().map(|(t, n)| format!("{t} ×{n}")).collect();
    eprintln!(
        "warning: {} matrices have no kernel for their type ({}) and run as f32, \
         with more memory and slower products (`leanlm info --kernels` lists them)",
        f.len(),
        types.join(", ")
    );
}

/// Input text: `-p TEXT` or `-f FILE`, exactly one of them.
#[derive(clap::Args)]
pub struct TextArg {
    /// The text (prompt).
    #[arg(short = 'p', long = "prompt")]
    prompt: Option<String>,
    /// Read the text from a file.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
}

impl TextArg {
    pub fn read(&self) -> Result<String> {
        text_arg(self.prompt.clone(), self.file.as_deref())
    }
}

fn text_arg(prompt: Option<String>, file: Option<&Path>) -> Result<String> {
    match (prompt, file) {
        (Some(p), None) => Ok(p),
        (None, Some(f)) => read_utf8(f),
        (Some(_), Some(_)) => anyhow::bail!("give either -p TEXT or -f FILE, not both"),
        (None, None) => anyhow::bail!("no input: give -p TEXT or -f FILE"),
    }
}

/// A whole text file, which must be UTF-8.
pub fn read_utf8(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// The short commit of the working directory's git checkout, when there is one.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A progress bar on stderr: `what [bar] pos/len, ETA … message`.
/// `nsamples` calibration windows of `seqlen` tokens drawn from a text file, refused
/// when a window would not fit the model's context (`flag` names the option to fix).
pub fn calibration(
    loaded: &leanlm::model::Loaded,
    path: &Path,
    (nsamples, seqlen, seed): (usize, usize, u64),
    flag: &str,
) -> Result<leanlm::calibrate::Calibration> {
    let context = loaded.model.config.context_len;
    if seqlen > context {
        anyhow::bail!("{flag} {seqlen} exceeds the model's context of {context}");
    }
    // Every window's hidden states are held while a block is calibrated: 16M tokens is
    // far beyond any paper's setting (128 × 2048) and already tens of GB.
    const MAX_TOKENS: usize = 1 << 24;
    if nsamples.checked_mul(seqlen).is_none_or(|t| t > MAX_TOKENS) {
        anyhow::bail!(
            "{nsamples} calibration windows of {seqlen} tokens: at most {MAX_TOKENS} tokens in all"
        );
    }
    let text = read_utf8(path)?;
    let tokens = loaded.tokenizer.encode(&text, false, false)?;
    leanlm::calibrate::Calibration::sample(&tokens, nsamples, seqlen, seed)
        .with_context(|| format!("calibration from {}", path.display()))
}

pub fn bar(what: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(0);
    let t = format!("{what} {{bar:30}} {{pos}}/{{len}}, ETA {{eta}} {{msg}}");
    b.set_style(indicatif::ProgressStyle::with_template(&t).expect("static template"));
    b
}

/// Early exit (CALM): leave a token's pass once the model is confident.
#[derive(clap::Args)]
pub struct ExitArgs {
    /// Exit once the confidence measure reaches this value (e.g. 0.9 for max-prob).
    #[arg(long = "early-exit", value_name = "THRESHOLD")]
    pub threshold: Option<f32>,
    /// Confidence measure: softmax top probability, top-1 minus top-2, or the cosine of
    /// consecutive blocks' hidden states.
    #[arg(long = "exit-measure", value_enum, default_value = "maxprob")]
    pub measure: MeasureArg,
    /// Blocks that always run before an exit is considered.
    #[arg(long = "exit-min", default_value_t = 12)]
    pub min_layers: usize,
    /// Consider an exit after every N-th block from --exit-min on.
    #[arg(long = "exit-every", default_value_t = 4)]
    pub every: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum MeasureArg {
    Maxprob,
    Margin,
    Saturation,
}

impl ExitArgs {
    pub fn policy(&self) -> Option<leanlm::run::ExitPolicy> {
        self.threshold.map(|t| self.policy_at(t))
    }

    /// The policy with the given threshold (for calibration, which chooses it).
    pub fn policy_at(&self, threshold: f32) -> leanlm::run::ExitPolicy {
        leanlm::run::ExitPolicy {
            measure: match self.measure {
                MeasureArg::Maxprob => leanlm::run::Confidence::MaxProb,
                MeasureArg::Margin => leanlm::run::Confidence::Margin,
                MeasureArg::Saturation => leanlm::run::Confidence::Saturation,
            },
            threshold,
            min_layers: self.min_layers,
            every: self.every,
        }
    }
}

/// Speculative decoding: one drafter at a most. Greedy output is unchanged token for token;
/// sampled output keeps the model's distribution.
#[derive(clap::Args)]
pub struct SpecArgs {
    /// Self-speculation: draft with the model's first E blocks (LayerSkip-style).
    #[arg(long = "draft-layers", value_name = "E", conflicts_with_all = ["draft", "lookup"])]
    pub draft_layers: Option<usize>,
    /// Draft with another model of the same vocabulary (e.g. a depth-pruned copy).
    #[arg(long = "draft", value_name = "MODEL")]
    pub draft: Option<std::path::PathBuf>,
    /// Prompt lookup: draft the tokens that followed the last N-gram's previous occurrence.
    /// With --draft, lookup drafts where the N-gram occurred before and the draft model
    /// elsewhere.
    #[arg(long = "lookup", value_name = "N")]
    pub lookup: Option<usize>,
    /// Draft length per verification pass (1..=16).
    #[arg(long = "draft-k", default_value_t = 4)]
    pub k: usize,
    /// Adapt the draft length to the acceptance rate.
    #[arg(long)]
    pub adaptive: bool,
    /// Stop drafting at the first token the draft model (or draft layers) gives less than
    /// this probability, as llama.cpp's --draft-p-min; 0 always drafts --draft-k tokens.
    #[arg(long = "draft-p-min", value_name = "P", default_value_t = 0.75)]
    pub p_min: f32,
}

impl SpecArgs {
    pub fn enabled(&self) -> bool {
        self.draft_layers.is_some() || self.draft.is_some() || self.lookup.is_some()
    }

    /// The drafter, loading a draft model when one is named.
    pub fn drafter<'a>(&self, draft_model: Option<&'a leanlm::model::Model>) -> Drafter<'a> {
        match (self.draft_layers, draft_model, self.lookup) {
            (Some(e), _, _) => Drafter::EarlyLayers(e),
            (_, Some(model), Some(ngram)) => Drafter::ModelAndLookup { model, ngram },
            (_, Some(m), _) => Drafter::Model(m),
            (_, _, Some(n)) => Drafter::PromptLookup { ngram: n },
            _ => Drafter::PromptLookup { ngram: 0 },
        }
    }

    /// The `--draft` model, loaded and checked against the target's vocabulary.
    pub fn load_draft(
        &self,
        target: &leanlm::model::Loaded,
    ) -> Result<Option<leanlm::model::Loaded>> {
        let Some(path) = &self.draft else {
            return Ok(None);
        };
        let draft = load(path)?;
        leanlm::run::check_vocabularies(&target.tokenizer, &draft.tokenizer)
            .with_context(|| format!("--draft {}", path.display()))?;
        Ok(Some(draft))
    }

    pub fn options(&self) -> SpecOptions {
        SpecOptions {
            k: self.k,
            adaptive: self.adaptive,
            p_min: self.p_min,
        }
    }
}

/// Sampling, with llama.cpp's flag names and defaults (except the temperature: greedy
/// unless `--temp` is given, so that output is reproducible by default).
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 = greedy.
    #[arg(long = "temp", visible_alias = "temperature", default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one.
    #[arg(long, value_name = "P", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalize tokens seen in the last --repeat-last-n tokens: a positive logit is
    /// divided by this, a negative one multiplied (1.0 = off; 1.1–1.3 stops most loops).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens (prompt included) the penalties look at (0 = none).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Subtract this for each time a token occurs in the window.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Subtract this once from every token that occurs in the window.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Random seed for sampling (same seed, same text); random when not given, and printed.
    #[arg(short = 's', long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// The sampler's settings, with a random seed drawn (and returned) when none was given.
    pub fn config(&self) -> (leanlm::run::SamplerConfig, u64) {
        let seed = self.seed.unwrap_or_else(random_seed);
        (
            leanlm::run::SamplerConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                penalties: leanlm::run::Penalties {
                    repeat: self.repeat_penalty,
                    frequency: self.frequency_penalty,
                    presence: self.presence_penalty,
                    last_n: self.repeat_last_n,
                },
                seed,
            },
            seed,
        )
    }
}

/// A seed from the clock and the process id, for sampling without `--seed`.
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ ((std::process::id() as u64) << 32);
    // splitmix64's finalizer, so close clocks give unrelated seeds.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) % (1 << 32)
}

/// llama.cpp's `-ngl`: accepted so that its command lines fail with the reason.
#[derive(clap::Args, Clone, Debug)]
pub struct GpuArg {
    /// Layers to offload to a GPU (llama.cpp's -ngl). Not supported: leanlm runs inference
    /// on the CPU.
    #[arg(long = "n-gpu-layers", value_name = "N", hide_short_help = true)]
    pub n_gpu_layers: Option<String>,
}

impl GpuArg {
    pub fn check(&self) -> Result<()> {
        if let Some(n) = &self.n_gpu_layers {
            anyhow::bail!(
                "-ngl {n}: GPU offload is not supported for inference; leanlm runs models on the \
                 CPU's own kernels (drop -ngl)"
            );
        }
        Ok(())
    }
}

/// llama.cpp's flags that are a dash and several letters, which no argument parser reads
/// as one flag: each becomes its long form before parsing.
pub const LLAMA_SHORT_FLAGS: [(&str, &str); 3] = [
    ("-ngl", "--n-gpu-layers"),
    ("-sys", "--system-prompt"),
    ("-np", "--parallel"),
];

/// Rewrite [`LLAMA_SHORT_FLAGS`] in a command line (`-ngl 99`, `-ngl=99`).
pub fn long_flags(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.map(|a| {
        let Some(s) = a.to_str() else {
            return a;
        };
        for (short, long) in LLAMA_SHORT_FLAGS {
            if s == short {
                return long.into();
            }
            if let Some(v) = s.strip_prefix(short).and_then(|r| r.strip_prefix('=')) {
                return format!("{long}={v}").into();
            }
        }
        a
    })
    .collect()
}
