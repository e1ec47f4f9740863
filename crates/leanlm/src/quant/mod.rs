//! Quantized storage and the kernels that compute with it.
//!
//! `blocks` encodes and decodes GGML block formats, `activation` quantizes the input
//! vector of a matrix product once, to 8 bits or to 16 (two 8-bit halves), `dot` holds
//! the inner products of decode (a plain reference and SIMD versions), `igemm` the
//! integer product of prompts, `gemm` wraps a tuned dense f32 matrix product
//! (calibration, transforms, f32 models and the types `igemm` does not take), and
//! `matrix` is the weight matrix a model layer owns.

pub mod activation;
pub mod blocks;
pub mod codes;
pub mod dot;
pub mod finite;
pub mod fit;
pub mod gemm;
mod ggml_type;
pub mod igemm;
pub mod kquants;
pub mod matrix;
pub mod q8k;
pub(crate) mod simd;
pub mod sparse;
#[cfg(test)]
mod speed;

pub use ggml_type::GgmlType;
pub use matrix::{runs_as_f32, Bytes, KernelPlan, Matrix};

/// Reproducible test values in [-1, 1) (a linear congruential generator).
#[cfg(test)]
pub(crate) fn test_data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}
