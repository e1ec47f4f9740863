//! Training checkpoints: the student's trainable tensors, AdamW's moments and the step,
//! in one safetensors file (state in its metadata) written to a temporary name and
//! renamed, so a checkpoint on disk is always whole. The data order follows from the
//! step (see [`super::data`]), so this is all a resumed run needs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::optim::AdamW;
use super::student::Param;
use crate::error::{Error, Result};

/// `path` with `.partial` appended to its file name.
pub fn partial_path(path: &Path) -> PathBuf {
    crate::model::spill::with_suffix(path, ".partial")
}

/// What a checkpoint records besides tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointState {
    /// Optimizer steps completed.
    pub step: usize,
    /// The settings that must not change across a resume (model, data, loss, schedule).
    pub fingerprint: String,
}

pub fn save(path: &Path, params: &[Param], opt: &AdamW, state: &CheckpointState) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (i, p) in params.iter().enumerate() {
        tensors.push((format!("param/{}", p.name), p.var.as_tensor().clone()));
        tensors.push((format!("adam_m/{}", p.name), opt.m[i].clone()));
        tensors.push((format!("adam_v/{}", p.name), opt.v[i].clone()));
    }
    let meta = HashMap::from([
        ("step".to_string(), state.step.to_string()),
        ("adam_t".to_string(), opt.t.to_string()),
        ("fingerprint".to_string(), state.fingerprint.clone()),
    ]);
    let tmp = partial_path(path);
    safetensors::serialize_to_file(
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        Some(meta),
        &tmp,
    )
    .map_err(|e| Error::InvalidInput(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::write(path, e))
}

/// Load `path` into `params` and `opt`; refuses a checkpoint of other settings.
pub fn load(
    path: &Path,
    params: &[Param],
    opt: &mut AdamW,
    fingerprint: &str,
) -> Result<CheckpointState> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::InvalidInput(format!("{}: {m}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a checkpoint: {e}")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| bad(format!("checkpoint lacks '{k}'")))
    };
    let state = CheckpointState {
        step: get("step")?.parse().map_err(|_| bad("bad step".into()))?,
        fingerprint: get("fingerprint")?,
    };
    if state.fingerprint != fingerprint {
        return Err(bad(format!(
            "checkpoint was made with other settings; remove it or run with the same ones\n  checkpoint: {}\n  this run:   {fingerprint}",
            state.fingerprint
        )));
    }
    let adam_t: usize = get("adam_t")?
        .parse()
        .map_err(|_| bad("bad adam_t".into()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    let take = |name: String, like: &Tensor| -> Result<Tensor> {
        let t = tensors
            .get(&name)
            .ok_or_else(|| bad(format!("checkpoint lacks {name}")))?;
        if t.dims() != like.dims() {
            return Err(bad(format!(
                "{name} has shape {:?}, expected {:?}",
                t.dims(),
                like.dims()
            )));
        }
        Ok(t.to_dtype(like.dtype())?.to_device(like.device())?)
    };
    for (i, p) in params.iter().enumerate() {
        let w = p.var.as_tensor();
        p.var.set(&take(format!("param/{}", p.name), w)?)?;
        opt.m[i] = take(format!("adam_m/{}", p.name), w)?;
        opt.v[i] = take(format!("adam_v/{}", p.name), w)?;
    }
    opt.t = adam_t;
    Ok(state)
}
