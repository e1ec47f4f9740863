//! Structured pruning: whole attention heads, MLP channels or blocks go, so the matrices
//! shrink and the model runs faster in any engine.
//!
//! - Heads: a head's importance is the Wanda score of its slice of the output projection,
//!   Σ_r Σ_(j∈head) |W_o[r, j]|·‖X_j‖. With grouped-query attention the same number of
//!   query heads goes from every key/value group (`heads=K`), or whole groups go with their
//!   key/value head (`kv-heads=G`), so each remaining query head keeps its K/V.
//! - MLP channels: Σ_r |W_down[r, c]|·‖X_c‖; the gate and up rows and the down column of a
//!   channel go together. The kept width is a multiple of 32 so that block-quantized types
//!   still fit.
//! - Layers: ShortGPT's block influence, 1 − mean cos(block input, block output) over the
//!   calibration tokens of the dense model; the least influential blocks go.

use std::time::Instant;

use super::mask::lowest;
use super::{BlockSink, LayerReport, Progress, PruneReport};
use crate::calibrate::{BlockStats, Calibration, Sweep};
use crate::error::{Error, Result};
use crate::model::{Layer, LinearSite, Model};
use crate::quant::Matrix;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Structured {
    /// Query heads removed per layer, evenly across key/value groups.
    Heads(usize),
    /// Key/value groups (with their query heads) removed per layer.
    KvHeads(usize),
    /// Fraction of MLP channels removed per layer.
    Ffn(f32),
    /// Blocks removed.
    Layers(usize),
}

