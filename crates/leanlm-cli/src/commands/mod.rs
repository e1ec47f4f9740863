pub mod bench;
pub mod eval;
pub mod generate;
pub mod info;
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

/// Text from `-p` or `-f`, exactly one of them.
pub fn text_arg(prompt: Option<String>, file: Option<&Path>) -> Result<String> {
    match (prompt, file) {
        (Some(p), None) => Ok(p),
        (None, Some(f)) => {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", f.display()))
        }
        (Some(_), Some(_)) => anyhow::bail!("give either -p TEXT or -f FILE, not both"),
        (None, None) => anyhow::bail!("no input: give -p TEXT or -f FILE"),
    }
}
