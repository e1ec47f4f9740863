//! Transforms that turn a model into a cheaper one.

pub mod quantize;
