//! Which weights to remove: importance scores and the selection rules of the papers.
//!
//! Magnitude pruning ranks |W| over the whole matrix; Wanda (Sun et al. 2023) ranks
//! |W_ij|·‖X_j‖₂ within each output row; an N:M pattern keeps the N highest-scoring
//! weights of every M consecutive inputs of a row. A mask is `true` where a weight is
//! removed.

use crate::error::{Error, Result};

/// How many weights to remove.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Pattern {
    /// Remove this fraction of the weights, in [0, 1).
    Unstructured(f32),
    /// Keep at most `n` non-zeros in each group of `m` consecutive inputs (2:4 → 50%).
    NM { n: usize, m: usize },
}

impl Pattern {
    pub fn unstructured(sparsity: f32) -> Result<Self> {
        if !(0.0..1.0).contains(&sparsity) {
            return Err(Error::InvalidInput(format!(
                "sparsity must be in [0, 1) (got {sparsity})"
            )));
        }
        Ok(Pattern::Unstructured(sparsity))
    }

    /// Parse "N:M" (e.g. "2:4").
    pub fn parse_nm(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidInput(format!(
                "pattern '{s}' is not N:M with 0 < N < M (e.g. 2:4 keeps 2 of every 4)"
            ))
        };
        let (n, m) = s.split_once(':').ok_or_else(bad)?;
        let (n, m): (usize, usize) = (
            n.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || n >= m {
            return Err(bad());
        }
        Ok(Pattern::NM { n, m })
    }

    /// Fraction of weights removed.
    pub fn sparsity(&self) -> f32 {
        match *self {
            Pattern::Unstructured(s) => s,
            Pattern::NM { n, m } => 1.0 - n as f32 / m as f32,
        }
    }

    /// The same kind of pattern at another sparsity (OWL's per-layer ratios).
    pub fn with_sparsity(&self, s: f32) -> Self {
        match self {
            Pattern::Unstructured(_) => Pattern::Unstructured(s.clamp(0.0, 0.999)),
            nm => *nm,
        }
    }

