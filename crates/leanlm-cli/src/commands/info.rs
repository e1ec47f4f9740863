use anyhow::Result;
use leanlm::model::Source;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArg,
    /// Context length at which FLOPs per token are counted (attention grows with it).
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    ctx: usize,
    /// List every matrix with its type, shape and sparsity.
    #[arg(long)]
    tensors: bool,
    /// Which kernel runs each matrix type for one token, a few and a prompt, and the
    /// matrices that run as f32 for want of a kernel.
    #[arg(long)]
    kernels: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

struct MatrixStat {
    name: String,
    dtype: &'static str,
    rows: usize,
    cols: usize,
    bytes: usize,
    zeros: usize,
    nm: Option<(usize, usize)>,
}

/// The tightest N:M pattern (M in 4, 8) whose every group of M holds at most N non-zeros.
fn nm_pattern(w: &[f32]) -> Option<(usize, usize)> {
    [(2, 4), (4, 8)].into_iter().find(|&(n, m)| {
        w.len().is_multiple_of(m)
            && w.chunks_exact(m)
                .all(|g| g.iter().filter(|v| **v != 0.0).count() <= n)
    })
}

pub fn run(a: Args) -> Result<()> {
    // Non-finite weights are reported here rather than refused.
    let loaded = a.model.load_allowing_non_finite()?;
    let m = &loaded.model;
    let non_finite = leanlm::model::finite::non_finite_tensors(m);
    let non_finite_total: usize = non_finite.iter().map(|(_, n)| n).sum();
    let c = &m.config;
    let mut stats = Vec::new();
    for (i, l) in m.layers.iter().enumerate() {
        for (name, _, mat) in l.matrices() {
            let w = mat.to_f32();
            stats.push(MatrixStat {
                name: format!("blk.{i}.{name}"),
                dtype: mat.type_name(),
                rows: mat.rows,
                cols: mat.cols,
                bytes: mat.nbytes(),
                zeros: w.iter().filter(|v| **v == 0.0).count(),
                nm: nm_pattern(&w),
            });
        }
    }
    let linear: usize = stats.iter().map(|s| s.rows * s.cols).sum();
    let zeros: usize = stats.iter().map(|s| s.zeros).sum();
    let n_params = m.n_params();
    let format = match &loaded.source {
        Source::Gguf(f) => format!("GGUF v{}", f.version),
        Source::HfDir(_) => "Hugging Face safetensors".into(),
    };
    let mut types: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for s in &stats {
        let e = types.entry(s.dtype).or_default();
        e.0 += 1;
        e.1 += s.bytes;
    }
    // One plan per storage type (the output head included): the kernels depend on nothing else.
    let mut plans: std::collections::BTreeMap<&str, (usize, leanlm::quant::KernelPlan)> =
        Default::default();
    let all = m
        .layers
        .iter()
        .flat_map(|l| l.matrices().into_iter().map(|(_, _, x)| x));
    for mat in all.chain([&m.output]) {
        plans.entry(mat.type_name()).or_insert((0, mat.plan())).0 += 1;
    }
    let fallbacks = loaded.f32_fallbacks();
    let flops = m.flops_per_token(a.ctx);
    let sparse_flops = flops - 2.0 * zeros as f64;
    if a.json {
        let per_matrix: Vec<_> = stats
            .iter()
            .map(|s| {
                json!({"name": s.name, "type": s.dtype, "shape": [s.rows, s.cols], "bytes": s.bytes,
                       "sparsity": s.zeros as f64 / (s.rows * s.cols) as f64,
                       "nm_pattern": s.nm.map(|(n, m)| format!("{n}:{m}"))})
            })
            .collect();
        let out = json!({
            "path": a.model.path(), "format": format, "config": c,
            "layers": m.layers.iter().map(|l| json!({"heads": l.n_heads(c.head_dim), "kv_heads": l.n_kv_heads(c.head_dim), "ffn": l.ffn_dim(), "sliding_window": l.sliding})).collect::<Vec<_>>(),
            "params": n_params, "linear_params": linear, "zero_params": zeros,
            "file_bytes": loaded.file_bytes(), "tied_embeddings": m.tied(),
            "tensor_types": types.iter().map(|(k, v)| json!({"type": k, "matrices": v.0, "bytes": v.1})).collect::<Vec<_>>(),
            "ctx": a.ctx, "flops_per_token": flops, "flops_per_token_effective": sparse_flops,
            "matrices": per_matrix,
            "kernels": plans.iter().map(|(t, (n, p))| json!({"type": t, "matrices": n, "plan": p})).collect::<Vec<_>>(),
            "f32_fallback": fallbacks.iter().map(|(t, ty)| json!({"tensor": t, "stored_as": ty.name()})).collect::<Vec<_>>(),
            "non_finite_values": non_finite_total,
            "non_finite_tensors": non_finite.iter().map(|(t, n)| json!({"tensor": t, "count": n})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("model        {}", a.model.path().display());
    println!(
        "format       {format}, {:.1} MB on disk",
        loaded.file_bytes() as f64 / 1e6
    );
    println!(
        "architecture {} ({} layers, d_model {}, {} heads / {} kv heads of {}, ffn {})",
        c.arch.name(),
        c.n_layers,
        c.d_model,
        c.n_heads,
        c.n_kv_heads,
        c.head_dim,
        c.ffn_dim
    );
    println!(
        "vocab        {} (tokenizer {}), tied embeddings: {}",
        m.vocab_size(),
        loaded.tokenizer.vocab_size(),
        m.tied()
    );
    println!(
        "context      {} positions, RoPE θ {} on {} dims ({:?})",
        c.context_len, c.rope_theta, c.rope_dim, c.rope_style
    );
    if let Some(w) = c.sliding_window {
        let global: Vec<String> = m
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.sliding)
            .map(|(i, _)| i.to_string())
            .collect();
        println!(
            "attention    sliding window of {w} keys (RoPE θ {}) except global blocks {}",
            c.rope_theta_local,
            global.join(", ")
        );
    }
    println!(
        "parameters   {:.2} M ({:.2} M in block matrices, {:.2}% of those zero)",
        n_params as f64 / 1e6,
        linear as f64 / 1e6,
        100.0 * zeros as f64 / linear.max(1) as f64
    );
    let t: Vec<String> = types
        .iter()
        .map(|(k, v)| format!("{k} ×{} ({:.1} MB)", v.0, v.1 as f64 / 1e6))
        .collect();
    println!("block types  {}", t.join(", "));
    println!(
        "embeddings   {} ({:.1} MB)",
        m.tok_embd.type_name(),
        m.tok_embd.nbytes() as f64 / 1e6
    );
    println!(
        "FLOPs/token  {:.1} M at ctx {} ({:.1} M counting only non-zero weights)",
        flops / 1e6,
        a.ctx,
        sparse_flops / 1e6
    );
    match fallbacks.len() {
        0 => println!("f32 fallback none (every matrix runs as stored)"),
        n => println!(
            "f32 fallback {n} matrices decoded to f32 at load, no kernel for their type{}",
            match a.kernels {
                true => String::new(),
                false => " (--kernels lists them)".into(),
            }
        ),
    }
    if non_finite.is_empty() {
        println!("non-finite   none (no NaN or infinite weights)");
    } else {
        println!(
            "non-finite   {non_finite_total} NaN/infinite values in {} tensors: {} (other commands refuse this model without --allow-non-finite)",
            non_finite.len(),
            non_finite
                .iter()
                .map(|(t, n)| format!("{t} ({n})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let uneven = m
        .layers
        .iter()
        .any(|l| l.n_heads(c.head_dim) != c.n_heads || l.ffn_dim() != c.ffn_dim);
    if uneven {
        for (i, l) in m.layers.iter().enumerate() {
            println!(
                "  blk.{i:<3} heads {:>3}, kv heads {:>3}, ffn {:>6}",
                l.n_heads(c.head_dim),
                l.n_kv_heads(c.head_dim),
                l.ffn_dim()
            );
        }
    }
    if a.kernels {
        println!(
            "\nkernels on this CPU ({}):",
            leanlm::quant::dot::simd_level()
        );
        for (t, (n, p)) in &plans {
            println!("  {t} ×{n}");
            println!("    1 token    {}", p.decode);
            println!("    2-31       {}", p.batch);
            println!("    32+        {}", p.prompt);
        }
        for (name, t) in &fallbacks {
            println!("  as f32: {name} (stored as {t})");
        }
    }
    if a.tensors || zeros as f64 > 0.01 * linear as f64 {
        println!(
            "\n{:<22} {:>6} {:>13} {:>10} {:>9} {:>5}",
            "matrix", "type", "shape", "bytes", "sparsity", "N:M"
        );
        for s in &stats {
            println!(
                "{:<22} {:>6} {:>13} {:>10} {:>8.2}% {:>5}",
                s.name,
                s.dtype,
                format!("{}×{}", s.rows, s.cols),
                s.bytes,
                100.0 * s.zeros as f64 / (s.rows * s.cols) as f64,
                s.nm.map(|(n, m)| format!("{n}:{m}")).unwrap_or_default()
            );
        }
    }
    Ok(())
}
