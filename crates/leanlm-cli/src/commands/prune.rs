//! `leanlm prune`: remove weights (magnitude, Wanda, SparseGPT; unstructured or N:M, with
//! optional OWL layer ratios) or whole heads, MLP channels and layers, calibrated block by
//! block, and write a GGUF that llama.cpp and leanlm load.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use leanlm::transform::prune::{
    self, Method, OwlConfig, Pattern, PruneConfig, PruneReport, SparseGptConfig, Structured,
};
use serde_json::json;

use super::output::{self, disk_bytes, OutTypeArg};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    leanlm prune -o wanda50.gguf --method wanda --sparsity 0.5 --calib data/wikitext-2/valid.txt\n  \
    leanlm prune -o sgpt24.gguf --method sparsegpt --pattern 2:4 --calib valid.txt --nsamples 32 --seqlen 512\n  \
    leanlm prune -o owl.gguf --method wanda --sparsity 0.5 --owl --calib valid.txt\n  \
    leanlm prune -o short.gguf --structured layers=4 --calib valid.txt\n\n\
    Embeddings and the LM head are never pruned. Check the result with `leanlm info OUT` (sparsity per\n\
    matrix) and `leanlm eval OUT --ppl wiki.test.raw`.")]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArg,
    /// Output: a .gguf file, or any other path for a Hugging Face folder (config.json,
    /// model.safetensors, tokenizer.json). Written under a temporary name, renamed at the end.
    /// An existing path is refused, unless it is an earlier leanlm output of the same kind
    /// and --force is given.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Replace an existing output that leanlm wrote (a GGUF file, or a folder with
    /// leanlm's .leanlm-output marker); nothing else is ever replaced.
    #[arg(long)]
    force: bool,
    /// Importance criterion for weight pruning.
    #[arg(long, value_enum, default_value = "wanda")]
    method: MethodArg,
    /// Fraction of each matrix's weights to remove, in [0, 1).
    #[arg(long, conflicts_with_all = ["pattern", "structured"])]
    sparsity: Option<f32>,
    /// N:M pattern: keep N of every M consecutive weights of a row (e.g. 2:4).
    #[arg(long, conflicts_with = "structured")]
    pattern: Option<String>,
    /// Outlier-weighted layer sparsity (OWL) around --sparsity.
    #[arg(long)]
    owl: bool,
    /// OWL's outlier threshold M (multiple of the mean score).
    #[arg(long, default_value_t = 5.0, requires = "owl")]
    owl_m: f32,
    /// OWL's sparsity spread λ around the target.
    #[arg(long, default_value_t = 0.08, requires = "owl")]
    owl_lambda: f32,
    /// Remove structures instead of weights: heads=K (query heads per layer, evenly over
    /// key/value groups), kv-heads=G, ffn=FRACTION (MLP channels), layers=N (ShortGPT).
    #[arg(long)]
    structured: Option<String>,
    /// Calibration text (the papers use WikiText-2 or C4 training text).
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Calibration windows.
    #[arg(long, default_value_t = 128)]
    nsamples: usize,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = 2048)]
    seqlen: usize,
    /// Seed of the window positions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// SparseGPT: columns per block.
    #[arg(long, default_value_t = 128)]
    blocksize: usize,
    /// SparseGPT: dampening, fraction of the mean Hessian diagonal.
    #[arg(long, default_value_t = 0.01)]
    percdamp: f64,
    /// Storage of the written matrices (f16 keeps pruned zeros exact at half of f32's size;
    /// `same` re-encodes in the source's type, where 4-bit types with an offset lose zeros).
    #[arg(long, value_enum, default_value = "f16")]
    outtype: OutTypeArg,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Magnitude,
    Wanda,
    Sparsegpt,
}

