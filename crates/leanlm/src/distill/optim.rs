//! AdamW (Loshchilov & Hutter 2019: weight decay decoupled from the adaptive step),
//! global-norm gradient clipping and a warm-up + decay learning-rate schedule. The
//! moment estimates are plain tensors so that a checkpoint can hold them.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Layout, Storage, Tensor};
use rayon::prelude::*;

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

    /// One update with `lr` (the schedule applied) from the accumulated gradients, one
    /// per parameter in parameter order.
    pub fn step(&mut self, params: &[Param], grads: &[Tensor], lr: f64) -> Result<StepInfo> {
        let mut sq = 0f64;
        for g in grads {
            let (storage, layout) = g.storage_and_layout();
            sq += match cpu_f32(&storage, layout) {
                Some(x) => sum_of_squares(x),
                None => g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?,
            };
        }
        let grad_norm = sq.sqrt();
        if !grad_norm.is_finite() {
            // `t` counts the steps taken (a checkpoint restores it): this is step t + 1.
            return Err(Error::NonFinite {
                step: self.t + 1,
                what: "the gradient norm".into(),
                value: grad_norm,
            });
        }
        let clip = match self.cfg.clip {
            Some(max) if grad_norm > max => max / grad_norm,
            _ => 1.0,
        };
        self.t += 1;
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let h = Hyper::new(&self.cfg, self.t, clip, lr, p.decay);
            let (w, m, v) = match fused_update(p.var.as_tensor(), g, &self.m[i], &self.v[i], &h)? {
                Some(new) => new,
                None => tensor_update(p.var.as_tensor(), g, &self.m[i], &self.v[i], &h)?,
            };
            p.var.set(&w)?;
            (self.m[i], self.v[i]) = (m, v);
        }
        Ok(StepInfo { grad_norm, lr })
    }
}

/// The scalars of one parameter's update, in f32 as the tensor ops apply them.
struct Hyper {
    clip: f32,
    beta1: f32,
    beta2: f32,
    /// Bias corrections 1 − βᵗ.
    bc1: f32,
    bc2: f32,
    eps: f32,
    lr: f32,
    /// 1 − lr·weight_decay, or 1 where the parameter takes no decay.
    keep: f32,
}

impl Hyper {
    fn new(c: &AdamWConfig, t: usize, clip: f64, lr: f64, decay: bool) -> Self {
        let keep = if decay && c.weight_decay > 0.0 {
            1.0 - lr * c.weight_decay
        } else {
            1.0
        };
        Self {
            clip: clip as f32,
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            bc1: (1.0 - c.beta1.powi(t as i32)) as f32,
            bc2: (1.0 - c.beta2.powi(t as i32)) as f32,
            eps: c.eps as f32,
            lr: lr as f32,
            keep: keep as f32,
        }
    }
}

/// New (w, m, v) from candle tensor operations: any device, any float type.
fn tensor_update(
    w: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: &Hyper,
) -> Result<(Tensor, Tensor, Tensor)> {
    let f = |x: f32| x as f64;
    let g = (g * f(h.clip))?;
    let m = ((m * f(h.beta1))? + (&g * f(1.0 - h.beta1))?)?;
    let v = ((v * f(h.beta2))? + (g.sqr()? * f(1.0 - h.beta2))?)?;
    let mhat = (&m / f(h.bc1))?;
    let vhat = (&v / f(h.bc2))?;
    let update = (mhat / (vhat.sqrt()? + f(h.eps))?)?;
    let w = ((w * f(h.keep))? - (update * f(h.lr))?)?;
    Ok((w, m, v))
}

