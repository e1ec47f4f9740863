//! Writing a derived model: a .gguf file, or a Hugging Face folder for any other path.

use std::path::Path;

use anyhow::{Context, Result};
use leanlm::model::{save_gguf, save_hf, HfDtype, Loaded, Model};
use leanlm::quant::GgmlType;
use leanlm::transform::quantize::{for_output, OutType};

/// Storage of the written matrices.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OutTypeArg {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    Same,
}

/// Whether `path` names a Hugging Face folder rather than a GGUF file.
pub fn is_hf(path: &Path) -> bool {
    path.extension().is_none_or(|e| e != "gguf")
}

/// Refuse output types a Hugging Face folder cannot hold, before any work starts.
pub fn check(path: &Path, outtype: OutTypeArg) -> Result<()> {
    if is_hf(path) && matches!(outtype, OutTypeArg::Q8_0 | OutTypeArg::Same) {
        anyhow::bail!(
            "a Hugging Face folder holds f32 or f16 tensors: use --outtype f32|f16, or a .gguf output"
        );
    }
    Ok(())
}

/// Write `model` (derived from `source`) to `path` in `outtype`; returns what was written.
pub fn write(model: &Model, source: &Loaded, path: &Path, outtype: OutTypeArg) -> Result<Model> {
    let outtype = match outtype {
        OutTypeArg::F32 => OutType::F32,
        OutTypeArg::F16 => OutType::F16,
        OutTypeArg::Q8_0 => OutType::Q8_0,
        OutTypeArg::Same => OutType::Same,
    };
    let source_type = source.model.layers[0].wq.dtype();
    let (out_model, dense_as) = for_output(model, outtype, source_type)?;
    let written = if is_hf(path) {
        let dtype = match dense_as {
            GgmlType::F16 => HfDtype::F16,
            _ => HfDtype::F32,
        };
        save_hf(&out_model, &source.tokenizer, path, dtype)
    } else {
        save_gguf(&out_model, source.metadata_to_carry()?, path, dense_as)
    };
    written.with_context(|| format!("writing {}", path.display()))?;
    Ok(out_model)
}

/// Size of a file, or of the files in a folder.
pub fn disk_bytes(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => std::fs::read_dir(path)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0),
        Err(_) => 0,
    }
}
