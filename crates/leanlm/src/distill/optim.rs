//! AdamW (Loshchilov & Hutter 2019: weight decay decoupled from the adaptive step),
//! global-norm gradient clipping and a warm-up + decay learning-rate schedule. The
//! moment estimates are plain tensors so that a checkpoint can hold them.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

use super::student::Param;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this; `None` = no clipping.
    pub clip: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.01,
            clip: Some(1.0),
        }
    }
}

/// Learning-rate shape after a linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "cosine" => Ok(Self::Cosine),
            "linear" => Ok(Self::Linear),
            "constant" => Ok(Self::Constant),
            _ => Err(Error::InvalidInput(format!(
                "unknown schedule '{s}' (use cosine, linear or constant)"
            ))),
        }
    }

    /// Multiplier of the peak rate at `step` (0-based) of `total`: linear from 1/warmup
    /// to 1 over `warmup` steps, then down to `min_ratio`.
    pub fn factor(self, step: usize, total: usize, warmup: usize, min_ratio: f64) -> f64 {
        if step < warmup {
            return (step + 1) as f64 / warmup as f64;
        }
        let span = total.saturating_sub(warmup).max(1) as f64;
        let progress = ((step - warmup) as f64 / span).min(1.0);
        let decay = match self {
            Self::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Self::Linear => 1.0 - progress,
            Self::Constant => return 1.0,
        };
        min_ratio + (1.0 - min_ratio) * decay
    }
}

pub struct AdamW {
    pub cfg: AdamWConfig,
    /// Steps taken (bias correction uses it).
    pub t: usize,
    /// First and second moments, one pair per parameter, in parameter order.
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

/// What one optimizer step saw.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo {
    pub grad_norm: f64,
    pub lr: f64,
}

impl AdamW {
    pub fn new(params: &[Param], cfg: AdamWConfig) -> Result<Self> {
        if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "learning rate {} must be a positive number",
                cfg.lr
            )));
        }
        let zeros = |p: &Param| p.var.as_tensor().zeros_like();
        Ok(Self {
            cfg,
            t: 0,
            m: params
                .iter()
                .map(zeros)
                .collect::<candle_core::Result<_>>()?,
            v: params
                .iter()
                .map(zeros)
                .collect::<candle_core::Result<_>>()?,
        })
    }

    /// One update with `lr` (the schedule applied) from summed gradients scaled by
    /// `grad_scale` (1 / accumulation steps).
    pub fn step(&mut self, params: &[Param], grads: &[Tensor], lr: f64) -> Result<StepInfo> {
        let c = self.cfg;
        let mut sq = 0f64;
        for g in grads {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
        let grad_norm = sq.sqrt();
        if !grad_norm.is_finite() {
            return Err(Error::InvalidInput(format!(
                "the gradient norm is {grad_norm}: training diverged (lower --lr)"
            )));
        }
        let clip = match c.clip {
            Some(max) if grad_norm > max => max / grad_norm,
            _ => 1.0,
        };
        self.t += 1;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let g = (g * clip)?;
            self.m[i] = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            self.v[i] = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let mhat = (&self.m[i] / bc1)?;
            let vhat = (&self.v[i] / bc2)?;
            let update = (mhat / (vhat.sqrt()? + c.eps)?)?;
            let w = p.var.as_tensor();
            let decayed = if p.decay && c.weight_decay > 0.0 {
                (w * (1.0 - lr * c.weight_decay))?
            } else {
                w.clone()
            };
            p.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(StepInfo { grad_norm, lr })
    }
}

/// Add this micro-batch's gradients (scaled) into the running sums, one per parameter;
/// a parameter the loss does not reach gets a zero gradient.
pub fn accumulate(
    sums: &mut Vec<Tensor>,
    params: &[Param],
    grads: &GradStore,
    scale: f64,
) -> Result<()> {
    let first = sums.is_empty();
    for (i, p) in params.iter().enumerate() {
        let g = match grads.get(p.var.as_tensor()) {
            Some(g) => (g * scale)?,
            None => p.var.as_tensor().zeros_like()?,
        };
        if first {
            sums.push(g);
        } else {
            sums[i] = (&sums[i] + g)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let s = Schedule::Cosine;
        assert!((s.factor(0, 100, 10, 0.1) - 0.1).abs() < 1e-12);
        assert!((s.factor(9, 100, 10, 0.1) - 1.0).abs() < 1e-12);
        assert!((s.factor(10, 100, 10, 0.1) - 1.0).abs() < 1e-12);
        assert!((s.factor(55, 100, 10, 0.1) - 0.55).abs() < 1e-12);
        assert!((s.factor(100, 100, 10, 0.1) - 0.1).abs() < 1e-12);
        assert!((Schedule::Linear.factor(55, 100, 10, 0.0) - 0.5).abs() < 1e-12);
        assert_eq!(Schedule::Constant.factor(99, 100, 10, 0.1), 1.0);
    }

    #[test]
    fn adamw_first_step_moves_by_lr_against_the_gradient_sign() {
        use candle_core::{Device, Var};
        let var = Var::from_slice(&[1.0f32, -2.0, 0.5], 3, &Device::Cpu).unwrap();
        let params = vec![Param {
            name: "w".into(),
            var,
            mask: None,
            decay: false,
        }];
        let mut opt = AdamW::new(
            &params,
            AdamWConfig {
                clip: None,
                ..Default::default()
            },
        )
        .unwrap();
        let g = Tensor::from_slice(&[0.3f32, -4.0, 0.0], 3, &Device::Cpu).unwrap();
        opt.step(&params, &[g], 0.1).unwrap();
        let w = params[0].var.as_tensor().to_vec1::<f32>().unwrap();
        // Bias-corrected Adam's first step is lr·sign(g) (up to eps).
        assert!(
            (w[0] - 0.9).abs() < 1e-5 && (w[1] + 1.9).abs() < 1e-5 && w[2] == 0.5,
            "{w:?}"
        );
    }

    #[test]
    fn non_positive_learning_rates_are_refused() {
        for lr in [0.0, -1e-3, f64::NAN] {
            let e = AdamW::new(
                &[],
                AdamWConfig {
                    lr,
                    ..Default::default()
                },
            )
            .err()
            .unwrap();
            assert!(e.to_string().contains("learning rate"), "{e}");
        }
    }
}
