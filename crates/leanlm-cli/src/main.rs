//! `leanlm`: one binary, one verb per job, shaped like llama.cpp's tools.

mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand};
use leanlm::quant::activation::Precision;

#[derive(Parser)]
#[command(
    name = "leanlm",
    version,
    about = "Make LLMs cheaper to run, and measure what it costs",
    long_about = "leanlm loads a transformer LLM (GGUF file, or a Hugging Face folder with config.json + \
                  *.safetensors + tokenizer.json), runs it with its own kernels, and reports quality and cost.\n\n\
                  Start with `leanlm info MODEL`, then `leanlm generate MODEL -p \"…\"`."
)]
struct Cli {
    /// Worker threads for matrix kernels (default: all cores).
    #[arg(short = 't', long, global = true)]
    threads: Option<usize>,
    /// Bits the quantized kernels round each activation to: 8 (llama.cpp's choice,
    /// fastest) or 16 (two 8-bit halves: decode 6–26% slower, prompts about half as
    /// fast; greedy tokens match the same weights in f32, where 8 bits can flip near-ties).
    #[arg(long, global = true, value_enum, default_value = "8")]
    activations: ActivationBits,
    /// Load models whose weights hold NaN or infinity (refused by default: such a model
    /// computes NaN everywhere; `leanlm info` lists the tensors concerned).
    #[arg(long, global = true)]
    allow_non_finite: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ActivationBits {
    #[value(name = "8")]
    Eight,
    #[value(name = "16")]
    Sixteen,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's architecture, tensors, sizes and FLOPs per token.
    Info(commands::info::Args),
    /// Turn text into token ids (like llama-tokenize).
    Tokenize(commands::tokenize::Args),
    /// Generate text from a prompt (greedy unless --temp is set).
    Generate(commands::generate::Args),
    /// Measure quality: perplexity, KL divergence to a base model, HellaSwag / multiple
    /// choice, HumanEval pass@1 (code run in a sandbox).
    Eval(Box<commands::eval::Args>),
    /// Re-encode the matrices as llama-quantize's types and mixes (Q8_0 … Q2_K, Q4_K_M,
    /// Q5_K_M, …), optionally weighted by an importance matrix.
    Quantize(commands::quantize::Args),
    /// Prune weights (magnitude, Wanda, SparseGPT; unstructured, N:M, OWL) or heads,
    /// MLP channels and layers, calibrated block by block.
    Prune(commands::prune::Args),
    /// Measure prompt-processing and decode speed (like llama-bench).
    Bench(commands::bench::Args),
    /// Train a student (pruned model or teacher blocks) on a frozen teacher's
    /// distributions: knowledge distillation.
    Distill(Box<commands::distill::Args>),
    /// Run a recipe (prune → distill → quantize → decode), measure every stage the same
    /// way and write report.md / report.html.
    Run(commands::run::Args),
    /// Check a recipe file without running it.
    Recipe(commands::recipe::Args),
    /// Print the tables of finished runs side by side.
    Compare(commands::compare::Args),
    /// Serve the model over HTTP with OpenAI's API (chat and text completions, streaming),
    /// several requests decoded together (like llama-server).
    Serve(commands::serve::Args),
    /// Chat with the model in the terminal (like llama-cli -cnv).
    Chat(commands::chat::Args),
}

fn main() {
    // A reader that closes early (`leanlm compare … | head`) ends us quietly, as it does
    // llama.cpp's tools, instead of making every later print fail.
    // SAFETY: setting a signal's disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // The forward pass allocates its per-layer buffers (up to a few MB each) afresh; glibc
    // would map and unmap each one, and zeroing the new pages cost ~8% of a prompt. Keep
    // blocks up to 32 MB (glibc's ceiling) in the heap and the freed memory with it.
    // SAFETY: allocator tuning before any thread starts; both calls only set parameters.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
    let cli = Cli::parse_from(commands::long_flags(std::env::args_os()));
    if let Err(e) = run(cli) {
        // One line, the whole chain of causes: what failed and why.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(t) = cli.threads {
        check_threads(t)?;
        pool = pool.num_threads(t);
    }
    commands::set_allow_non_finite(cli.allow_non_finite);
    Precision::set_process_default(match cli.activations {
        ActivationBits::Eight => Precision::Int8,
        ActivationBits::Sixteen => Precision::Int16,
    });
    // Run the whole command on a pool thread: parallel kernels then split work among the
    // workers with the caller taking part, instead of a foreign thread handing each
    // matrix product over and sleeping until it is done.
    pool.build()?.install(|| dispatch(cli.command))
}

fn check_threads(t: usize) -> Result<()> {
    // More worker threads than cores only adds switching, and each costs a stack: beyond
    // 4 per core (at most 1024) a count is a typo, not a choice.
    let max = leanlm::recipe::max_threads();
    if t == 0 || t > max {
        anyhow::bail!(
            "-t {t}: the thread count must be between 1 and {max} (4 per core of this machine, at most 1024)"
        );
    }
    Ok(())
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Info(a) => commands::info::run(a),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Eval(a) => commands::eval::run(*a),
        Command::Quantize(a) => commands::quantize::run(a),
        Command::Prune(a) => commands::prune::run(a),
        Command::Distill(a) => commands::distill::run(*a),
        Command::Run(a) => commands::run::run(a),
        Command::Recipe(a) => commands::recipe::run(a),
        Command::Compare(a) => commands::compare::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Chat(a) => commands::chat::run(a),
    }
}