    pub fn check_cols(&self, cols: usize) -> Result<()> {
        if let Pattern::NM { n, m } = *self {
            if !cols.is_multiple_of(m) {
                return Err(Error::InvalidInput(format!(
                    "{n}:{m} needs a column count divisible by {m}, found {cols}"
                )));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Unstructured(s) => write!(f, "{:.0}% unstructured", s * 100.0),
            Pattern::NM { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

/// Where scores compete for survival in unstructured pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// All weights of the matrix against each other (magnitude pruning).
    Matrix,
    /// Within each output row (Wanda's comparison group).
    Row,
}

/// |W|.
pub fn magnitude_scores(w: &[f32]) -> Vec<f32> {
    w.iter().map(|v| v.abs()).collect()
}

/// Wanda: |W_ij| · ‖X_j‖₂ for a row-major `rows × cols` matrix.
pub fn wanda_scores(w: &[f32], col_norms: &[f32]) -> Vec<f32> {
    let cols = col_norms.len();
    w.chunks_exact(cols)
        .flat_map(|row| row.iter().zip(col_norms).map(|(w, n)| w.abs() * n))
        .collect()
}

/// Mark the lowest-scoring weights for removal. Ties go to the lower column index so the
/// result never depends on sort stability.
pub fn select(scores: &[f32], cols: usize, pattern: Pattern, scope: Scope) -> Result<Vec<bool>> {
    pattern.check_cols(cols)?;
    let mut mask = vec![false; scores.len()];
    match pattern {
        Pattern::NM { n, m } => {
            for (g, group) in scores.chunks_exact(m).enumerate() {
                for i in lowest(group, m - n) {
                    mask[g * m + i] = true;
                }
            }
        }
        Pattern::Unstructured(s) => match scope {
            Scope::Matrix => {
                let k = (scores.len() as f64 * s as f64) as usize;
                for i in lowest(scores, k) {
                    mask[i] = true;
                }
            }
            Scope::Row => {
                let k = (cols as f64 * s as f64) as usize;
                for (r, row) in scores.chunks_exact(cols).enumerate() {
                    for i in lowest(row, k) {
                        mask[r * cols + i] = true;
                    }
                }
            }
        },
    }
    Ok(mask)
}

/// Indices of the `k` smallest values.
pub(crate) fn lowest(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    if k == 0 {
        return Vec::new();
    }
    let by_score = |&a: &usize, &b: &usize| v[a].total_cmp(&v[b]).then(a.cmp(&b));
    if k < v.len() {
        idx.select_nth_unstable_by(k - 1, by_score);
    }
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// Zero the masked weights.
pub fn apply(w: &mut [f32], mask: &[bool]) {
    for (w, &m) in w.iter_mut().zip(mask) {
        if m {
            *w = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_ranks_the_whole_matrix() {
        // 2 × 3; the three smallest |w| are 0.1, -0.2 (row 0) and 0.3 (row 1).
        let w = [0.1, -0.2, 5.0, 0.3, -4.0, 6.0];
        let m = select(
            &magnitude_scores(&w),
            3,
            Pattern::Unstructured(0.5),
            Scope::Matrix,
        );
        assert_eq!(m.unwrap(), [true, true, false, true, false, false]);
    }

    #[test]
    fn wanda_compares_within_rows_weighted_by_input_norms() {
        // Column norms [10, 1, 1]: w_00 = 0.1 scores 1.0 and beats w_01 = 0.5 (0.5).
        let w = [0.1, 0.5, 0.9, 2.0, 1.0, 3.0];
        let scores = wanda_scores(&w, &[10.0, 1.0, 1.0]);
        assert_eq!(scores, [1.0, 0.5, 0.9, 20.0, 1.0, 3.0]);
        let m = select(&scores, 3, Pattern::Unstructured(0.34), Scope::Row).unwrap();
        // One weight per row: row 0 drops column 1, row 1 drops column 1.
        assert_eq!(m, [false, true, false, false, true, false]);
        // Magnitude alone would have dropped w_00 instead.
        let mm = select(
            &magnitude_scores(&w),
            3,
            Pattern::Unstructured(0.34),
            Scope::Row,
        );
        assert_eq!(mm.unwrap(), [true, false, false, false, true, false]);
    }

    #[test]
    fn two_four_keeps_the_two_largest_of_each_group() {
        let s = [4.0, 1.0, 3.0, 2.0, 0.0, 9.0, 8.0, 0.5];
        let m = select(&s, 8, Pattern::NM { n: 2, m: 4 }, Scope::Row).unwrap();
        assert_eq!(m, [false, true, false, true, true, false, false, true]);
        assert!(select(&s[..6], 6, Pattern::NM { n: 2, m: 4 }, Scope::Row).is_err());
    }

    #[test]
    fn patterns_are_validated() {
        assert_eq!(
            Pattern::parse_nm("2:4").unwrap(),
            Pattern::NM { n: 2, m: 4 }
        );
        for bad in ["3:2", "0:4", "4:4", "2-4", "a:4"] {
            assert!(Pattern::parse_nm(bad).is_err(), "{bad}");
        }
        for bad in [-0.1, 1.0, f32::NAN] {
            assert!(Pattern::unstructured(bad).is_err());
        }
        assert_eq!(Pattern::NM { n: 2, m: 4 }.sparsity(), 0.5);
    }

    #[test]
    fn ties_and_zero_budgets() {
        assert_eq!(lowest(&[1.0, 1.0, 1.0], 2), [0, 1]);
        assert!(lowest(&[1.0], 0).is_empty());
        let m = select(&[1.0; 4], 4, Pattern::Unstructured(0.0), Scope::Row).unwrap();
        assert!(m.iter().all(|&x| !x));
    }
}
