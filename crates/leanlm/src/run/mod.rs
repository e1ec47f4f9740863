//! Running a model: sampling, text generation, early exit, speculative decoding, and
//! several requests at once (slots).

pub mod chat;
pub mod early_exit;
pub mod exit_threshold;
pub mod generate;
pub mod sampler;
pub mod session;
pub mod slots;
pub mod speculative;
pub mod stop;

pub use early_exit::{generate_early_exit, Confidence, ExitPolicy, ExitStats};
pub use exit_threshold::{Budget, ExitProfile, ThresholdPoint};
pub use generate::{generate, keep_going, Generation};
pub use sampler::{argmax, Penalties, Sampler, SamplerConfig};
pub use speculative::{check_vocabularies, generate_speculative, Drafter, SpecOptions, SpecStats};
