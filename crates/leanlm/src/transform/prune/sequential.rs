//! Unstructured and N:M pruning of every block, one block at a time (the Wanda and
//! SparseGPT procedure): gather the block's input statistics from calibration activations,
//! prune its seven matrices, recompute its outputs with the pruned weights, and hand those
//! to the next block. Embeddings and the LM head stay dense, as in the papers.

use std::time::Instant;

use super::mask::{self, magnitude_scores, wanda_scores, Pattern, Scope};
use super::owl::{self, OwlConfig};
use super::sparsegpt::{self, InverseHessian, SparseGptConfig};
use super::{BlockSink, LayerReport, MatrixReport, Progress, PruneReport};
use crate::calibrate::{Calibration, Sweep};
use crate::error::{Error, Result};
use crate::model::{Layer, LinearSite, Model};
use crate::quant::Matrix;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Magnitude,
    Wanda,
    SparseGpt,
}

impl Method {
    pub fn needs_calibration(self) -> bool {
        self != Method::Magnitude
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PruneConfig {
    pub method: Method,
    pub pattern: Pattern,
    /// Non-uniform layer sparsity (unstructured patterns only).
    pub owl: Option<OwlConfig>,
    pub sparsegpt: SparseGptConfig,
}

/// Prune every block of `model` (decoded to f32 one block at a time), handing each
/// finished block to `sink` in order.
pub fn prune(
    model: &Model,
    calib: Option<&Calibration>,
    cfg: &PruneConfig,
    progress: &mut dyn FnMut(Progress),
    sink: &mut BlockSink,
) -> Result<PruneReport> {
    let start = Instant::now();
    let n = model.layers.len();
    if cfg.owl.is_some() && !matches!(cfg.pattern, Pattern::Unstructured(_)) {
        return Err(Error::InvalidInput(
            "OWL sets per-layer sparsities; it does not apply to an N:M pattern".into(),
        ));
    }
    let calib = match (cfg.method.needs_calibration() || cfg.owl.is_some(), calib) {
        (true, None) => {
            return Err(Error::InvalidInput(format!(
                "{:?} needs calibration data",
                cfg.method
            )))
        }
        (true, Some(c)) => Some(c),
        (false, _) => None,
    };

    let patterns: Vec<Pattern> = match cfg.owl {
        Some(owl_cfg) => owl_patterns(model, calib.expect("checked"), cfg, owl_cfg, progress)?,
        None => vec![cfg.pattern; n],
    };

    let mut sweep = calib.map(|c| Sweep::new(model, c));
    let mut report = PruneReport::default();
    for (l, &pattern) in patterns.iter().enumerate() {
        let t0 = Instant::now();
        progress(Progress {
            phase: "prune",
            layer: l,
            layers: n,
        });
        let mut layer = model.layers[l].dequantized();
        let stats = match &sweep {
            Some(s) => Some(s.stats(l, &layer, cfg.method == Method::SparseGpt)?),
            None => None,
        };
        // SparseGPT: one inverse Hessian per activation site, shared by its matrices.
        let mut hinv: [Option<InverseHessian>; 4] = Default::default();
        if let (Method::SparseGpt, Some(st)) = (cfg.method, &stats) {
            for (k, site) in LinearSite::ALL.into_iter().enumerate() {
                let s = st.site(site);
                let gram = s.gram.as_deref().expect("gram requested");
                hinv[k] = Some(
                    InverseHessian::new(gram, s.cols, cfg.sparsegpt.percdamp)
                        .map_err(|e| Error::InvalidInput(format!("blk.{l} {site:?} input: {e}")))?,
                );
            }
        }
        let mut matrices = Vec::new();
        for (name, site, m) in layer.matrices_mut() {
            let mut w = m.to_f32();
            match cfg.method {
                Method::Magnitude => {
                    let mk = mask::select(&magnitude_scores(&w), m.cols, pattern, Scope::Matrix)?;
                    mask::apply(&mut w, &mk);
                }
                Method::Wanda => {
                    let norms = stats.as_ref().expect("calibrated").site(site).col_norms();
                    let mk = mask::select(&wanda_scores(&w, &norms), m.cols, pattern, Scope::Row)?;
                    mask::apply(&mut w, &mk);
                }
                Method::SparseGpt => {
                    let k = LinearSite::ALL
                        .iter()
                        .position(|s| *s == site)
                        .expect("a site");
                    let h = hinv[k].as_ref().expect("factored above");
                    sparsegpt::prune_with(&mut w, h, pattern, cfg.sparsegpt.blocksize)
                        .map_err(|e| Error::InvalidInput(format!("blk.{l}.{name}: {e}")))?;
                }
            }
            let zeros = w.iter().filter(|&&v| v == 0.0).count();
            matrices.push(MatrixReport {
                name: format!("blk.{l}.{name}"),
                zeros,
                total: w.len(),
            });
            *m = Matrix::from_f32(m.rows, m.cols, w)?;
        }
        if let Some(s) = sweep.as_mut() {
            s.advance(l, &layer)?;
        }
        report.layers.push(LayerReport {
            layer: l,
            target_sparsity: pattern.sparsity(),
            matrices,
            seconds: t0.elapsed().as_secs_f64(),
            ..LayerReport::default()
        });
        sink(layer)?;
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.calibration_tokens = calib.map_or(0, |c| c.n_tokens());
    Ok(report)
}

/// OWL's first pass: a dense layer-by-layer sweep measuring each layer's outlier ratio.
fn owl_patterns(
    model: &Model,
    calib: &Calibration,
    cfg: &PruneConfig,
    owl_cfg: OwlConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Pattern>> {
    let n = model.layers.len();
    let mut sweep = Sweep::new(model, calib);
    let mut ratios = Vec::with_capacity(n);
    for l in 0..n {
        progress(Progress {
            phase: "owl outliers",
            layer: l,
            layers: n,
        });
        let layer: Layer = model.layers[l].dequantized();
        let stats = sweep.advance_collecting(l, &layer, false)?;
        ratios.push(owl::outlier_ratio(&layer, &stats, owl_cfg.m));
    }
    let target = cfg.pattern.sparsity();
    Ok(owl::layer_sparsities(&ratios, target, owl_cfg.lambda)
        .into_iter()
        .map(|s| cfg.pattern.with_sparsity(s))
        .collect())
}
