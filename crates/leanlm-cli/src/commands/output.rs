//! Writing a derived model: a .gguf file, or a Hugging Face folder for any other path.

use std::path::Path;

use anyhow::{Context, Result};
use leanlm::model::destination::{self, OutputKind};
use leanlm::model::{
    save_gguf, save_hf, GgufModelWriter, HfDtype, HfModelWriter, Layer, Loaded, Model,
};
use leanlm::quant::GgmlType;
use leanlm::transform::quantize::{OutType, OutputFormat};

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

/// Refuse an output path that would replace anything but an earlier leanlm output of the
/// same kind (and that only with `--force`) or any of `inputs`, then remove what a killed
/// earlier write of it left; before any work starts. See `leanlm::model::destination`.
pub fn prepare(path: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    let kind = match is_hf(path) {
        true => OutputKind::HfFolder,
        false => OutputKind::Gguf,
    };
    destination::prepare(path, kind, inputs, force)?;
    Ok(())
}

/// How matrices derived from `source` are stored in the output.
pub fn format(outtype: OutTypeArg, source: &Loaded) -> OutputFormat {
    let out = match outtype {
        OutTypeArg::F32 => OutType::F32,
        OutTypeArg::F16 => OutType::F16,
        OutTypeArg::Q8_0 => OutType::Q8_0,
        OutTypeArg::Same => OutType::Same,
    };
    OutputFormat {
        out,
        source: source.model.layers[0].wq.dtype(),
    }
}

/// Write `model` (derived from `source`) to `path` in `outtype`; returns what was written.
pub fn write(model: &Model, source: &Loaded, path: &Path, outtype: OutTypeArg) -> Result<Model> {
    let (out_model, dense_as) = format(outtype, source).model(model)?;
    let written = if is_hf(path) {
        save_hf(&out_model, &source.tokenizer, path, hf_dtype(dense_as))
    } else {
        save_gguf(&out_model, source.metadata_to_carry()?, path, dense_as)
    };
    written.with_context(|| format!("cannot write {}", path.display()))?;
    Ok(out_model)
}

fn hf_dtype(dense_as: GgmlType) -> HfDtype {
    match dense_as {
        GgmlType::F16 => HfDtype::F16,
        _ => HfDtype::F32,
    }
}

/// An output (GGUF file or Hugging Face folder) that receives a transform's blocks one at
/// a time, with the embeddings, final norm and head of `source`: the derived model is
/// never whole in memory.
pub struct Streamed<'a> {
    writer: Writer,
    format: OutputFormat,
    source: &'a Loaded,
    path: std::path::PathBuf,
}

enum Writer {
    Gguf(GgufModelWriter),
    Hf(HfModelWriter),
}

impl<'a> Streamed<'a> {
    /// Start `path`; `outtype` has passed [`check`].
    pub fn create(path: &Path, source: &'a Loaded, outtype: OutTypeArg) -> Result<Self> {
        let format = format(outtype, source);
        let m = &source.model;
        let writer = if is_hf(path) {
            HfModelWriter::create(path, &m.config, &m.tok_embd, hf_dtype(format.dense_as()))
                .map(Writer::Hf)
        } else {
            GgufModelWriter::create(
                path,
                &m.config,
                &format.matrix(&m.tok_embd)?,
                format.dense_as(),
            )
            .map(Writer::Gguf)
        };
        Ok(Self {
            writer: writer.with_context(|| format!("cannot write {}", path.display()))?,
            format,
            source,
            path: path.to_path_buf(),
        })
    }

    pub fn put(&mut self, layer: Layer) -> leanlm::Result<()> {
        match &mut self.writer {
            // A Hugging Face folder holds f32 or f16 only: the writer encodes the weights.
            Writer::Hf(w) => w.put_layer(&layer),
            Writer::Gguf(w) => w.put_layer(&self.format.layer(&layer)?),
        }
    }

    /// Finish the output; returns its block and parameter counts.
    pub fn finish(self) -> Result<(usize, usize)> {
        let m = &self.source.model;
        let layers = match &self.writer {
            Writer::Hf(w) => w.layers(),
            Writer::Gguf(w) => w.layers(),
        };
        let params = match self.writer {
            Writer::Hf(w) => w.finish(
                &self.source.tokenizer,
                &m.out_norm,
                (!m.tied()).then_some(&m.output),
            ),
            Writer::Gguf(w) => {
                let output = match m.tied() {
                    true => None,
                    false => Some(self.format.matrix(&m.output)?),
                };
                w.finish(
                    self.source.metadata_to_carry()?,
                    &m.out_norm,
                    output.as_ref(),
                )
            }
        };
        let params = params.with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok((layers, params))
    }
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