/// The same update in one pass over f32 tensors on the CPU. The tensor form allocates a
/// full-size temporary per operation: about 3 s of an 8 s step for 113 M weights.
/// `None` when a tensor is elsewhere or not contiguous f32.
fn fused_update(
    w: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: &Hyper,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let n = w.elem_count();
    if [g, m, v].iter().any(|t| t.elem_count() != n) {
        return Ok(None); // the tensor ops name the mismatch
    }
    let held = [w, g, m, v].map(|t| t.storage_and_layout());
    let Some(data) = held
        .iter()
        .map(|(storage, layout)| cpu_f32(storage, layout))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let (w, g, m, v) = (data[0], data[1], data[2], data[3]);
    let (mut w2, mut m2, mut v2) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    const CHUNK: usize = 1 << 16;
    w2.par_chunks_mut(CHUNK)
        .zip(m2.par_chunks_mut(CHUNK))
        .zip(v2.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((w2, m2), v2))| {
            let range = c * CHUNK..c * CHUNK + w2.len();
            let it = w[range.clone()].iter().zip(&g[range.clone()]);
            let it = it.zip(m[range.clone()].iter().zip(&v[range]));
            for (j, ((&w, &g), (&m, &v))) in it.enumerate() {
                let g = g * h.clip;
                let m = m * h.beta1 + g * (1.0 - h.beta1);
                let v = v * h.beta2 + g * g * (1.0 - h.beta2);
                let update = (m / h.bc1) / ((v / h.bc2).sqrt() + h.eps);
                (w2[j], m2[j], v2[j]) = (w * h.keep - update * h.lr, m, v);
            }
        });
    let shape = held[0].1.shape();
    let cpu = |x: Vec<f32>| Tensor::from_vec(x, shape, &candle_core::Device::Cpu);
    Ok(Some((cpu(w2)?, cpu(m2)?, cpu(v2)?)))
}

/// The data of a contiguous f32 tensor in CPU memory.
fn cpu_f32<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [f32]> {
    let (from, to) = layout.contiguous_offsets()?;
    match storage {
        Storage::Cpu(CpuStorage::F32(data)) => Some(&data[from..to]),
        _ => None,
    }
}

/// Σx² in f64, in parallel.
fn sum_of_squares(x: &[f32]) -> f64 {
    x.par_chunks(1 << 16)
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .sum()
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

    /// The fused CPU pass against the tensor-op form it replaces, over three steps with
    /// clipping, with and without weight decay, on a length that ends in a partial chunk.
    #[test]
    fn fused_update_equals_the_tensor_ops() {
        use candle_core::Device;
        let n = (1 << 16) + 37;
        let t = |seed: u32| {
            Tensor::from_vec(crate::quant::test_data(n, seed), n, &Device::Cpu).unwrap()
        };
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        for decay in [false, true] {
            let zeros = t(0).zeros_like().unwrap();
            let (mut wf, mut mf, mut vf) = (t(1), zeros.clone(), zeros.clone());
            let (mut wt, mut mt, mut vt) = (t(1), zeros.clone(), zeros);
            for step in 1..=3 {
                let g = t(10 + step as u32);
                let h = Hyper::new(&cfg, step, 0.5, 1e-2, decay);
                (wf, mf, vf) = fused_update(&wf, &g, &mf, &vf, &h)
                    .unwrap()
                    .expect("contiguous f32 on the CPU");
                (wt, mt, vt) = tensor_update(&wt, &g, &mt, &vt, &h).unwrap();
            }
            for (a, b) in [(&wf, &wt), (&mf, &mt), (&vf, &vt)] {
                let (a, b) = (a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} vs {y}");
                }
            }
            let before = t(1).to_vec1::<f32>().unwrap();
            assert!(wf
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .zip(&before)
                .all(|(a, b)| a != b));
        }
        // A transposed (non-contiguous) weight is left to the tensor ops.
        let w = Tensor::from_vec(crate::quant::test_data(32, 5), (4, 8), &Device::Cpu).unwrap();
        let w = w.t().unwrap();
        let z = w.zeros_like().unwrap();
        let h = Hyper::new(&cfg, 1, 1.0, 1e-2, true);
        assert!(fused_update(&w, &z, &z, &z, &h).unwrap().is_none());
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
