//! Running a model: sampling and text generation.

pub mod chat;
pub mod generate;
pub mod sampler;

pub use generate::{generate, Generation};
pub use sampler::{argmax, Sampler, SamplerConfig};
