//! What a model costs to run: parameters, bytes, FLOPs per token, and this process's
//! memory and CPU time (read from /proc on Linux).

use serde::Serialize;

use crate::model::Model;

#[derive(Debug, Clone, Serialize)]
pub struct ModelCost {
    pub params: usize,
    /// Parameters of the block matrices that are not zero, plus everything else.
    pub params_nonzero: usize,
    /// Bytes the matrix kernels stream per decoded token (block matrices + LM head).
    pub weight_bytes_per_token: usize,
    /// 2 × multiply-accumulates per token at context `ctx`, counting every weight.
    pub flops_per_token_dense: f64,
    /// The same, counting only non-zero weights.
    pub flops_per_token_effective: f64,
    pub ctx: usize,
}

impl ModelCost {
    pub fn of(model: &Model, ctx: usize) -> Self {
        let zeros: usize = model
            .layers
            .iter()
            .flat_map(|l| l.matrices())
            .map(|(_, _, m)| m.to_f32().iter().filter(|v| **v == 0.0).count())
            .sum();
        let weight_bytes_per_token = model
            .layers
            .iter()
            .flat_map(|l| l.matrices())
            .map(|(_, _, m)| m.nbytes())
            .sum::<usize>()
            + model.output.nbytes();
        let dense = model.flops_per_token(ctx);
        Self {
            params: model.n_params(),
            params_nonzero: model.n_params() - zeros,
            weight_bytes_per_token,
            flops_per_token_dense: dense,
            flops_per_token_effective: dense - 2.0 * zeros as f64,
            ctx,
        }
    }

    /// Effective FLOPs per token when tokens run only `mean_blocks` of the model's blocks
    /// on average (early exit): the blocks' share scales, the LM head does not. The K/V
    /// projections that fill skipped blocks are counted as well.
    pub fn with_early_exit(&self, model: &Model, mean_blocks: f64) -> f64 {
        let n = model.layers.len().max(1) as f64;
        let head = 2.0 * (model.output.rows * model.output.cols) as f64;
        let blocks = self.flops_per_token_effective - head;
        let skipped = (n - mean_blocks).max(0.0);
        let kv_fill: f64 = model
            .layers
            .iter()
            .map(|l| 2.0 * ((l.wk.rows + l.wv.rows) * l.wk.cols) as f64)
            .sum::<f64>()
            / n;
        head + blocks * mean_blocks / n + kv_fill * skipped
    }
}

/// (resident, peak resident) bytes of this process, when /proc tells.
pub fn memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|v| v * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// CPU seconds (user + system) this process has used, when /proc tells.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux configuration that matters here.
    Some(ticks / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_readings_are_sane() {
        let (rss, peak) = memory().unwrap();
        assert!(rss > 0 && peak >= rss);
        let t0 = cpu_seconds().unwrap();
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds().unwrap() >= t0);
    }
}
