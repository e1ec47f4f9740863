//! Distillation losses over the teacher's top-k tokens plus "everything else".
//!
//! The teacher's distribution is kept as its k most likely tokens (log-probs at the
//! temperature τ) and the log of the remaining mass: k + 1 buckets. The student's
//! log-softmax at τ is gathered at the same tokens, its own remainder taken as
//! 1 − Σ top-k. Every divergence below is then exact between the two coarsened
//! distributions (a lower bound of the full-vocabulary one, equal when the remainder is
//! empty), and cheap enough to cache on disk.
//!
//! - forward KL(P‖Q) (Hinton et al. 2015, scaled by τ² so gradients keep their size);
//! - reverse KL(Q‖P) (MiniLLM, Gu et al. 2024);
//! - generalized JSD(β) = β·KL(P‖M) + (1−β)·KL(Q‖M), M = βP + (1−β)Q (GKD, Agarwal
//!   et al. 2024);
//! - next-token cross-entropy, mixed in by α.

use candle_core::{DType, Device, Tensor, D};

use super::student::log_softmax;
use crate::error::{Error, Result};

/// Which divergence between teacher P and student Q.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Divergence {
    Kl,
    ReverseKl,
    Jsd(f64),
    /// Cross-entropy on the data only (no teacher).
    Ce,
}

impl Divergence {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidInput(format!(
                "unknown loss '{s}' (use kl, rkl, jsd:BETA with 0 < BETA < 1, or ce)"
            ))
        };
        match s {
            "kl" => Ok(Self::Kl),
            "rkl" => Ok(Self::ReverseKl),
            "ce" => Ok(Self::Ce),
            _ => {
                let beta: f64 = s
                    .strip_prefix("jsd:")
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?;
                if beta > 0.0 && beta < 1.0 {
                    Ok(Self::Jsd(beta))
                } else {
                    Err(bad())
                }
            }
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::Kl => "kl".into(),
            Self::ReverseKl => "rkl".into(),
            Self::Jsd(b) => format!("jsd:{b}"),
            Self::Ce => "ce".into(),
        }
    }
}

/// The teacher's top-k view of `n` positions at one temperature.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherTopK {
    pub k: usize,
    /// (n·k) token ids, most likely first at each position.
    pub ids: Vec<u32>,
    /// (n·k) log-probs of those tokens at temperature τ.
    pub logp: Vec<f32>,
    /// (n) log of the mass outside the top k.
    pub rest: Vec<f32>,
}

