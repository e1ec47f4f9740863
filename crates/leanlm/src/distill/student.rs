//! The student: the forward pass of [`crate::model::llama`] rebuilt from differentiable
//! candle ops, with every weight a [`Var`], for every family that pass runs. It reads the
//! same family description ([`crate::model::Family`]) and the same tensor roles
//! ([`crate::model::tensors`]): Q/K norms, post-norms, the MLP's activation, embedding
//! scale, sliding-window blocks with their own RoPE base, logit soft-capping.
//!
//! candle's fused `rms_norm`, `softmax_last_dim` and `rope` record no gradient, so each
//! is written out here from primitive ops (mean, sqrt, exp, narrow, cat) whose backward
//! candle knows (`gelu`, candle's tanh approximation, and `tanh` have backward passes).
//! The math and the weight layout (rows = outputs, the model's RoPE pair style) are
//! those of the inference pass, so `to_model` round-trips exactly.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var, D};

use crate::error::{Error, Result};
use crate::model::tensors::{self, Kind, Role, Weight, WeightRef};
use crate::model::{Activation, Layer, Model, RopeStyle};
use crate::quant::Matrix;

/// A trainable tensor with the name it is saved under and, for pruned matrices, the
/// mask (1 = kept) that keeps its zeros at zero.
#[derive(Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub mask: Option<Tensor>,
    /// Weight decay applies to matrices, not to norm gains.
    pub decay: bool,
}

/// A block's weights by role (the roles its inference layer has).
struct StudentLayer {
    weights: BTreeMap<Role, Tensor>,
    sliding: bool,
}

impl StudentLayer {
    /// A weight every block has (the seven matrices and the two pre-norms).
    fn w(&self, role: Role) -> &Tensor {
        &self.weights[&role]
    }
    fn get(&self, role: Role) -> Option<&Tensor> {
        self.weights.get(&role)
    }
}

/// How the student is built from a model.
#[derive(Debug, Clone, Copy)]
pub struct StudentOptions {
    /// Train the token embedding (and an untied head); off by default: it is a quarter
    /// of SmolLM2-135M's weights and pruning does not touch it.
    pub train_embeddings: bool,
    /// Keep exact zeros at zero in matrices where at least this fraction is zero
    /// (pruned matrices); `None` trains every weight.
    pub keep_zeros_above: Option<f64>,
}

impl Default for StudentOptions {
    fn default() -> Self {
        Self {
            train_embeddings: false,
            keep_zeros_above: Some(0.01),
        }
    }
}

pub struct Student {
    base: Model,
    layers: Vec<StudentLayer>,
    tok_embd: Tensor,
    out_norm: Tensor,
    output: Tensor,
    params: Vec<Param>,
    device: Device,
    dtype: DType,
}

/// What one forward pass returns.
pub struct StudentOutput {
    /// (b·t, vocab)
    pub logits: Tensor,
    /// Hidden state after `k` blocks, (b·t, d_model), for each `k` asked for.
    pub hidden: Vec<(usize, Tensor)>,
}

