//! Transforms that turn a model into a cheaper one.

pub mod linalg;
pub mod mix;
pub mod prune;
pub mod quantize;
