//! The distillation loop: micro-batches of data windows, the teacher's top-k (and hidden
//! states), the student's loss and gradients accumulated over `accum` micro-batches,
//! one clipped AdamW step on the scheduled rate, masks re-applied, and every so often a
//! held-out evaluation and an atomic checkpoint.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use serde::Serialize;

use super::checkpoint::{self, CheckpointState};
use super::data::Dataset;
use super::loss::{
    hidden_loss, logit_loss, Divergence, HiddenLoss, LossConfig, LossTerms, TeacherTopK,
};
use super::optim::{accumulate, AdamW, AdamWConfig, Schedule};
use super::student::{Param, Student};
use super::teacher::{data_fingerprint, Teacher};
use crate::error::{Error, Result};
use crate::measure::kld::log_softmax as log_softmax_row;
use crate::measure::perplexity::{perplexity_of, Chunks};
use crate::model::{Logits, Model};
use crate::run::sampler::argmax;

/// Hidden-state matching of the student after `student` blocks to the teacher after
/// `teacher` blocks (0 = the embeddings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HiddenPair {
    pub student: usize,
    pub teacher: usize,
}

impl HiddenPair {
    /// "S:T,S:T,…"
    pub fn parse_list(s: &str) -> Result<Vec<HiddenPair>> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                let bad = || {
                    Error::InvalidInput(format!(
                        "--hidden '{p}': expected STUDENT_LAYER:TEACHER_LAYER"
                    ))
                };
                let (a, b) = p.trim().split_once(':').ok_or_else(bad)?;
                Ok(HiddenPair {
                    student: a.parse().map_err(|_| bad())?,
                    teacher: b.parse().map_err(|_| bad())?,
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub accum: usize,
    pub adamw: AdamWConfig,
    pub schedule: Schedule,
    pub warmup: usize,
    /// The schedule decays to this fraction of the peak rate.
    pub min_lr_ratio: f64,
    pub loss: LossConfig,
    pub hidden: Vec<HiddenPair>,
    pub hidden_loss: HiddenLoss,
    pub hidden_weight: f64,
    /// Evaluate every this many steps (and after the last).
    pub eval_every: usize,
    /// Held-out windows per evaluation.
    pub eval_windows: usize,
    /// Checkpoint every this many steps (and after the last, and on interruption).
    pub save_every: usize,
    pub checkpoint: PathBuf,
    pub seed: u64,
}

impl TrainConfig {
    /// The settings a resumed run must share with the one that wrote the checkpoint.
    pub fn fingerprint(&self, data: &Dataset, student: &Student) -> String {
        format!(
            "data={:016x} seq={} holdout={} seed={} steps={} batch={} accum={} lr={} wd={} clip={:?} \
             schedule={:?} warmup={} min_lr={} loss={} tau={} alpha={} hidden={:?} {:?}×{} \
             student_layers={} params={}",
            data_fingerprint(data),
            data.seq,
            data.n_windows - data.n_train,
            self.seed,
            self.steps,
            self.batch,
            self.accum,
            self.adamw.lr,
            self.adamw.weight_decay,
            self.adamw.clip,
            self.schedule,
            self.warmup,
            self.min_lr_ratio,
            self.loss.divergence.name(),
            self.loss.temperature,
            self.loss.alpha,
            self.hidden,
            self.hidden_loss,
            self.hidden_weight,
            student.n_layers(),
            student.params().len(),
        )
    }

    pub fn tokens_per_step(&self, seq: usize) -> usize {
        self.batch * self.accum * seq
    }
}

/// One line of the training log.
#[derive(Debug, Clone, Serialize)]
pub struct StepLog {
    pub step: usize,
    pub loss: f64,
    pub divergence: f64,
    pub ce: f64,
    pub hidden: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
}

/// Held-out figures.
#[derive(Debug, Clone, Serialize)]
pub struct EvalLog {
    pub step: usize,
    /// The training loss on held-out windows.
    pub heldout_loss: f64,
    /// Full-vocabulary KL(teacher ‖ student) at τ = 1 on held-out windows, nats/token.
    pub heldout_kld: f64,
    /// Same most-likely token as the teacher, fraction of held-out positions.
    pub heldout_same_top: f64,
    /// Perplexity on the evaluation text, when one was given.
    pub ppl: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LogLine {
    Step(StepLog),
    Eval(EvalLog),
}

pub struct Outcome {
    pub steps_done: usize,
    pub interrupted: bool,
    pub last_eval: Option<EvalLog>,
}

pub struct Trainer<'a> {
    pub cfg: TrainConfig,
    pub student: Student,
    params: Vec<Param>,
    /// Learned projections student width → teacher width, one per hidden pair whose
    /// widths differ.
    projections: Vec<Option<Tensor>>,
    opt: AdamW,
    teacher_model: &'a Model,
    teacher: Teacher<'a>,
    data: &'a Dataset,
    ppl_chunks: Option<&'a Chunks>,
    fingerprint: String,
    pub step: usize,
}

impl<'a> Trainer<'a> {
    /// Check every setting against the models and data before any work starts.
    pub fn new(
        cfg: TrainConfig,
        student: Student,
        teacher_model: &'a Model,
        teacher: Teacher<'a>,
        data: &'a Dataset,
        ppl_chunks: Option<&'a Chunks>,
    ) -> Result<Self> {
        let sm = student.to_model()?;
        if sm.vocab_size() != teacher_model.vocab_size() {
            return Err(Error::InvalidInput(format!(
                "teacher and student vocabularies differ ({} vs {} tokens): distillation compares \
                 them token by token",
                teacher_model.vocab_size(),
                sm.vocab_size()
            )));
        }
        for p in &cfg.hidden {
            if p.student > student.n_layers() || p.teacher > teacher_model.layers.len() {
                return Err(Error::InvalidInput(format!(
                    "--hidden {}:{}: the student has layers 0..={} and the teacher 0..={} \
                     (0 = embeddings, L = after block L)",
                    p.student,
                    p.teacher,
                    student.n_layers(),
                    teacher_model.layers.len()
                )));
            }
        }
        if cfg.steps == 0 || cfg.batch == 0 || cfg.accum == 0 {
            return Err(Error::InvalidInput(
                "--steps, --batch and --accum must be at least 1".into(),
            ));
        }
        if data.seq > teacher_model.config.context_len {
            return Err(Error::InvalidInput(format!(
                "--seq {} is longer than the teacher's context ({})",
                data.seq, teacher_model.config.context_len
            )));
        }
        if cfg.loss.temperature.is_nan()
            || cfg.loss.temperature <= 0.0
            || !(0.0..=1.0).contains(&cfg.loss.alpha)
        {
            return Err(Error::InvalidInput(
                "--temperature must be > 0 and --alpha in [0, 1]".into(),
            ));
        }
        let mut params = student.params().to_vec();
        let (ds, dt) = (student.d_model(), teacher_model.config.d_model);
        let mut projections = Vec::new();
        for (i, _) in cfg.hidden.iter().enumerate() {
            if ds == dt {
                projections.push(None);
                continue;
            }
            // Identity on the shared leading dimensions, zero elsewhere: a neutral start.
            let eye: Vec<f32> = (0..dt * ds)
                .map(|j| if j / ds == j % ds { 1.0 } else { 0.0 })
                .collect();
            let t = Tensor::from_vec(eye, (dt, ds), &candle_core::Device::Cpu)?
                .to_dtype(student.dtype())?
                .to_device(student.device())?;
            let var = Var::from_tensor(&t)?;
            projections.push(Some(var.as_tensor().clone()));
            params.push(Param {
                name: format!("hidden_projection.{i}"),
                var,
                mask: None,
                decay: true,
            });
        }
        let opt = AdamW::new(&params, cfg.adamw)?;
        let fingerprint = cfg.fingerprint(data, &student);
        Ok(Self {
            cfg,
            student,
            params,
            projections,
            opt,
            teacher_model,
            teacher,
            data,
            ppl_chunks,
            fingerprint,
            step: 0,
        })
    }

    /// Continue from the checkpoint file, if there is one; returns the step it holds.
    pub fn resume(&mut self) -> Result<Option<usize>> {
        if !self.cfg.checkpoint.exists() {
            return Ok(None);
        }
        let st = checkpoint::load(
            &self.cfg.checkpoint,
            &self.params,
            &mut self.opt,
            &self.fingerprint,
        )?;
        self.step = st.step;
        Ok(Some(st.step))
    }

    pub fn save(&self) -> Result<()> {
        checkpoint::save(
            &self.cfg.checkpoint,
            &self.params,
            &self.opt,
            &CheckpointState {
                step: self.step,
                fingerprint: self.fingerprint.clone(),
            },
        )
    }

    fn targets(&self, windows: &[usize]) -> Vec<Option<u32>> {
        let t = self.data.seq;
        windows
            .iter()
            .flat_map(|&w| {
                let win = self.data.window(w);
                (0..t).map(move |i| win.get(i + 1).copied())
            })
            .collect()
    }

    /// Loss of the student on `windows`: (scalar tensor, terms).
    fn loss_on(&mut self, windows: &[usize]) -> Result<(Tensor, LossTerms)> {
        let (b, t) = (windows.len(), self.data.seq);
        let needs_teacher =
            self.cfg.loss.divergence != Divergence::Ce || !self.cfg.hidden.is_empty();
        let t_layers: Vec<usize> = self.cfg.hidden.iter().map(|p| p.teacher).collect();
        let s_layers: Vec<usize> = self.cfg.hidden.iter().map(|p| p.student).collect();
        let tb = if needs_teacher {
            Some(self.teacher.batch(self.data, windows, &t_layers)?)
        } else {
            None
        };
        let tokens: Vec<u32> = windows
            .iter()
            .flat_map(|&w| self.data.window(w).iter().copied())
            .collect();
        let out = self.student.forward(&tokens, b, t, &s_layers)?;
        let targets = self.targets(windows);
        let topk: Option<&TeacherTopK> = tb.as_ref().map(|b| &b.topk);
        let (mut loss, mut terms) = logit_loss(&out.logits, topk, &targets, &self.cfg.loss)?;
        if let Some(tb) = &tb {
            let mut hsum = 0.0;
            for (i, pair) in self.cfg.hidden.iter().enumerate() {
                let find = |v: &[(usize, Tensor)], k| {
                    v.iter().find(|(l, _)| *l == k).map(|(_, t)| t.clone())
                };
                let hs = find(&out.hidden, pair.student)
                    .ok_or_else(|| Error::InvalidInput("student hidden state missing".into()))?;
                let ht = tb
                    .hidden
                    .iter()
                    .find(|(l, _)| *l == pair.teacher)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| Error::InvalidInput("teacher hidden state missing".into()))?;
                let dt = self.teacher_model.config.d_model;
                let ht = Tensor::from_vec(ht, (b * t, dt), self.student.device())?
                    .to_dtype(self.student.dtype())?;
                let hs = match &self.projections[i] {
                    Some(p) => hs.matmul(&p.t()?)?,
                    None => hs,
                };
                let h = hidden_loss(&hs, &ht, self.cfg.hidden_loss)?;
                hsum += h.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                loss = (loss + (h * self.cfg.hidden_weight)?)?;
            }
            terms.hidden = hsum;
            terms.total += self.cfg.hidden_weight * hsum;
        }
        Ok((loss, terms))
    }

    /// Train up to `cfg.steps`, logging through `log`; stops early (with a checkpoint)
    /// when `stop` is set.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        log: &mut dyn FnMut(&LogLine) -> Result<()>,
    ) -> Result<Outcome> {
        let cfg = self.cfg.clone();
        let started = Instant::now();
        let mut last_eval = None;
        if self.step == 0 && cfg.eval_every > 0 {
            // Where the student starts, for the before/after comparison.
            let e = self.evaluate()?;
            log(&LogLine::Eval(e.clone()))?;
        }
        while self.step < cfg.steps {
            if stop.load(Ordering::SeqCst) {
                self.save()?;
                return Ok(Outcome {
                    steps_done: self.step,
                    interrupted: true,
                    last_eval,
                });
            }
            let t0 = Instant::now();
            let mut sums: Vec<Tensor> = Vec::new();
            let mut acc = LossTerms::default();
            for a in 0..cfg.accum {
                let first = (self.step * cfg.accum + a) * cfg.batch;
                let windows: Vec<usize> = (first..first + cfg.batch)
                    .map(|i| self.data.train_window(i))
                    .collect();
                let (loss, terms) = self.loss_on(&windows)?;
                let grads = loss.backward()?;
                accumulate(&mut sums, &self.params, &grads, 1.0 / cfg.accum as f64)?;
                let w = 1.0 / cfg.accum as f64;
                acc.total += terms.total * w;
                acc.divergence += terms.divergence * w;
                acc.ce += terms.ce * w;
                acc.hidden += terms.hidden * w;
            }
            // A NaN loss would only make NaN weights: stop at the step it appears.
            finite(self.step + 1, "the training loss", acc.total)?;
            let lr = cfg.adamw.lr
                * cfg
                    .schedule
                    .factor(self.step, cfg.steps, cfg.warmup, cfg.min_lr_ratio);
            let info = self.opt.step(&self.params, &sums, lr)?;
            self.student.apply_masks()?;
            self.step += 1;
            let step_tokens = cfg.tokens_per_step(self.data.seq);
            log(&LogLine::Step(StepLog {
                step: self.step,
                loss: acc.total,
                divergence: acc.divergence,
                ce: acc.ce,
                hidden: acc.hidden,
                lr,
                grad_norm: info.grad_norm,
                tokens: self.step * step_tokens,
                tokens_per_s: step_tokens as f64 / t0.elapsed().as_secs_f64(),
                elapsed_s: started.elapsed().as_secs_f64(),
            }))?;
            let last = self.step == cfg.steps;
            if last || (cfg.eval_every > 0 && self.step.is_multiple_of(cfg.eval_every)) {
                let e = self.evaluate()?;
                // The last update is only seen here: weights it made infinite give a NaN
                // held-out loss, and such a student must not be written.
                finite(self.step, "the held-out loss", e.heldout_loss)?;
                finite(self.step, "the held-out KLD", e.heldout_kld)?;
                log(&LogLine::Eval(e.clone()))?;
                last_eval = Some(e);
            }
            if last || (cfg.save_every > 0 && self.step.is_multiple_of(cfg.save_every)) {
                self.save()?;
            }
        }
        Ok(Outcome {
            steps_done: self.step,
            interrupted: false,
            last_eval,
        })
    }