impl Student {
    /// Build a student from `model` (quantized matrices are decoded to `dtype`).
    pub fn new(model: &Model, opt: StudentOptions, device: &Device, dtype: DType) -> Result<Self> {
        let mut params = Vec::new();
        let mut tensor = |name: &str,
                          data: Vec<f32>,
                          shape: &[usize],
                          trainable: bool,
                          decay: bool|
         -> Result<Tensor> {
            let t = to_student(data, shape, dtype, device)?;
            if !trainable {
                return Ok(t);
            }
            let zeros = |t: &Tensor| -> Result<f64> {
                let z = t.eq(0.0)?.to_dtype(DType::F32)?.mean_all()?;
                Ok(z.to_scalar::<f32>()? as f64)
            };
            let mask = match opt.keep_zeros_above {
                Some(f) if shape.len() == 2 && zeros(&t)? >= f => Some(t.ne(0.0)?.to_dtype(dtype)?),
                _ => None,
            };
            let var = Var::from_tensor(&t)?;
            let out = var.as_tensor().clone();
            params.push(Param {
                name: name.to_string(),
                var,
                mask,
                decay,
            });
            Ok(out)
        };
        let d = model.config.d_model;
        let mat = |m: &Matrix| (m.to_f32(), [m.rows, m.cols]);
        let tied = model.tied();
        let (e, es) = mat(&model.tok_embd);
        let tok_embd = tensor("token_embd.weight", e, &es, opt.train_embeddings, false)?;
        let output = if tied {
            tok_embd.clone()
        } else {
            let (o, os) = mat(&model.output);
            tensor("output.weight", o, &os, opt.train_embeddings, false)?
        };
        let mut layers = Vec::with_capacity(model.layers.len());
        for (i, l) in model.layers.iter().enumerate() {
            let mut weights = BTreeMap::new();
            for (role, w) in l.weights() {
                let name = tensors::gguf_name(i, role);
                let t = match w {
                    WeightRef::Matrix(m) => {
                        let (v, s) = mat(m);
                        tensor(&name, v, &s, true, true)?
                    }
                    WeightRef::Vector(v) => tensor(&name, v.to_vec(), &[v.len()], true, false)?,
                };
                weights.insert(role, t);
            }
            layers.push(StudentLayer {
                weights,
                sliding: l.sliding,
            });
        }
        let out_norm = tensor(
            "output_norm.weight",
            model.out_norm.clone(),
            &[d],
            true,
            false,
        )?;
        Ok(Self {
            base: model.clone(),
            layers,
            tok_embd,
            out_norm,
            output,
            params,
            device: device.clone(),
            dtype,
        })
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn d_model(&self) -> usize {
        self.base.config.d_model
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Re-apply the pruning masks (after an optimizer step).
    pub fn apply_masks(&self) -> Result<()> {
        for p in &self.params {
            if let Some(m) = &p.mask {
                p.var.set(&p.var.as_tensor().mul(m)?)?;
            }
        }
        Ok(())
    }

    /// Run `b` sequences of `t` tokens (`tokens` row-major) from position 0.
    pub fn forward(
        &self,
        tokens: &[u32],
        b: usize,
        t: usize,
        hidden_after: &[usize],
    ) -> Result<StudentOutput> {
        let cfg = &self.base.config;
        let hd = cfg.head_dim;
        if tokens.len() != b * t || t == 0 {
            return Err(Error::InvalidInput(format!(
                "student forward: {} tokens for {b}×{t}",
                tokens.len()
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the student's vocabulary"
            )));
        }
        let ids = Tensor::from_slice(tokens, b * t, &self.device)?;
        let family = cfg.family();
        // Global and sliding-window blocks: their RoPE tables and masks.
        let global = (self.rope_tables(t, false)?, self.mask(t, None)?);
        let local = match cfg.sliding_window {
            Some(w) => Some((self.rope_tables(t, true)?, self.mask(t, Some(w))?)),
            None => None,
        };
        let mut hidden = Vec::new();
        // x = embeddings (× √d where the family scales them)            (b·t, d)
        let mut x = self.tok_embd.index_select(&ids, 0)?;
        if family.embed_scale_sqrt_d {
            x = (x * (cfg.d_model as f32).sqrt() as f64)?;
        }
        if hidden_after.contains(&0) {
            hidden.push((0, x.clone()));
        }
        let norm = |x: &Tensor, role: Role, layer: &StudentLayer| -> Result<Tensor> {
            match layer.get(role) {
                Some(w) => rms_norm(x, w, cfg.rms_eps),
                None => Ok(x.clone()),
            }
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let nh = layer.w(Role::AttnQ).dim(0)? / hd;
            let nkv = layer.w(Role::AttnK).dim(0)? / hd;
            let ((cos, sin), mask) = match (&local, layer.sliding) {
                (Some(local), true) => local,
                _ => &global,
            };

            // Attention: x += [PostNorm] Wo · attn(RoPE([QNorm] Wq·xn), RoPE([KNorm] Wk·xn), Wv·xn)
            let xn = rms_norm(&x, layer.w(Role::AttnNorm), cfg.rms_eps)?;
            let heads =
                |w: Role, bias: Role, head_norm: Option<Role>, n: usize| -> Result<Tensor> {
                    let mut y = xn.matmul(&layer.w(w).t()?)?; // (b·t, n·hd)
                    if let Some(bias) = layer.get(bias) {
                        y = y.broadcast_add(bias)?;
                    }
                    let mut y = y.reshape((b, t, n, hd))?; // per-head norms act on the last dim
                    if let Some(r) = head_norm {
                        y = norm(&y, r, layer)?;
                    }
                    Ok(y.transpose(1, 2)?) // (b, n, t, hd)
                };
            let q = heads(Role::AttnQ, Role::AttnQBias, Some(Role::AttnQNorm), nh)?;
            let k = heads(Role::AttnK, Role::AttnKBias, Some(Role::AttnKNorm), nkv)?;
            let (q, k) = (self.rope(&q, cos, sin)?, self.rope(&k, cos, sin)?);
            let v = heads(Role::AttnV, Role::AttnVBias, None, nkv)?;
            let (k, v) = (repeat_kv(&k, nh / nkv)?, repeat_kv(&v, nh / nkv)?); // (b, nh, t, hd)
            let scale = 1.0 / (hd as f64).sqrt();
            let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?; // (b, nh, t, t)
            let p = softmax(&scores.broadcast_add(mask)?)?;
            let att = p.matmul(&v.contiguous()?)?; // (b, nh, t, hd)
            let att = att.transpose(1, 2)?.reshape((b * t, nh * hd))?;
            let o = att.matmul(&layer.w(Role::AttnOutput).t()?)?;
            x = (x + norm(&o, Role::PostAttnNorm, layer)?)?;

            // MLP: x += [PostNorm] W_down · (act(W_gate·xn) ⊙ W_up·xn)
            let xn = rms_norm(&x, layer.w(Role::FfnNorm), cfg.rms_eps)?;
            let g = xn.matmul(&layer.w(Role::FfnGate).t()?)?;
            let g = match family.activation {
                Activation::SiluGlu => g.silu()?,
                Activation::GeluTanhGlu => g.gelu()?,
            };
            let u = xn.matmul(&layer.w(Role::FfnUp).t()?)?;
            let o = (g * u)?.matmul(&layer.w(Role::FfnDown).t()?)?;
            x = (x + norm(&o, Role::PostFfnNorm, layer)?)?;
            if hidden_after.contains(&(l + 1)) {
                hidden.push((l + 1, x.clone()));
            }
        }
        // logits = RMSNorm(x) · outputᵀ, soft-capped where the family does  (b·t, vocab)
        let mut logits = rms_norm(&x, &self.out_norm, cfg.rms_eps)?.matmul(&self.output.t()?)?;
        if let Some(c) = cfg.final_softcap {
            logits = ((logits / c as f64)?.tanh()? * c as f64)?;
        }
        Ok(StudentOutput { logits, hidden })
    }

    /// cos/sin of position × inverse frequency, (t, rope_dim/2), at the global or the
    /// local (sliding-window) RoPE base.
    fn rope_tables(&self, t: usize, local: bool) -> Result<(Tensor, Tensor)> {
        let inv_freq = match local {
            true => self.base.rope_inv_freq_local(),
            false => self.base.rope_inv_freq(),
        };
        let half = inv_freq.len();
        let (mut c, mut s) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for pos in 0..t {
            for &f in inv_freq {
                let (sn, cs) = (pos as f32 * f).sin_cos();
                c.push(cs);
                s.push(sn);
            }
        }
        Ok((self.constant(c, &[t, half])?, self.constant(s, &[t, half])?))
    }

    /// 0 where query row `i` may see key `j` (j ≤ i, and i − j < window), a large
    /// negative number elsewhere, (t, t).
    fn mask(&self, t: usize, window: Option<usize>) -> Result<Tensor> {
        let m: Vec<f32> = (0..t * t)
            .map(|k| {
                let (i, j) = (k / t, k % t);
                let visible = j <= i && window.is_none_or(|w| i - j < w);
                if visible {
                    0.0
                } else {
                    -1e9
                }
            })
            .collect();
        self.constant(m, &[t, t])
    }

    /// An f32 table as a tensor of the student's dtype on its device.
    fn constant(&self, v: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        to_student(v, shape, self.dtype, &self.device)
    }

    /// Rotate the first rope_dim dimensions of each head, (b, n, t, hd) in and out.
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let cfg = &self.base.config;
        let (b, n, t, hd) = x.dims4()?;
        let half = cfg.rope_dim / 2;
        let rot = x.narrow(3, 0, 2 * half)?;
        let rotated = match cfg.rope_style {
            RopeStyle::Interleaved => {
                // pairs (2i, 2i+1)
                let pairs = rot.reshape((b, n, t, half, 2))?;
                let x0 = pairs.narrow(4, 0, 1)?.squeeze(4)?;
                let x1 = pairs.narrow(4, 1, 1)?.squeeze(4)?;
                let y0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
                let y1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
                Tensor::stack(&[y0, y1], 4)?.reshape((b, n, t, 2 * half))?
            }
            RopeStyle::Halves => {
                let x0 = rot.narrow(3, 0, half)?;
                let x1 = rot.narrow(3, half, half)?;
                let y0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
                let y1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
                Tensor::cat(&[y0, y1], 3)?
            }
        };
        if 2 * half == hd {
            Ok(rotated)
        } else {
            Ok(Tensor::cat(
                &[rotated, x.narrow(3, 2 * half, hd - 2 * half)?],
                3,
            )?)
        }
    }

    /// The student's current weights as an inference model (dense f32 matrices).
    pub fn to_model(&self) -> Result<Model> {
        let vec = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let mat = |t: &Tensor| -> Result<Matrix> {
            let (r, c) = t.dims2()?;
            Matrix::from_f32(r, c, vec(t)?)
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let take = |role: Role, required: bool| -> Result<Option<Weight>> {
                let Some(t) = l.get(role) else {
                    return match required {
                        true => Err(Error::MissingTensor(tensors::gguf_name(i, role))),
                        false => Ok(None),
                    };
                };
                Ok(Some(match role.kind() {
                    Kind::Matrix => Weight::Matrix(mat(t)?),
                    Kind::Vector => Weight::Vector(vec(t)?),
                }))
            };
            layers.push(Layer::assemble(
                take,
                &self.base.config.family().roles,
                l.sliding,
            )?);
        }
        let tok_embd = mat(&self.tok_embd)?;
        let output = if self.base.tied() {
            tok_embd.clone()
        } else {
            mat(&self.output)?
        };
        Model::new(
            self.base.config.clone(),
            tok_embd,
            layers,
            vec(&self.out_norm)?,
            output,
        )
    }
}

/// f32 values → a tensor of `dtype` on `device`.
fn to_student(v: Vec<f32>, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// y = x / sqrt(mean(x²) + eps) ⊙ w over the last dimension.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps as f64)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(w)?)
}

/// Softmax over the last dimension. The max is subtracted for range only; softmax does
/// not depend on it, so it is detached.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let e = x
        .broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?
        .exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// log-softmax over the last dimension.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// (b, nkv, t, hd) → (b, nkv·group, t, hd), each KV head serving `group` query heads.
fn repeat_kv(x: &Tensor, group: usize) -> Result<Tensor> {
    if group == 1 {
        return Ok(x.clone());
    }
    let (b, n, t, hd) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, n, group, t, hd))?
        .reshape((b, n * group, t, hd))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distill::loss::{logit_loss, Divergence, LossConfig, TeacherTopK};
    use crate::model::random::{random_model, RandomSpec};
    use crate::model::{KvCache, Logits};

    /// CPU, or the device named by LEANLM_TEST_DEVICE (bench/cuda-distill.sh sets cuda).
    fn dev() -> Device {
        let name = std::env::var("LEANLM_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
        crate::distill::device(&name).unwrap()
    }

    fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
        let mut r = crate::numerics::SplitMix64(seed);
        (0..n)
            .map(|_| (r.next_u64() % vocab as u64) as u32)
            .collect()
    }

    fn logits_of(m: &Model, toks: &[u32]) -> Vec<f32> {
        let mut c: KvCache = m.new_cache();
        m.forward(toks, &mut c, Logits::All).unwrap()
    }

    /// The families' random models: Llama (adjacent-pair RoPE), Qwen2 (halves, biases),
    /// Gemma 3 (Q/K norms, post-norms, GELU, √d scale, a sliding window of 8 keys on
    /// alternate blocks with their own RoPE base).
    fn family_specs() -> Vec<(&'static str, RandomSpec)> {
        let base = RandomSpec::default();
        vec![
            ("llama", base),
            (
                "qwen2",
                RandomSpec {
                    rope_style: RopeStyle::Halves,
                    qkv_bias: true,
                    ..base
                },
            ),
            (
                "gemma3",
                RandomSpec {
                    rope_style: RopeStyle::Halves,
                    gemma: Some(8),
                    ..base
                },
            ),
        ]
    }

    /// The parity matrix: every family × a short and a long sequence (40 ≥ 32 positions,
    /// so that the inference pass's tiled attention runs, and longer than the window) ×
    /// full and partial RoPE, two sequences per batch.
    #[test]
    fn student_forward_equals_the_inference_forward() {
        for (family, spec) in family_specs() {
            for rope_dim in [None, Some(4)] {
                for t in [12, 40] {
                    let spec = RandomSpec { rope_dim, ..spec };
                    let m = random_model(spec, 1).unwrap();
                    assert_eq!(m.config.arch.name(), family);
                    let s =
                        Student::new(&m, StudentOptions::default(), &dev(), DType::F32).unwrap();
                    let toks = tokens(2 * t, 64, 5);
                    let out = s.forward(&toks, 2, t, &[]).unwrap();
                    let got: Vec<f32> = out.logits.flatten_all().unwrap().to_vec1().unwrap();
                    let mut want = logits_of(&m, &toks[..t]);
                    want.extend(logits_of(&m, &toks[t..]));
                    let err = crate::numerics::max_abs_diff(&got, &want);
                    assert!(
                        err < 1e-4,
                        "{family}, rope_dim {rope_dim:?}, t {t}: max |Δlogit| {err}"
                    );
                    // And the student converts back to the same model.
                    let back = logits_of(&s.to_model().unwrap(), &toks[..t]);
                    assert_eq!(back, logits_of(&m, &toks[..t]), "{family}: to_model");
                }
            }
        }
    }

    fn kd_loss(s: &Student, teacher: &TeacherTopK, toks: &[u32], alpha: f64) -> Tensor {
        let out = s.forward(toks, 1, toks.len(), &[]).unwrap();
        let targets: Vec<Option<u32>> = (0..toks.len()).map(|i| toks.get(i + 1).copied()).collect();
        let cfg = LossConfig {
            divergence: Divergence::Kl,
            temperature: 2.0,
            alpha,
        };
        logit_loss(&out.logits, Some(teacher), &targets, &cfg)
            .unwrap()
            .0
    }

    fn teacher_topk(toks: &[u32]) -> TeacherTopK {
        let t = random_model(RandomSpec::default(), 99).unwrap();
        TeacherTopK::from_logits(&logits_of(&t, toks), 64, 8, 2.0)
    }

    /// A random model of `spec`, every tensor trainable (embeddings too).
    fn trainable(spec: RandomSpec, seed: u64, dtype: DType) -> Student {
        let opt = StudentOptions {
            train_embeddings: true,
            keep_zeros_above: None,
        };
        Student::new(&random_model(spec, seed).unwrap(), opt, &dev(), dtype).unwrap()
    }

    #[test]
    fn every_trainable_tensor_receives_a_gradient() {
        for (family, spec) in family_specs() {
            // 2 layers × (2 norms + 7 matrices + 3 biases or 4 Gemma norms) + embedding
            // + final norm
            let per_layer = match family {
                "llama" => 9,
                "qwen2" => 12,
                _ => 13,
            };
            check_every_gradient(&trainable(spec, 2, DType::F32), 2 * per_layer + 2);
        }
    }

    fn check_every_gradient(s: &Student, n_params: usize) {
        let toks = tokens(10, 64, 3);
        let grads = kd_loss(s, &teacher_topk(&toks), &toks, 0.3)
            .backward()
            .unwrap();
        assert_eq!(s.params().len(), n_params);
        for p in s.params() {
            let g = grads
                .get(p.var.as_tensor())
                .unwrap_or_else(|| panic!("{}: no gradient", p.name));
            let norm = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{}: gradient norm {norm}",
                p.name
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        // Qwen2's biases and Gemma 3's norms, GELU and sliding window.
        for (family, spec) in family_specs().into_iter().skip(1) {
            eprintln!("{family}");
            check_finite_differences(&trainable(spec, 4, DType::F64));
        }
    }

    fn check_finite_differences(s: &Student) {
        let toks = tokens(9, 64, 8);
        let teacher = teacher_topk(&toks);
        let loss = |s: &Student| kd_loss(s, &teacher, &toks, 0.5).to_scalar::<f64>().unwrap();
        let grads = kd_loss(s, &teacher, &toks, 0.5).backward().unwrap();
        let h = 1e-5;
        let mut checked = 0;
        for (pi, p) in s.params().iter().enumerate() {
            let w0 = p
                .var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let g = grads
                .get(p.var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            // Three elements of every tensor, spread out.
            for j in [0, w0.len() / 2 + pi % 3, w0.len() - 1] {
                let shape = p.var.as_tensor().shape().clone();
                let mut w = w0.clone();
                w[j] = w0[j] + h;
                p.var
                    .set(&Tensor::from_vec(w.clone(), shape.clone(), &dev()).unwrap())
                    .unwrap();
                let up = loss(s);
                w[j] = w0[j] - h;
                p.var
                    .set(&Tensor::from_vec(w, shape.clone(), &dev()).unwrap())
                    .unwrap();
                let down = loss(s);
                p.var
                    .set(&Tensor::from_vec(w0.clone(), shape, &dev()).unwrap())
                    .unwrap();
                let fd = (up - down) / (2.0 * h);
                let err = (fd - g[j]).abs() / fd.abs().max(g[j].abs()).max(1e-6);
                assert!(
                    err < 1e-4,
                    "{}[{j}]: finite difference {fd}, autograd {}",
                    p.name,
                    g[j]
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 3 * s.params().len());
    }

    #[test]
    fn pruned_weights_stay_zero() {
        let mut m = random_model(RandomSpec::default(), 6).unwrap();
        let w = m.layers[0].w_up.to_f32();
        let zeroed: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 2 == 0 { 0.0 } else { v })
            .collect();
        m.layers[0].w_up =
            Matrix::from_f32(m.layers[0].w_up.rows, m.layers[0].w_up.cols, zeroed).unwrap();
        let s = Student::new(&m, StudentOptions::default(), &dev(), DType::F32).unwrap();
        let masked: Vec<&str> = s
            .params()
            .iter()
            .filter(|p| p.mask.is_some())
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(masked, ["blk.0.ffn_up.weight"]);
        let toks = tokens(10, 64, 3);
        let grads = kd_loss(&s, &teacher_topk(&toks), &toks, 0.0)
            .backward()
            .unwrap();
        let mut sums = Vec::new();
        crate::distill::optim::accumulate(&mut sums, s.params(), &grads, 1.0).unwrap();
        let mut opt = crate::distill::optim::AdamW::new(s.params(), Default::default()).unwrap();
        opt.step(s.params(), &sums, 1e-2).unwrap();
        s.apply_masks().unwrap();
        let after = s.to_model().unwrap().layers[0].w_up.to_f32();
        assert!(after.iter().step_by(2).all(|&v| v == 0.0));
        assert!(after
            .iter()
            .skip(1)
            .step_by(2)
            .zip(w.iter().skip(1).step_by(2))
            .any(|(a, b)| a != b));
    }
}
