//! Knowledge distillation (Hinton et al. 2015): a student learns to match a frozen
//! teacher's next-token distributions (and optionally hidden states), to heal a pruned
//! model or to train a small draft model for speculative decoding.
//!
//! `student` is the differentiable forward pass, `loss` the divergences, `teacher` the
//! frozen teacher and its top-k cache, `data` the packed training text, `optim` AdamW
//! and the schedule, `checkpoint` resumable state, `train` the loop.

pub mod checkpoint;
pub mod data;
pub mod loss;
pub mod optim;
pub mod student;
pub mod teacher;
pub mod train;

pub use data::Dataset;
pub use loss::{Divergence, HiddenLoss, LossConfig, TeacherTopK};
pub use optim::{AdamWConfig, Schedule};
pub use student::{Student, StudentOptions};
pub use teacher::{write_cache, Teacher, MAGIC as CACHE_MAGIC};
pub use train::{HiddenPair, LogLine, TrainConfig, Trainer};

use crate::error::{Error, Result};
use crate::model::Model;

/// A student made of the teacher's blocks `keep` (in order), its embeddings, final norm
/// and head: the usual start for a shallow draft model.
pub fn init_from_teacher(teacher: &Model, keep: &[usize]) -> Result<Model> {
    let n = teacher.layers.len();
    if keep.is_empty() {
        return Err(Error::InvalidInput(
            "--init-from-teacher needs at least one layer".into(),
        ));
    }
    if let Some(&bad) = keep.iter().find(|&&l| l >= n) {
        return Err(Error::InvalidInput(format!(
            "--init-from-teacher: layer {bad} does not exist (the teacher has layers 0..{n})"
        )));
    }
    if keep.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::InvalidInput(
            "--init-from-teacher: list layers in increasing order, each once".into(),
        ));
    }
    let layers = keep.iter().map(|&l| teacher.layers[l].clone()).collect();
    Model::new(
        teacher.config.clone(),
        teacher.tok_embd.clone(),
        layers,
        teacher.out_norm.clone(),
        teacher.output.clone(),
    )
}

/// The device a student trains on: `cpu`, or `cuda` / `cuda:N` in a build with the
/// `cuda` feature.
pub fn device(name: &str) -> Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        _ if name == "cuda" || name.starts_with("cuda:") => {
            let ordinal: usize = match name.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map_err(|_| Error::InvalidInput(format!("bad device '{name}'")))?,
                None => 0,
            };
            cuda_device(ordinal)
        }
        _ => Err(Error::InvalidInput(format!(
            "unknown device '{name}' (use cpu, cuda or cuda:N)"
        ))),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<candle_core::Device> {
    Ok(candle_core::Device::new_cuda(ordinal)?)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<candle_core::Device> {
    Err(Error::InvalidInput(
        "this leanlm was built without CUDA: rebuild with `cargo build --release --features cuda`"
            .into(),
    ))
}

/// "0,2,4" or "0-5,8" → layer indices.
pub fn parse_layer_list(s: &str) -> Result<Vec<usize>> {
    let bad = || Error::InvalidInput(format!("bad layer list '{s}' (e.g. 0,2,4 or 0-7)"));
    // No model has this many blocks; a larger index is a typo, and a range up to it would
    // allocate without bound.
    const MAX_LAYER: usize = 100_000;
    let index = |t: &str| {
        t.parse::<usize>()
            .ok()
            .filter(|&i| i < MAX_LAYER)
            .ok_or_else(bad)
    };
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (index(a)?, index(b)?);
                if a > b || out.len() + (b - a) >= MAX_LAYER {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None if out.len() >= MAX_LAYER => return Err(bad()),
            None => out.push(index(part)?),
        }
    }
    Ok(out)
}
