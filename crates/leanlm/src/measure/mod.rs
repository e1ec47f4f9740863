//! Measuring a model: quality metrics computed from its log-probabilities.

pub mod perplexity;

pub use perplexity::{perplexity, PerplexityOptions, PerplexityReport, RunningNll};