    /// Held-out loss, KLD and top-1 agreement against the teacher, and PPL.
    pub fn evaluate(&mut self) -> Result<EvalLog> {
        let held: Vec<usize> = self
            .data
            .held_out()
            .take(self.cfg.eval_windows.max(1))
            .collect();
        let mut loss = 0.0;
        for w in &held {
            let (_, terms) = self.loss_on(&[*w])?;
            loss += terms.total;
        }
        let student = self.student.to_model()?;
        let (mut kld, mut same, mut n) = (0.0, 0usize, 0usize);
        let v = student.vocab_size();
        for &w in &held {
            let win = self.data.window(w);
            let lt = self.teacher_model.forward(
                win,
                &mut self.teacher_model.new_cache(),
                Logits::All,
            )?;
            let ls = student.forward(win, &mut student.new_cache(), Logits::All)?;
            for (rt, rs) in lt.chunks_exact(v).zip(ls.chunks_exact(v)) {
                let (pt, ps) = (log_softmax_row(rt), log_softmax_row(rs));
                kld += pt
                    .iter()
                    .zip(&ps)
                    .map(|(&a, &b)| (a as f64).exp() * (a as f64 - b as f64))
                    .sum::<f64>();
                same += (argmax(rt) == argmax(rs)) as usize;
                n += 1;
            }
        }
        let ppl = match self.ppl_chunks {
            Some(chunks) => Some(perplexity_of(&student, chunks, |_, _, _| {})?.nll.ppl()),
            None => None,
        };
        Ok(EvalLog {
            step: self.step,
            heldout_loss: loss / held.len().max(1) as f64,
            heldout_kld: kld / n.max(1) as f64,
            heldout_same_top: same as f64 / n.max(1) as f64,
            ppl,
        })
    }
}

