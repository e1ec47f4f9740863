//! `leanlm quantize`: re-encode a model's matrices (like llama-quantize), optionally
//! weighting rounding errors by an importance matrix gathered from calibration text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use leanlm::calibrate::Importance;
use leanlm::model::destination::{self, OutputKind};
use leanlm::model::gguf::Value;
use leanlm::model::save_gguf;
use leanlm::quant::GgmlType;
use leanlm::transform::mix::{self, Mix};
use leanlm::transform::quantize::{
    embedding_type, quantize_model, quantize_with_plan, SparseChoice,
};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    leanlm quantize model-f16.gguf -o model-q4_k_m.gguf --type Q4_K_M\n  \
    leanlm quantize model-f16.gguf -o q4k.gguf --type q4_k --imatrix data/wikitext-2/valid.txt\n  \
    leanlm quantize -o q8.gguf --type q8_0 --allow-requantize\n  \
    leanlm quantize wanda24.gguf -o wanda24.sparse.gguf --type q8_0 --sparse\n\n\
    K-quants need rows of whole 256-value super-blocks: narrower matrices fall back to a\n\
    32-value block type: q5_1 for q5_k and q8_0 for q6_k (as llama-quantize), q4_1 for q4_k\n\
    (llama-quantize: q5_0), q4_0 for q3_k and q2_k (llama-quantize: iq4_nl).")]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArg,
    /// Output GGUF file. An existing file is refused unless it is a GGUF and --force is given.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Replace an existing GGUF output (never any other kind of file).
    #[arg(long)]
    force: bool,
    /// Target type, as llama-quantize names it (any case): a mix that picks each tensor's
    /// type by llama-quantize's rules (Q4_K_M, Q5_K_M, Q3_K_M, Q2_K, …), or one block type
    /// for every block matrix (Q8_0, Q6_K, Q5_K, Q5_1, Q5_0, Q4_K, Q4_1, Q4_0, Q3_K).
    #[arg(long = "type", value_parser = parse_type)]
    ty: TypeChoice,
    /// Quantize a model whose matrices are already quantized (its rounding errors add up),
    /// as llama-quantize's --allow-requantize.
    #[arg(long)]
    allow_requantize: bool,
    /// Type of the token embedding and LM head [default: q8_0 for 4-bit types, else
    /// --type], like llama-quantize's --token-embedding-type / --output-tensor-type.
    #[arg(long = "token-embedding-type", value_parser = parse_single)]
    embedding: Option<GgmlType>,
    /// Calibration text for an importance matrix: each weight's rounding error is weighted
    /// by the mean square of the activation it multiplies (llama.cpp's imatrix idea).
    #[arg(long, value_name = "TEXT_FILE")]
    imatrix: Option<PathBuf>,
    /// Calibration windows for --imatrix.
    #[arg(long, default_value_t = 32)]
    imatrix_samples: usize,
    /// Tokens per calibration window for --imatrix.
    #[arg(long, default_value_t = 512)]
    imatrix_seqlen: usize,
    /// Seed of the calibration windows' positions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Store pruned block matrices without their zeros, 8-bit values (needs --type q8_0):
    /// `auto` (the flag alone) uses the 2:4 layout where every group of 4 columns has at
    /// most 2 non-zeros; `bitmap` also stores other pruned matrices as a bitmap of
    /// non-zeros where that reads fewer bytes (on AVX-512 CPUs like the one measured in
    /// docs/benchmarks.md it decodes slower than dense). llama.cpp cannot read either
    /// layout: keep a dense copy for it.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "auto")]
    sparse: Option<SparseArg>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SparseArg {
    Auto,
    Bitmap,
}

/// The block types `--type` takes, by llama-quantize's names (`Q2_K` is its Q2_K mix).
const TYPE_NAMES: [(&str, GgmlType); 9] = [
    ("Q8_0", GgmlType::Q8_0),
    ("Q6_K", GgmlType::Q6K),
    ("Q5_K", GgmlType::Q5K),
    ("Q5_1", GgmlType::Q5_1),
    ("Q5_0", GgmlType::Q5_0),
    ("Q4_K", GgmlType::Q4K),
    ("Q4_1", GgmlType::Q4_1),
    ("Q4_0", GgmlType::Q4_0),
    ("Q3_K", GgmlType::Q3K),
];

/// What `--type` names: one block type, or one of llama-quantize's per-tensor mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TypeChoice {
    Single(GgmlType),
    Mix(Mix),
}

impl TypeChoice {
    /// llama.cpp's `llama_ftype` for `general.file_type` (a single K type is written as
    /// the mix that is mostly of it, as llama-quantize's `--pure` does).
    fn file_type(self) -> u32 {
        match self {
            TypeChoice::Mix(m) => m.file_type(),
            TypeChoice::Single(t) => match t {
                GgmlType::Q4_0 => 2,
                GgmlType::Q4_1 => 3,
                GgmlType::Q8_0 => 7,
                GgmlType::Q5_0 => 8,
                GgmlType::Q5_1 => 9,
                GgmlType::Q2K => 10,
                GgmlType::Q3K => 12,
                GgmlType::Q4K => 15,
                GgmlType::Q5K => 17,
                GgmlType::Q6K => 18,
                _ => 0,
            },
        }
    }

