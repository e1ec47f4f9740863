//! OWL (Yin et al. 2024, "Outlier Weighed Layerwise sparsity"): layers whose Wanda scores
//! hold more outliers keep more weights. A layer's outlier ratio D is the share of its
//! scores above M times their mean; densities are D rescaled to a spread of 2λ and shifted
//! so that the mean sparsity equals the target.

use super::mask::wanda_scores;
use crate::calibrate::BlockStats;
use crate::model::Layer;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct OwlConfig {
    /// Outlier threshold as a multiple of the mean score (the paper's M).
    pub m: f32,
    /// Half-width of the sparsity range around the target (the paper's λ).
    pub lambda: f32,
}

impl Default for OwlConfig {
    fn default() -> Self {
        // The values the paper uses for LLaMA.
        Self {
            m: 5.0,
            lambda: 0.08,
        }
    }
}

/// Share of the layer's Wanda scores (all seven matrices together) above `m` × their mean.
pub fn outlier_ratio(layer: &Layer, stats: &BlockStats, m: f32) -> f64 {
    let scores: Vec<f32> = layer
        .matrices()
        .into_iter()
        .flat_map(|(_, site, mat)| wanda_scores(&mat.to_f32(), &stats.site(site).col_norms()))
        .collect();
    let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len().max(1) as f64;
    let above = scores
        .iter()
        .filter(|&&s| s as f64 > m as f64 * mean)
        .count();
    above as f64 / scores.len().max(1) as f64
}

/// Per-layer sparsities with mean `target`, in `[target − λ, target + λ]`.
pub fn layer_sparsities(ratios: &[f64], target: f32, lambda: f32) -> Vec<f32> {
    let (lo, hi) = ratios
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &r| {
            (a.min(r), b.max(r))
        });
    let spread = hi - lo;
    let density: Vec<f64> = ratios
        .iter()
        .map(|&r| {
            if spread > 0.0 {
                (r - lo) / spread * 2.0 * lambda as f64
            } else {
                0.0
            }
        })
        .collect();
    let mean = density.iter().sum::<f64>() / density.len().max(1) as f64;
    density
        .iter()
        .map(|d| (1.0 - (d - mean + 1.0 - target as f64)) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparsities_keep_the_mean_and_favour_outlier_layers() {
        // Ratios 0, 0.5, 1 → densities 0, λ, 2λ → sparsities t+λ, t, t−λ.
        let s = layer_sparsities(&[0.0, 0.05, 0.1], 0.5, 0.08);
        for (a, b) in s.iter().zip([0.58, 0.5, 0.42]) {
            assert!((a - b).abs() < 1e-6, "{s:?}");
        }
        // Equal ratios: every layer at the target.
        assert_eq!(layer_sparsities(&[0.2, 0.2], 0.5, 0.08), [0.5, 0.5]);
    }
}