impl TeacherTopK {
    /// From full logits `(n, vocab)` at temperature `tau`.
    pub fn from_logits(logits: &[f32], vocab: usize, k: usize, tau: f32) -> Self {
        let n = logits.len() / vocab;
        let k = k.min(vocab);
        let mut out = TeacherTopK {
            k,
            ids: Vec::with_capacity(n * k),
            logp: Vec::with_capacity(n * k),
            rest: Vec::with_capacity(n),
        };
        let mut idx: Vec<u32> = Vec::with_capacity(vocab);
        for row in logits.chunks_exact(vocab) {
            let z: Vec<f64> = row.iter().map(|&v| v as f64 / tau as f64).collect();
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            idx.clear();
            idx.extend(0..vocab as u32);
            if k < vocab {
                idx.select_nth_unstable_by(k - 1, |&a, &b| z[b as usize].total_cmp(&z[a as usize]));
            }
            let top = &mut idx[..k];
            top.sort_by(|&a, &b| z[b as usize].total_cmp(&z[a as usize]).then(a.cmp(&b)));
            let mut rest = 0f64;
            let mut in_top = vec![false; 0];
            if k < vocab {
                in_top.resize(vocab, false);
                for &i in top.iter() {
                    in_top[i as usize] = true;
                }
                rest = z
                    .iter()
                    .zip(&in_top)
                    .filter(|(_, &t)| !t)
                    .map(|(v, _)| (v - lse).exp())
                    .sum();
            }
            for &i in top.iter() {
                out.ids.push(i);
                out.logp.push((z[i as usize] - lse) as f32);
            }
            out.rest.push(rest.max(1e-30).ln() as f32);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Positions `start..start + len`.
    pub fn slice(&self, start: usize, len: usize) -> TeacherTopK {
        let k = self.k;
        TeacherTopK {
            k,
            ids: self.ids[start * k..(start + len) * k].to_vec(),
            logp: self.logp[start * k..(start + len) * k].to_vec(),
            rest: self.rest[start..start + len].to_vec(),
        }
    }

    /// Concatenate positions.
    pub fn concat(parts: &[TeacherTopK]) -> TeacherTopK {
        let k = parts.first().map_or(0, |p| p.k);
        TeacherTopK {
            k,
            ids: parts.iter().flat_map(|p| p.ids.iter().copied()).collect(),
            logp: parts.iter().flat_map(|p| p.logp.iter().copied()).collect(),
            rest: parts.iter().flat_map(|p| p.rest.iter().copied()).collect(),
        }
    }
}

/// What the loss mixes.
#[derive(Debug, Clone, Copy)]
pub struct LossConfig {
    pub divergence: Divergence,
    pub temperature: f64,
    /// Weight of next-token cross-entropy: loss = α·CE + (1 − α)·τ²·D.
    pub alpha: f64,
}

/// The terms of one evaluation of the loss, as scalars for logging.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossTerms {
    pub total: f64,
    pub divergence: f64,
    pub ce: f64,
    pub hidden: f64,
}

/// The logit loss of student `logits` (n, vocab) against the teacher at the same
/// positions and the data's next tokens (`targets[i]` follows position i; `None` for
/// the last position of a sequence). Returns the scalar tensor and its terms.
pub fn logit_loss(
    logits: &Tensor,
    teacher: Option<&TeacherTopK>,
    targets: &[Option<u32>],
    cfg: &LossConfig,
) -> Result<(Tensor, LossTerms)> {
    let (n, _vocab) = logits.dims2()?;
    let device = logits.device().clone();
    let dtype = logits.dtype();
    let mut terms = LossTerms::default();
    let mut total: Option<Tensor> = None;
    let mut add = |t: Tensor, w: f64| -> Result<()> {
        let t = (t * w)?;
        total = Some(match total.take() {
            Some(s) => (s + t)?,
            None => t,
        });
        Ok(())
    };
    let d_weight = if cfg.divergence == Divergence::Ce {
        0.0
    } else {
        1.0 - cfg.alpha
    };
    let ce_weight = if cfg.divergence == Divergence::Ce {
        1.0
    } else {
        cfg.alpha
    };
    if d_weight > 0.0 {
        let teacher = teacher.ok_or_else(|| {
            Error::InvalidInput("a distillation loss needs the teacher's log-probs".into())
        })?;
        if teacher.len() != n {
            return Err(Error::InvalidInput(format!(
                "teacher has {} positions, student {n}",
                teacher.len()
            )));
        }
        let tau = cfg.temperature;
        let d = divergence(logits, teacher, cfg.divergence, tau, &device, dtype)?;
        terms.divergence = scalar(&d)?;
        add(d, d_weight * tau * tau)?;
    }
    if ce_weight > 0.0 {
        let ce = cross_entropy(logits, targets, &device)?;
        terms.ce = scalar(&ce)?;
        add(ce, ce_weight)?;
    }
    let total = total.ok_or_else(|| Error::InvalidInput("the loss has no term".into()))?;
    terms.total = scalar(&total)?;
    Ok((total, terms))
}

/// Mean over positions of the chosen divergence between the coarsened distributions.
fn divergence(
    logits: &Tensor,
    teacher: &TeacherTopK,
    kind: Divergence,
    tau: f64,
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let n = teacher.len();
    let k = teacher.k;
    let ids = Tensor::from_slice(&teacher.ids, (n, k), device)?;
    // Teacher buckets: log P, (n, k+1).
    let mut lp = Vec::with_capacity(n * (k + 1));
    for i in 0..n {
        lp.extend_from_slice(&teacher.logp[i * k..(i + 1) * k]);
        lp.push(teacher.rest[i]);
    }
    let log_p = Tensor::from_vec(lp, (n, k + 1), device)?.to_dtype(dtype)?;
    // Student buckets: log Q at the same tokens, and log(1 − Σ) for the rest.
    let ls = log_softmax(&(logits / tau)?)?;
    let top = ls.gather(&ids, 1)?; // (n, k)
    let rest = (1.0 - top.exp()?.sum_keepdim(1)?)?
        .clamp(1e-12, 1.0)?
        .log()?; // (n, 1)
    let log_q = Tensor::cat(&[top, rest], 1)?;
    let kl = |log_a: &Tensor, log_b: &Tensor| -> Result<Tensor> {
        // Σ a (log a − log b) per row
        Ok((log_a.exp()? * (log_a - log_b)?)?.sum(1)?)
    };
    let per_row = match kind {
        Divergence::Kl => kl(&log_p, &log_q)?,
        Divergence::ReverseKl => kl(&log_q, &log_p)?,
        Divergence::Jsd(beta) => {
            let m = ((log_p.exp()? * beta)? + (log_q.exp()? * (1.0 - beta))?)?;
            let log_m = m.clamp(1e-30, 1.0)?.log()?;
            ((kl(&log_p, &log_m)? * beta)? + (kl(&log_q, &log_m)? * (1.0 - beta))?)?
        }
        Divergence::Ce => unreachable!("ce has no divergence term"),
    };
    Ok(per_row.mean_all()?)
}

/// Mean next-token cross-entropy over the positions that have a target.
fn cross_entropy(logits: &Tensor, targets: &[Option<u32>], device: &Device) -> Result<Tensor> {
    let rows: Vec<u32> = (0..targets.len() as u32)
        .filter(|&i| targets[i as usize].is_some())
        .collect();
    if rows.is_empty() {
        return Err(Error::InvalidInput(
            "cross-entropy needs sequences of at least two tokens".into(),
        ));
    }
    let ids: Vec<u32> = targets.iter().flatten().copied().collect();
    let m = rows.len();
    let sel = logits.index_select(&Tensor::from_vec(rows, m, device)?, 0)?;
    let ls = log_softmax(&sel)?;
    let picked = ls.gather(&Tensor::from_vec(ids, (m, 1), device)?, 1)?;
    Ok(picked.mean_all()?.neg()?)
}

/// Hidden-state matching: relative MSE (‖hs − ht‖² / ‖ht‖², so the huge norms of late
/// residual streams do not swamp the logit loss) or 1 − cosine, mean over positions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HiddenLoss {
    Mse,
    Cosine,
}