    fn name(self) -> &'static str {
        match self {
            TypeChoice::Mix(m) => m.name(),
            TypeChoice::Single(t) => t.name(),
        }
    }
}

/// A `--type` value, case-insensitive, as llama-quantize spells it.
fn parse_type(s: &str) -> std::result::Result<TypeChoice, String> {
    let name = s.to_ascii_uppercase();
    if let Some(m) = Mix::parse(&name) {
        return Ok(TypeChoice::Mix(m));
    }
    match TYPE_NAMES.iter().find(|(n, _)| *n == name) {
        Some((_, t)) => Ok(TypeChoice::Single(*t)),
        None => Err(format!(
            "unknown type {s:?} (one of {}, or a mix: Q2_K, Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, \
             Q4_K_M, Q5_K_S, Q5_K_M)",
            TYPE_NAMES.map(|(n, _)| n).join(", ")
        )),
    }
}

/// A single type for `--token-embedding-type`.
fn parse_single(s: &str) -> std::result::Result<GgmlType, String> {
    match parse_type(s)? {
        TypeChoice::Single(t) => Ok(t),
        TypeChoice::Mix(m) => Err(format!("{} is a mix; name one block type", m.name())),
    }
}

pub fn run(a: Args) -> Result<()> {
    let started = std::time::Instant::now();
    let model_path = a.model.path();
    let inputs: Vec<&Path> = std::iter::once(model_path.as_path())
        .chain(a.imatrix.as_deref())
        .collect();
    // Whatever its name, the output is one GGUF file.
    destination::prepare(&a.output, OutputKind::Gguf, &inputs, a.force)?;
    let loaded = a.model.load()?;
    let model = &loaded.model;
    let sparse = match a.sparse {
        None => SparseChoice::Off,
        Some(SparseArg::Auto) => SparseChoice::Auto,
        Some(SparseArg::Bitmap) => SparseChoice::Bitmap,
    };
    if sparse != SparseChoice::Off && a.ty != TypeChoice::Single(GgmlType::Q8_0) {
        anyhow::bail!("--sparse stores 8-bit values: use it with --type q8_0");
    }
    let quantized: Vec<&str> = model
        .layers
        .iter()
        .flat_map(|l| l.matrices())
        .map(|(_, _, m)| m.type_name())
        .filter(|t| !matches!(*t, "F32" | "F16" | "BF16"))
        .collect();
    if !quantized.is_empty() && !a.allow_requantize {
        let mut kinds: Vec<&str> = quantized.clone();
        kinds.sort_unstable();
        kinds.dedup();
        anyhow::bail!(
            "{} holds {} block matrices that are already quantized ({}): quantizing them \
             again adds a second rounding error. Start from an f16/f32 model, or pass \
             --allow-requantize (as for llama-quantize).",
            model_path.display(),
            quantized.len(),
            kinds.join(", ")
        );
    }
    let importance = match &a.imatrix {
        None => None,
        Some(path) => {
            let calib = super::calibration(
                &loaded,
                path,
                (a.imatrix_samples, a.imatrix_seqlen, a.seed),
                "--imatrix-seqlen",
            )?;
            let bar = super::bar("imatrix");
            bar.set_length(model.layers.len() as u64);
            let imp = Importance::collect(model, &calib, &mut |l| bar.set_position(l as u64 + 1))?;
            bar.finish_and_clear();
            Some(imp)
        }
    };
    let q = match a.ty {
        TypeChoice::Mix(mix) => {
            let mut shapes = mix::Shapes::of(model);
            if let leanlm::model::Source::Gguf(f) = &loaded.source {
                shapes = shapes.with_file_order(f.tensors.iter().map(|t| t.name.as_str()));
            }
            let mut plan = mix::plan(mix, &shapes);
            if let Some(t) = a.embedding {
                (plan.tok_embd, plan.output) = (t, t);
            }
            quantize_with_plan(model, &plan, importance.as_ref())?
        }
        TypeChoice::Single(target) => {
            let embeddings = a.embedding.unwrap_or_else(|| embedding_type(target));
            quantize_model(model, target, embeddings, importance.as_ref(), sparse)?
        }
    };
    let mut metadata = loaded.metadata_to_carry()?;
    metadata.push(("general.file_type".into(), Value::U32(a.ty.file_type())));
    save_gguf(&q, metadata, &a.output, GgmlType::F32)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    let bytes = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);

    // Matrices per type actually written (K-quants fall back on narrow rows).
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for layer in &q.layers {
        for (_, _, m) in layer.matrices() {
            *types.entry(m.type_name().to_string()).or_default() += 1;
        }
    }
    let summary: Vec<String> = types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    if a.json {
        let j = serde_json::json!({
            "output": a.output, "type": a.ty.name(), "embeddings": q.tok_embd.type_name(), "sparse": format!("{sparse:?}").to_lowercase(),
            "block_matrices": types, "bytes": bytes,
            "imatrix": a.imatrix.as_ref().map(|p| serde_json::json!({
                "text": p, "tokens": importance.as_ref().map_or(0, |i| i.tokens),
            })),
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    }
    eprintln!(
        "wrote {} (block matrices: {}; {} embeddings{}; {:.1} MB) in {:.1} s",
        a.output.display(),
        summary.join(", "),
        q.tok_embd.type_name(),
        if importance.is_some() {
            "; importance-weighted"
        } else {
            ""
        },
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
