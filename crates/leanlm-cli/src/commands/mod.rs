pub mod bench;
pub mod eval;
pub mod generate;
pub mod info;
pub mod prune;
pub mod quantize;
pub mod tokenize;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
}

/// Load a model and its tokenizer, naming the path in any error.
pub fn load(path: &Path) -> Result<leanlm::model::Loaded> {
    leanlm::model::load(path).context("cannot load model")
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

/// A progress bar on stderr: `what [bar] pos/len, ETA … message`.
pub fn bar(what: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(0);
    let t = format!("{what} {{bar:30}} {{pos}}/{{len}}, ETA {{eta}} {{msg}}");
    b.set_style(indicatif::ProgressStyle::with_template(&t).expect("static template"));
    b
}