impl Structured {
    /// Parse `heads=K`, `kv-heads=G`, `ffn=F` or `layers=N`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidInput(format!(
                "structured pruning '{s}' is not one of heads=K, kv-heads=G, ffn=FRACTION, layers=N"
            ))
        };
        let (k, v) = s.split_once('=').ok_or_else(bad)?;
        let int = || v.trim().parse::<usize>().map_err(|_| bad());
        let parsed = match k.trim() {
            "heads" => Structured::Heads(int()?),
            "kv-heads" => Structured::KvHeads(int()?),
            "layers" => Structured::Layers(int()?),
            "ffn" => Structured::Ffn(v.trim().parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        match parsed {
            Structured::Ffn(f) if !(f > 0.0 && f < 1.0) => Err(Error::InvalidInput(format!(
                "ffn={f}: the fraction of MLP channels to remove must be in (0, 1)"
            ))),
            Structured::Heads(0) | Structured::KvHeads(0) | Structured::Layers(0) => Err(
                Error::InvalidInput(format!("'{s}' removes nothing; give a count of at least 1")),
            ),
            p => Ok(p),
        }
    }

    /// Check the request against the model before any work.
    pub fn check(&self, model: &Model) -> Result<()> {
        let hd = model.config.head_dim;
        let bad = |msg: String| Err(Error::InvalidInput(msg));
        match *self {
            Structured::Layers(n) if n >= model.layers.len() => bad(format!(
                "layers={n}: the model has only {} blocks; at least one must remain",
                model.layers.len()
            )),
            Structured::Heads(k) => {
                for (i, l) in model.layers.iter().enumerate() {
                    let (nh, nkv) = (l.n_heads(hd), l.n_kv_heads(hd));
                    if k >= nh || !k.is_multiple_of(nkv) {
                        return bad(format!(
                            "heads={k}: blk.{i} has {nh} query heads in {nkv} key/value groups; \
                             remove a multiple of {nkv} below {nh} (or whole groups with kv-heads=G)"
                        ));
                    }
                }
                Ok(())
            }
            Structured::KvHeads(g) => {
                for (i, l) in model.layers.iter().enumerate() {
                    if g >= l.n_kv_heads(hd) {
                        return bad(format!(
                            "kv-heads={g}: blk.{i} has only {} key/value heads; at least one must remain",
                            l.n_kv_heads(hd)
                        ));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Apply `what` to `model`, calibrated layer by layer on `calib`, handing the blocks that
/// remain to `sink` in order (as each is shrunk; after the influence pass for layers).
pub fn prune_structured(
    model: &Model,
    calib: &Calibration,
    what: Structured,
    progress: &mut dyn FnMut(Progress),
    sink: &mut BlockSink,
) -> Result<PruneReport> {
    what.check(model)?;
    let start = Instant::now();
    let n = model.layers.len();
    let mut sweep = Sweep::new(model, calib);
    let mut report = PruneReport {
        calibration_tokens: calib.n_tokens(),
        ..PruneReport::default()
    };
    let mut influence = Vec::with_capacity(n);
    for l in 0..n {
        let t0 = Instant::now();
        progress(Progress {
            phase: "structured",
            layer: l,
            layers: n,
        });
        let mut entry = LayerReport {
            layer: l,
            ..LayerReport::default()
        };
        let dense = model.layers[l].dequantized();
        let shrunk = match what {
            Structured::Layers(_) => {
                // The dense model's influence: no block changes during this pass.
                let stats = sweep.advance_collecting(l, &dense, false)?;
                influence.push(stats.influence());
                entry.influence = Some(stats.influence());
                None
            }
            _ => {
                let stats = sweep.stats(l, &dense, false)?;
                let shrunk = shrink(&dense, &stats, what, model.config.head_dim)?;
                sweep.advance(l, &shrunk)?;
                entry.heads_kept = Some(shrunk.n_heads(model.config.head_dim));
                entry.ffn_kept = Some(shrunk.ffn_dim());
                Some(shrunk)
            }
        };
        entry.seconds = t0.elapsed().as_secs_f64();
        report.layers.push(entry);
        if let Some(layer) = shrunk {
            sink(layer)?;
        }
    }
    if let Structured::Layers(k) = what {
        let mut removed = lowest(&influence.iter().map(|&v| v as f32).collect::<Vec<_>>(), k);
        removed.sort_unstable();
        // The blocks that stay are unchanged: handed on in their stored form.
        for (i, layer) in model.layers.iter().enumerate() {
            if !removed.contains(&i) {
                sink(layer.clone())?;
            }
        }
        report.removed_layers = removed;
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The block with the least important heads or channels removed.
fn shrink(layer: &Layer, stats: &BlockStats, what: Structured, hd: usize) -> Result<Layer> {
    let mut out = layer.clone();
    match what {
        Structured::Heads(_) | Structured::KvHeads(_) => {
            let (nh, nkv) = (layer.n_heads(hd), layer.n_kv_heads(hd));
            let group = nh / nkv;
            let scores = column_scores(&layer.wo, &stats.site(LinearSite::AttnOut).col_norms());
            let head: Vec<f32> = (0..nh)
                .map(|h| scores[h * hd..(h + 1) * hd].iter().sum())
                .collect();
            let (keep_q, keep_kv): (Vec<usize>, Vec<usize>) = match what {
                Structured::Heads(k) => {
                    // The same number from each group keeps head h → group h / group valid.
                    let per = k / nkv;
                    let mut keep = Vec::new();
                    for g in 0..nkv {
                        let heads = &head[g * group..(g + 1) * group];
                        let gone = lowest(heads, per);
                        keep.extend(
                            (0..group)
                                .filter(|i| !gone.contains(i))
                                .map(|i| g * group + i),
                        );
                    }
                    (keep, (0..nkv).collect())
                }
                Structured::KvHeads(gk) => {
                    let groups: Vec<f32> = (0..nkv)
                        .map(|g| head[g * group..(g + 1) * group].iter().sum())
                        .collect();
                    let gone = lowest(&groups, gk);
                    let kv: Vec<usize> = (0..nkv).filter(|g| !gone.contains(g)).collect();
                    let q = kv
                        .iter()
                        .flat_map(|&g| g * group..(g + 1) * group)
                        .collect();
                    (q, kv)
                }
                _ => unreachable!("matched above"),
            };
            let q_idx = expand(&keep_q, hd);
            let kv_idx = expand(&keep_kv, hd);
            out.wq = keep_rows(&layer.wq, &q_idx)?;
            out.wk = keep_rows(&layer.wk, &kv_idx)?;
            out.wv = keep_rows(&layer.wv, &kv_idx)?;
            out.wo = keep_cols(&layer.wo, &q_idx)?;
            out.bq = layer
                .bq
                .as_ref()
                .map(|b| q_idx.iter().map(|&i| b[i]).collect());
            out.bk = layer
                .bk
                .as_ref()
                .map(|b| kv_idx.iter().map(|&i| b[i]).collect());
            out.bv = layer
                .bv
                .as_ref()
                .map(|b| kv_idx.iter().map(|&i| b[i]).collect());
        }
        Structured::Ffn(frac) => {
            let ff = layer.ffn_dim();
            let kept = ((((1.0 - frac as f64) * ff as f64) / 32.0).round() as usize * 32)
                .clamp(32.min(ff), ff);
            let scores = column_scores(&layer.w_down, &stats.site(LinearSite::Down).col_norms());
            let gone = lowest(&scores, ff - kept);
            let keep: Vec<usize> = (0..ff).filter(|c| gone.binary_search(c).is_err()).collect();
            out.w_gate = keep_rows(&layer.w_gate, &keep)?;
            out.w_up = keep_rows(&layer.w_up, &keep)?;
            out.w_down = keep_cols(&layer.w_down, &keep)?;
        }
        Structured::Layers(_) => {}
    }
    Ok(out)
}

/// Σ_r |W[r, j]|·‖X_j‖ per column j.
fn column_scores(w: &Matrix, norms: &[f32]) -> Vec<f32> {
    let data = w.to_f32();
    let mut s = vec![0f32; w.cols];
    for row in data.chunks_exact(w.cols) {
        for ((s, v), n) in s.iter_mut().zip(row).zip(norms) {
            *s += v.abs() * n;
        }
    }
    s
}

/// Head indices → the row (or column) indices of their `hd`-wide slices.
fn expand(heads: &[usize], hd: usize) -> Vec<usize> {
    heads.iter().flat_map(|&h| h * hd..(h + 1) * hd).collect()
}

fn keep_rows(m: &Matrix, rows: &[usize]) -> Result<Matrix> {
    let w = m.to_f32();
    let data = rows
        .iter()
        .flat_map(|&r| w[r * m.cols..(r + 1) * m.cols].iter().copied())
        .collect();
    Matrix::from_f32(rows.len(), m.cols, data)
}

fn keep_cols(m: &Matrix, cols: &[usize]) -> Result<Matrix> {
    let w = m.to_f32();
    let data = w
        .chunks_exact(m.cols)
        .flat_map(|row| cols.iter().map(move |&c| row[c]))
        .collect();
    Matrix::from_f32(m.rows, cols.len(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_validate() {
        assert_eq!(Structured::parse("heads=3").unwrap(), Structured::Heads(3));
        assert_eq!(
            Structured::parse("kv-heads=1").unwrap(),
            Structured::KvHeads(1)
        );
        assert_eq!(
            Structured::parse("ffn=0.25").unwrap(),
            Structured::Ffn(0.25)
        );
        assert_eq!(
            Structured::parse("layers=4").unwrap(),
            Structured::Layers(4)
        );
        for bad in [
            "heads", "heads=x", "ffn=1.0", "ffn=0", "layers=0", "width=3",
        ] {
            assert!(Structured::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rows_columns_and_channel_scores_by_hand() {
        // W = [[1, -2, 3], [4, 5, -6]], column norms [1, 0, 2].
        let m = Matrix::from_f32(2, 3, vec![1.0, -2.0, 3.0, 4.0, 5.0, -6.0]).unwrap();
        assert_eq!(column_scores(&m, &[1.0, 0.0, 2.0]), [5.0, 0.0, 18.0]);
        assert_eq!(keep_rows(&m, &[1]).unwrap().to_f32(), [4.0, 5.0, -6.0]);
        assert_eq!(
            keep_cols(&m, &[0, 2]).unwrap().to_f32(),
            [1.0, 3.0, 4.0, -6.0]
        );
        assert_eq!(expand(&[0, 2], 2), [0, 1, 4, 5]);
    }
}