pub fn hidden_loss(student: &Tensor, teacher: &Tensor, kind: HiddenLoss) -> Result<Tensor> {
    match kind {
        HiddenLoss::Mse => {
            let err = (student - teacher)?.sqr()?.sum(D::Minus1)?;
            let norm = teacher.sqr()?.sum(D::Minus1)?.clamp(1e-12, f64::INFINITY)?;
            Ok((err / norm)?.mean_all()?)
        }
        HiddenLoss::Cosine => {
            let dot = (student * teacher)?.sum(D::Minus1)?;
            let ns = student.sqr()?.sum(D::Minus1)?.sqrt()?;
            let nt = teacher.sqr()?.sum(D::Minus1)?.sqrt()?;
            let cos = (dot / (ns * nt)?.clamp(1e-12, f64::INFINITY)?)?;
            Ok((1.0 - cos)?.mean_all()?)
        }
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_kl(p: &[f64], q: &[f64]) -> f64 {
        p.iter().zip(q).map(|(a, b)| a * (a / b).ln()).sum()
    }

    fn softmax(z: &[f32], tau: f64) -> Vec<f64> {
        let m = z.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let e: Vec<f64> = z.iter().map(|&v| ((v as f64 - m) / tau).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    #[test]
    fn top_k_covering_the_vocab_gives_the_exact_divergences() {
        let t = [1.0f32, -0.5, 2.0, 0.3, -1.0];
        let s = [0.2f32, 0.1, 1.5, -0.3, 0.4];
        let tau = 2.0;
        let teacher = TeacherTopK::from_logits(&t, 5, 5, tau as f32);
        let logits = f64_logits(&s, 1);
        let (p, q) = (softmax(&t, tau), softmax(&s, tau));
        let cases = [
            (Divergence::Kl, full_kl(&p, &q)),
            (Divergence::ReverseKl, full_kl(&q, &p)),
            (Divergence::Jsd(0.3), {
                let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| 0.3 * a + 0.7 * b).collect();
                0.3 * full_kl(&p, &m) + 0.7 * full_kl(&q, &m)
            }),
        ];
        for (kind, want) in cases {
            let d = divergence(&logits, &teacher, kind, tau, &Device::Cpu, DType::F64).unwrap();
            let got = scalar(&d).unwrap();
            assert!((got - want).abs() < 1e-6, "{kind:?}: {got} vs {want}");
        }
    }

    fn f64_logits(x: &[f32], rows: usize) -> Tensor {
        Tensor::from_slice(x, (rows, x.len() / rows), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    }

    fn kl_to(logits: &Tensor, teacher: &TeacherTopK) -> f64 {
        let d = divergence(
            logits,
            teacher,
            Divergence::Kl,
            1.0,
            &Device::Cpu,
            DType::F64,
        );
        scalar(&d.unwrap()).unwrap()
    }

    #[test]
    fn coarsened_kl_is_a_lower_bound_and_zero_for_equal_models() {
        let t: Vec<f32> = (0..50)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7)
            .collect();
        let s: Vec<f32> = (0..50).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.5).collect();
        let full = full_kl(&softmax(&t, 1.0), &softmax(&s, 1.0));
        let teacher = TeacherTopK::from_logits(&t, 50, 8, 1.0);
        let coarse = kl_to(&f64_logits(&s, 1), &teacher);
        assert!(coarse > 0.0 && coarse <= full + 1e-9, "{coarse} vs {full}");
        let zero = kl_to(&f64_logits(&t, 1), &teacher);
        // The teacher's log-probs are stored in f32: agreement to ~1e-8 is all there is.
        assert!(zero.abs() < 1e-7, "{zero}");
    }

    #[test]
    fn cross_entropy_matches_the_hand_formula() {
        let s = [0.5f32, -1.0, 2.0, 0.0, 1.0, 1.0];
        let logits = f64_logits(&s, 2);
        let ce = scalar(&cross_entropy(&logits, &[Some(2), None], &Device::Cpu).unwrap()).unwrap();
        let p = softmax(&s[..3], 1.0);
        assert!((ce + p[2].ln()).abs() < 1e-9);
    }

    #[test]
    fn loss_names_parse() {
        assert_eq!(Divergence::parse("jsd:0.5").unwrap(), Divergence::Jsd(0.5));
        assert!(Divergence::parse("jsd:1").is_err());
        assert!(Divergence::parse("l2").is_err());
    }
}
