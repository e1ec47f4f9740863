use std::path::PathBuf;

use anyhow::{Context, Result};
use leanlm::model::save_gguf;
use leanlm::quant::GgmlType;
use leanlm::transform::quantize::{embedding_type, quantize_model};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArg,
    /// Output GGUF file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Target type of the block matrices.
    #[arg(long = "type", value_enum)]
    ty: TypeArg,
    /// Type of the token embedding and LM head [default: q8_0 for 4-bit types, else
    /// --type], like llama-quantize's --token-embedding-type / --output-tensor-type.
    #[arg(long = "token-embedding-type", value_enum)]
    embedding: Option<TypeArg>,
}

impl TypeArg {
    fn ggml(self) -> GgmlType {
        match self {
            TypeArg::Q8_0 => GgmlType::Q8_0,
            TypeArg::Q4_0 => GgmlType::Q4_0,
            TypeArg::Q4_1 => GgmlType::Q4_1,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TypeArg {
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_1")]
    Q4_1,
}

pub fn run(a: Args) -> Result<()> {
    let loaded = a.model.load()?;
    let target = a.ty.ggml();
    let embeddings = a
        .embedding
        .map_or_else(|| embedding_type(target), TypeArg::ggml);
    let q = quantize_model(&loaded.model, target, embeddings)?;
    save_gguf(&q, loaded.metadata_to_carry()?, &a.output, GgmlType::F32)
        .with_context(|| format!("writing {}", a.output.display()))?;
    let bytes = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {} ({target} blocks, {embeddings} embeddings, {:.1} MB)",
        a.output.display(),
        bytes as f64 / 1e6
    );
    Ok(())
}