pub fn run(a: Args) -> Result<()> {
    // Validate everything cheap before loading or calibrating.
    let structured = a.structured.as_deref().map(Structured::parse).transpose()?;
    let pattern = match (&a.pattern, a.sparsity) {
        (Some(p), _) => Pattern::parse_nm(p)?,
        (None, Some(s)) => Pattern::unstructured(s)?,
        (None, None) if structured.is_none() => {
            anyhow::bail!("say how much to prune: --sparsity 0.5, --pattern 2:4 or --structured …")
        }
        (None, None) => Pattern::Unstructured(0.0),
    };
    let method = match a.method {
        MethodArg::Magnitude => Method::Magnitude,
        MethodArg::Wanda => Method::Wanda,
        MethodArg::Sparsegpt => Method::SparseGpt,
    };
    let needs_calib = structured.is_some() || method.needs_calibration() || a.owl;
    if needs_calib && a.calib.is_none() {
        anyhow::bail!(
            "this prune needs calibration text: add --calib FILE (e.g. data/wikitext-2/valid.txt)"
        );
    }
    output::check(&a.output, a.outtype)?;
    let inputs = [a.model.path()];
    let inputs: Vec<&Path> = inputs
        .iter()
        .map(|p| p.as_path())
        .chain(a.calib.as_deref())
        .collect();
    output::prepare(&a.output, &inputs, a.force)?;

    let loaded = a.model.load()?;
    let model = &loaded.model;
    if let Some(s) = &structured {
        s.check(model)?;
    }
    let calib = match (&a.calib, needs_calib) {
        (Some(path), true) => Some(super::calibration(
            &loaded,
            path,
            (a.nsamples, a.seqlen, a.seed),
            "--seqlen",
        )?),
        _ => None,
    };

    let bar = super::bar("prune");
    let mut progress = |p: prune::Progress| {
        bar.set_length(p.layers as u64);
        bar.set_position(p.layer as u64);
        bar.set_message(format!("{} blk.{}", p.phase, p.layer));
    };
    let mut run = |sink: &mut prune::BlockSink| match structured {
        Some(s) => prune::prune_structured(
            model,
            calib.as_ref().expect("checked above"),
            s,
            &mut progress,
            sink,
        ),
        None => {
            let cfg = PruneConfig {
                method,
                pattern,
                owl: a.owl.then_some(OwlConfig {
                    m: a.owl_m,
                    lambda: a.owl_lambda,
                }),
                sparsegpt: SparseGptConfig {
                    blocksize: a.blocksize,
                    percdamp: a.percdamp,
                },
            };
            prune::prune(model, calib.as_ref(), &cfg, &mut progress, sink)
        }
    };
    // Ctrl-C: the output path was never touched; remove the parts written so far.
    let out_path = a.output.clone();
    ctrlc::set_handler(move || {
        leanlm::model::spill::remove_leftovers(&out_path);
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")?;
    // Each pruned block goes to the output as it is finished, so the pruned model is
    // never whole in memory.
    let mut out = output::Streamed::create(&a.output, &loaded, a.outtype)?;
    let report = run(&mut |layer| out.put(layer))?;
    let (layers, params) = out.finish()?;
    bar.finish_and_clear();

    let peak = leanlm::measure::cost::memory().map(|(_, peak)| peak);
    print_summary(&a, &report, (layers, params), peak)?;
    Ok(())
}

/// `written`: blocks and parameters of the output.
fn print_summary(
    a: &Args,
    report: &PruneReport,
    written: (usize, usize),
    peak_rss: Option<u64>,
) -> Result<()> {
    let (layers, params) = written;
    let bytes = disk_bytes(&a.output);
    if a.json {
        let v = json!({
            "output": a.output,
            "bytes": bytes,
            "layers": layers,
            "params": params,
            "sparsity": report.sparsity(),
            "peak_rss_bytes": peak_rss,
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for l in &report.layers {
        let (z, t) = l
            .matrices
            .iter()
            .fold((0, 0), |(z, t), m| (z + m.zeros, t + m.total));
        let mut line = format!("blk.{:<3} {:6.2}s", l.layer, l.seconds);
        if t > 0 {
            line += &format!("  sparsity {:5.1}%", 100.0 * z as f64 / t as f64);
        }
        if let (Some(h), Some(f)) = (l.heads_kept, l.ffn_kept) {
            line += &format!("  heads {h}  ffn {f}");
        }
        if let Some(bi) = l.influence {
            line += &format!("  block influence {bi:.4}");
        }
        eprintln!("{line}");
    }
    if !report.removed_layers.is_empty() {
        eprintln!("removed blocks {:?}", report.removed_layers);
    }
    eprintln!(
        "wrote {} ({:.1} MB, {} blocks, {:.1}M params, {:.1}% of block weights zero) in {:.1} s{}",
        a.output.display(),
        bytes as f64 / 1e6,
        layers,
        params as f64 / 1e6,
        100.0 * report.sparsity(),
        report.seconds,
        peak_rss.map_or(String::new(), |p| format!(
            ", peak RSS {:.0} MB",
            p as f64 / 1e6
        )),
    );
    Ok(())
}
