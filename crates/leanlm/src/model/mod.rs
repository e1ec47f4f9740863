//! Models: file formats, families and their tensor roles, configuration, the forward pass
//! and its cache and hooks.

pub mod arch;
mod attention;
pub mod config;
pub mod destination;
pub mod finite;
pub mod gguf;
pub mod hooks;
pub mod kv_cache;
pub mod llama;
mod load_gguf;
mod load_hf;
pub mod random;
mod save_gguf;
mod save_hf;
pub mod spill;
pub mod tensors;
mod vec_math;

use std::path::{Path, PathBuf};

pub use arch::{Activation, Family};
pub use config::{Arch, Config, RopeStyle};
pub use hooks::{Hooks, LinearSite, NoHooks};
pub use kv_cache::KvCache;
pub use llama::{Layer, Logits, Model, Pass};
pub use load_gguf::{config_from_gguf, load_gguf};
pub use load_hf::{config_from_hf, load_hf};
pub use save_gguf::{save_gguf, GgufModelWriter};
pub use save_hf::{save_hf, HfDtype, HfModelWriter};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// Where a model came from.
pub enum Source {
    Gguf(gguf::GgufFile),
    HfDir(PathBuf),
}

/// A model with its tokenizer.
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub source: Source,
}

impl Loaded {
    /// Bytes of the model's files on disk.
    pub fn file_bytes(&self) -> u64 {
        match &self.source {
            Source::Gguf(f) => f.file_size(),
            Source::HfDir(dir) => std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                        .filter_map(|e| e.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0),
        }
    }
}

impl Loaded {
    /// Matrices of the file that no kernel computes with as stored, so that they were
    /// decoded to f32 at load (more memory, slower products): name and stored type.
    pub fn f32_fallbacks(&self) -> Vec<(String, crate::quant::GgmlType)> {
        match &self.source {
            Source::Gguf(f) => f
                .tensors
                .iter()
                .filter(|t| t.dims.len() == 2 && crate::quant::runs_as_f32(t.dtype))
                .map(|t| (t.name.clone(), t.dtype))
                .collect(),
            // safetensors hold f32, f16 or bf16, which run as stored or are f32.
            Source::HfDir(_) => Vec::new(),
        }
    }

    /// Metadata a derived GGUF keeps: the tokenizer and the `general.*` keys (name,
    /// license, …) of a GGUF source, or the tokenizer of a Hugging Face folder. Keys that
    /// describe the old file's layout (type, alignment) are left for the writer.
    pub fn metadata_to_carry(&self) -> Result<Vec<(String, gguf::Value)>> {
        match &self.source {
            Source::Gguf(f) => Ok(f
                .metadata
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("tokenizer.")
                        || (k.starts_with("general.")
                            && *k != "general.file_type"
                            && *k != "general.alignment")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()),
            Source::HfDir(_) => self.tokenizer.gguf_metadata(),
        }
    }
}

/// How [`load_with`] treats a suspicious model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Load a model whose weights hold NaN or infinity (refused by default).
    pub allow_non_finite: bool,
}

/// Load a GGUF file or a Hugging Face folder, with its tokenizer, refusing non-finite
/// weights.
pub fn load(path: &Path) -> Result<Loaded> {
    load_with(path, LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(path: &Path, options: LoadOptions) -> Result<Loaded> {
    let loaded = load_unchecked(path)?;
    if !options.allow_non_finite {
        let found = finite::non_finite_tensors(&loaded.model);
        if !found.is_empty() {
            return Err(Error::NonFiniteWeights {
                path: path.to_path_buf(),
                count: found.iter().map(|(_, n)| n).sum(),
                tensors: finite::describe(&found),
            });
        }
    }
    Ok(loaded)
}

fn load_unchecked(path: &Path) -> Result<Loaded> {
    if path.is_dir() {
        let model = load_hf(path)?;
        let tokenizer = Tokenizer::from_hf_dir(path)?;
        check_vocab(&model, &tokenizer)?;
        return Ok(Loaded {
            model,
            tokenizer,
            source: Source::HfDir(path.to_path_buf()),
        });
    }
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    }
    let f = gguf::GgufFile::open(path)?;
    let model = load_gguf(&f)?;
    let tokenizer = Tokenizer::from_gguf(&f)?;
    check_vocab(&model, &tokenizer)?;
    Ok(Loaded {
        model,
        tokenizer,
        source: Source::Gguf(f),
    })
}

/// The tokenizer of a GGUF file or Hugging Face folder, without loading the weights (as
/// llama.cpp's `vocab_only`): for tokenizing text with a model whose architecture need not
/// be one leanlm runs.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if path.is_dir() {
        return Tokenizer::from_hf_dir(path);
    }
    Tokenizer::from_gguf(&gguf::GgufFile::open(path)?)
}

fn check_vocab(model: &Model, tok: &Tokenizer) -> Result<()> {
    // Models may pad the embedding beyond the tokenizer's vocabulary, never the reverse.
    if tok.vocab_size() > model.vocab_size() {
        return Err(Error::Tokenizer(format!(
            "tokenizer has {} tokens but the model's embedding has only {} rows",
            tok.vocab_size(),
            model.vocab_size()
        )));
    }
    Ok(())
}
