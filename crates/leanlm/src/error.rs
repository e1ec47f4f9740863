//! Library errors. Each variant names the file, tensor or field at fault so that the
//! command-line tool can print one line a user can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not a valid GGUF file: {reason}")]
    BadGguf { path: PathBuf, reason: String },

    #[error("{path}: tensor '{tensor}' {reason}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },

    #[error("missing tensor '{0}'")]
    MissingTensor(String),

    #[error("missing metadata key '{0}'")]
    MissingKey(String),

    #[error("unsupported architecture '{found}' (supported: {supported})")]
    UnknownArchitecture { found: String, supported: String },

    #[error("chat template{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    ChatTemplate { line: Option<usize>, reason: String },

    #[error("unsupported tensor type {0}")]
    UnsupportedType(String),

    #[error("shape mismatch for {what}: expected {expected:?}, found {found:?}")]
    Shape {
        what: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{path}: bad model config: {reason}")]
    BadConfig { path: PathBuf, reason: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("{0}")]
    InvalidInput(String),

    #[error("context overflow: {needed} positions needed but the context holds {ctx}")]
    ContextOverflow { needed: usize, ctx: usize },

    #[error(transparent)]
    Recipe(Box<crate::recipe::RecipeError>),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An output path leanlm refuses to write to (it would replace or remove something
    /// leanlm did not create, or the input itself).
    #[error("{path}: {reason}")]
    Output { path: PathBuf, reason: String },

    /// Training diverged: a loss or gradient stopped being a finite number.
    #[error("distillation diverged at step {step}: {what} is {value} (try a lower learning rate)")]
    NonFinite {
        step: usize,
        what: String,
        value: f64,
    },

    #[error("{path}: {count} non-finite weights (NaN or infinity) in {tensors}; the file is corrupt (allow_non_finite, or --allow-non-finite, loads it anyway)")]
    NonFiniteWeights {
        path: PathBuf,
        count: usize,
        tensors: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A failed write, create, rename or removal of `path`.
    pub fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Write {
            path: path.into(),
            source,
        }
    }
}