/// `value` (a figure of `step`) as an error when it is not a finite number.
fn finite(step: usize, what: &str, value: f64) -> Result<()> {
    match value.is_finite() {
        true => Ok(()),
        false => Err(Error::NonFinite {
            step,
            what: what.into(),
            value,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distill::{Student, StudentOptions};
    use crate::model::random::{random_model, RandomSpec};

    fn run(student_width: usize, steps: usize, dir: &std::path::Path) -> Vec<StepLog> {
        let teacher = random_model(RandomSpec::default(), 1).unwrap();
        let spec = RandomSpec {
            d_model: student_width,
            layers: 1,
            ..RandomSpec::default()
        };
        let student = Student::new(
            &random_model(spec, 2).unwrap(),
            StudentOptions::default(),
            &candle_core::Device::Cpu,
            DType::F32,
        )
        .unwrap();
        let mut r = crate::numerics::SplitMix64(5);
        let tokens = (0..400).map(|_| (r.next_u64() % 64) as u32).collect();
        let data = Dataset::from_tokens(tokens, 16, 0.1, 0).unwrap();
        let cfg = TrainConfig {
            steps,
            batch: 2,
            accum: 2,
            adamw: AdamWConfig {
                lr: 1e-2,
                ..AdamWConfig::default()
            },
            schedule: Schedule::Constant,
            warmup: 1,
            min_lr_ratio: 0.1,
            loss: LossConfig {
                divergence: Divergence::Kl,
                temperature: 1.0,
                alpha: 0.0,
            },
            hidden: vec![HiddenPair {
                student: 1,
                teacher: 2,
            }],
            hidden_loss: HiddenLoss::Cosine,
            hidden_weight: 1.0,
            eval_every: 0,
            eval_windows: 1,
            save_every: 0,
            checkpoint: dir.join(format!("w{student_width}.ckpt")),
            seed: 0,
        };
        let live = Teacher::Live {
            model: &teacher,
            k: 8,
            tau: 1.0,
        };
        let mut t = Trainer::new(cfg, student, &teacher, live, &data, None).unwrap();
        let mut steps_logged = Vec::new();
        t.run(&AtomicBool::new(false), &mut |l| {
            if let LogLine::Step(s) = l {
                steps_logged.push(s.clone());
            }
            Ok(())
        })
        .unwrap();
        steps_logged
    }

    #[test]
    fn hidden_matching_trains_with_and_without_a_projection() {
        let dir = std::env::temp_dir().join(format!("leanlm-train-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Same width (no projection), then a narrower student (learned 24 → 32 map).
        for width in [32, 24] {
            let log = run(width, 12, &dir);
            let (first, last) = (&log[0], &log[log.len() - 1]);
            assert!(first.hidden > 0.0 && first.divergence > 0.0, "{first:?}");
            assert!(
                last.loss < first.loss && last.hidden < first.hidden,
                "width {width}: {first:?} → {last:?}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
