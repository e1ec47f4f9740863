//! leanlm: load a transformer LLM, make it cheaper (prune, distill, quantize, decode
//! adaptively) and measure what that costs in quality and buys in speed.
//!
//! The modules follow the pipeline: `model` (formats, forward pass) → `quant` (storage
//! and kernels) → `tokenizer` → `calibrate` (activation statistics) → `transform`
//! (prune, quantize) → `run` (generation) → `measure` (quality and cost).

pub mod calibrate;
pub mod distill;
pub mod error;
pub mod measure;
pub mod model;
pub mod numerics;
pub mod quant;
pub mod recipe;
pub mod report;
pub mod run;
pub mod tokenizer;
pub mod transform;

pub use error::{Error, Result};
