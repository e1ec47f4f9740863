//! Running a model: sampling, text generation, early exit and speculative decoding.

pub mod chat;
pub mod early_exit;
pub mod generate;
pub mod sampler;
pub mod speculative;

pub use early_exit::{generate_early_exit, Confidence, ExitPolicy, ExitStats};
pub use generate::{generate, Generation};
pub use sampler::{argmax, Sampler, SamplerConfig};
pub use speculative::{generate_speculative, Drafter, SpecOptions, SpecStats};
