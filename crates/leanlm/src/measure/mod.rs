//! Measuring a model: quality metrics computed from its log-probabilities.

pub mod bandwidth;
pub mod cost;
pub mod humaneval;
pub mod kld;
pub mod multiple_choice;
pub mod perplexity;
pub mod results;
pub mod sandbox;

pub use kld::{compare, BaseLogits, KldReport};
pub use perplexity::{
    nll_of, perplexity, perplexity_of, Chunks, PerplexityOptions, PerplexityReport, Protocol,
    RunningNll,
};
