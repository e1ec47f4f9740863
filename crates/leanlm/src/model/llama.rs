//! The decoder forward pass of every family (Llama 2/3, SmolLM, Qwen2, Gemma 3), after
//! Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language Models".
//!
//! Pre-norm blocks: x += Attn(RMSNorm(x)); x += MLP(RMSNorm(x)), with rotary position
//! embeddings, grouped-query attention and a gated MLP. What a family adds is read from
//! its description ([`super::arch::Family`]) and from the weights a block has: per-head
//! query/key norms, norms after attention and the MLP, the MLP's activation, embedding
//! scale, sliding-window blocks with their own RoPE base, logit soft-capping. Every layer
//! reads its own head count and MLP width from its weights, so structurally pruned models
//! need no special case. The pass can return logits for every position, stop after any
//! layer (early exit) and report activations to [`Hooks`].

use rayon::prelude::*;

use super::arch::Activation;
use super::attention::{attend, Heads};
use super::config::{Config, RopeStyle};
use super::hooks::{Hooks, LinearSite, NoHooks};
use super::kv_cache::KvCache;
use super::tensors::Role;
use super::vec_math::{gelu_tanh_mul, silu_mul};
use crate::error::{Error, Result};
use crate::quant::activation::Precision;
use crate::quant::Matrix;

/// Values per parallel task of element-wise work (large enough to amortise the task).
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// One transformer block.
#[derive(Clone)]
pub struct Layer {
    pub attn_norm: Vec<f32>, // (d_model)
    pub wq: Matrix,          // (n_heads * head_dim, d_model)
    pub wk: Matrix,          // (n_kv_heads * head_dim, d_model)
    pub wv: Matrix,          // (n_kv_heads * head_dim, d_model)
    pub wo: Matrix,          // (d_model, n_heads * head_dim)
    /// Q/K/V biases (Qwen2).
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// RMSNorm gains over each query and key head (head_dim), before RoPE (Gemma 3).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    /// RMSNorm gains of the attention and MLP outputs before their residual adds (d_model).
    pub post_attn_norm: Option<Vec<f32>>,
    pub post_ffn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>, // (d_model)
    pub w_gate: Matrix,     // (ffn_dim, d_model)
    pub w_up: Matrix,       // (ffn_dim, d_model)
    pub w_down: Matrix,     // (d_model, ffn_dim)
    /// Attends through the model's sliding window with the local RoPE base.
    pub sliding: bool,
}

impl Layer {
    pub fn n_heads(&self, head_dim: usize) -> usize {
        self.wq.rows / head_dim
    }
    pub fn n_kv_heads(&self, head_dim: usize) -> usize {
        self.wk.rows / head_dim
    }
    pub fn ffn_dim(&self) -> usize {
        self.w_gate.rows
    }
    /// The same block with every matrix decoded to dense f32.
    pub fn dequantized(&self) -> Layer {
        let dense = |m: &Matrix| Matrix::from_f32(m.rows, m.cols, m.to_f32()).expect("same shape");
        Layer {
            wq: dense(&self.wq),
            wk: dense(&self.wk),
            wv: dense(&self.wv),
            wo: dense(&self.wo),
            w_gate: dense(&self.w_gate),
            w_up: dense(&self.w_up),
            w_down: dense(&self.w_down),
            ..self.clone()
        }
    }

    /// [`Layer::matrices`], mutable.
    pub fn matrices_mut(&mut self) -> [(&'static str, LinearSite, &mut Matrix); 7] {
        let [q, k, v, o, g, u, d] = Role::MATRICES.map(|r| (r.short(), Self::site(r)));
        [
            (q.0, q.1, &mut self.wq),
            (k.0, k.1, &mut self.wk),
            (v.0, v.1, &mut self.wv),
            (o.0, o.1, &mut self.wo),
            (g.0, g.1, &mut self.w_gate),
            (u.0, u.1, &mut self.w_up),
            (d.0, d.1, &mut self.w_down),
        ]
    }

    /// Each matrix (by its role's short name) with the activation site that feeds it.
    pub fn matrices(&self) -> [(&'static str, LinearSite, &Matrix); 7] {
        Role::MATRICES.map(|r| {
            (
                r.short(),
                Self::site(r),
                self.matrix(r).expect("a matrix role"),
            )
        })
    }

    fn site(r: Role) -> LinearSite {
        r.site().expect("a matrix role")
    }
}

#[derive(Clone)]
pub struct Model {
    pub config: Config,
    pub tok_embd: Matrix, // (vocab, d_model)
    pub layers: Vec<Layer>,
    pub out_norm: Vec<f32>,   // (d_model)
    pub output: Matrix,       // (vocab, d_model); shares tok_embd's bytes when tied
    inv_freq: Vec<f32>,       // (rope_dim / 2)
    inv_freq_local: Vec<f32>, // (rope_dim / 2), sliding-window blocks
    /// How finely quantized matrices round their inputs.
    pub precision: Precision,
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    None,
    /// The last position of each sequence (generation).
    Last,
    /// Every position (speculative verification, the papers' perplexity).
    All,
    /// The last `n` positions of each sequence (llama.cpp's perplexity scores only the
    /// second half of each chunk, and the LM head is the largest matrix).
    Tail(usize),
}

/// Called after block `l` with the hidden state; true ends the pass there.
pub type ExitRule<'a> = dyn FnMut(usize, &[f32]) -> bool + 'a;

/// Options of one forward pass.
pub struct Pass<'a> {
    pub logits: Logits,
    /// Run only layers `0..k`, then the final norm and head (early exit). The K/V of the
    /// skipped layers are filled from the exit hidden state (CALM's propagation), so later
    /// tokens can still attend to these positions in every layer.
    pub exit_after: Option<usize>,
    /// Dynamic early exit: called after each block `l` (0-based) with the hidden state;
    /// returning true ends the pass there as `exit_after = l + 1` would.
    pub exit_when: Option<&'a mut ExitRule<'a>>,
    pub hooks: &'a mut dyn Hooks,
}

impl Pass<'static> {
    pub fn logits(logits: Logits) -> Self {
        Pass {
            logits,
            exit_after: None,
            exit_when: None,
            // NoHooks is zero-sized: leaking a box of it allocates nothing.
            hooks: Box::leak(Box::new(NoHooks)),
        }
    }
}

impl Model {
    pub fn new(
        config: Config,
        tok_embd: Matrix,
        layers: Vec<Layer>,
        out_norm: Vec<f32>,
        output: Matrix,
    ) -> Result<Self> {
        let d = config.d_model;
        let hd = config.head_dim;
        let shape_err = |what: String, expected: Vec<usize>, found: Vec<usize>| Error::Shape {
            what,
            expected,
            found,
        };
        if tok_embd.cols != d
            || output.cols != d
            || output.rows != tok_embd.rows
            || tok_embd.rows == 0
        {
            return Err(shape_err(
                "token embedding / output head".into(),
                vec![config.vocab_size, d],
                vec![output.rows, output.cols],
            ));
        }
        if out_norm.len() != d {
            return Err(shape_err(
                "output_norm".into(),
                vec![d],
                vec![out_norm.len()],
            ));
        }
        for (i, l) in layers.iter().enumerate() {
            let (nh, nkv, ff) = (l.wq.rows / hd, l.wk.rows / hd, l.w_gate.rows);
            // A zero-width block would reach the kernels as empty chunks.
            if nh == 0 || ff == 0 {
                return Err(Error::InvalidInput(format!(
                    "blk.{i} has {nh} query heads and an MLP width of {ff}; both must be at least 1"
                )));
            }
            let checks: [(&str, &Matrix, [usize; 2]); 7] = [
                ("attn_q", &l.wq, [nh * hd, d]),
                ("attn_k", &l.wk, [nkv * hd, d]),
                ("attn_v", &l.wv, [nkv * hd, d]),
                ("attn_output", &l.wo, [d, nh * hd]),
                ("ffn_gate", &l.w_gate, [ff, d]),
                ("ffn_up", &l.w_up, [ff, d]),
                ("ffn_down", &l.w_down, [d, ff]),
            ];
            for (name, m, [r, c]) in checks {
                if m.rows != r || m.cols != c || (name == "attn_q" && m.rows % hd != 0) {
                    return Err(shape_err(
                        format!("blk.{i}.{name}"),
                        vec![r, c],
                        vec![m.rows, m.cols],
                    ));
                }
            }
            if nkv == 0 || nh % nkv != 0 {
                return Err(shape_err(
                    format!("blk.{i} heads (query heads must be a multiple of kv heads)"),
                    vec![nh],
                    vec![nkv],
                ));
            }
            for (role, want) in [
                (Role::AttnNorm, d),
                (Role::FfnNorm, d),
                (Role::PostAttnNorm, d),
                (Role::PostFfnNorm, d),
                (Role::AttnQNorm, hd),
                (Role::AttnKNorm, hd),
            ] {
                if let Some(super::tensors::WeightRef::Vector(v)) = l.get(role) {
                    if v.len() != want {
                        return Err(shape_err(
                            format!("blk.{i}.{}", role.gguf()),
                            vec![want],
                            vec![v.len()],
                        ));
                    }
                }
            }
            for (name, b, n) in [
                ("q", &l.bq, nh * hd),
                ("k", &l.bk, nkv * hd),
                ("v", &l.bv, nkv * hd),
            ] {
                if let Some(b) = b {
                    if b.len() != n {
                        return Err(shape_err(
                            format!("blk.{i}.attn_{name}.bias"),
                            vec![n],
                            vec![b.len()],
                        ));
                    }
                }
            }
        }
        let half = config.rope_dim / 2;
        let inv_freq_of = |theta: f32| -> Vec<f32> {
            (0..half)
                .map(|i| theta.powf(-((2 * i) as f32) / config.rope_dim as f32))
                .collect()
        };
        let inv_freq = inv_freq_of(config.rope_theta);
        let inv_freq_local = inv_freq_of(config.rope_theta_local);
        if config.sliding_window.is_none() && layers.iter().any(|l| l.sliding) {
            return Err(Error::InvalidInput(
                "a block attends through a sliding window but the model has none".into(),
            ));
        }
        let mut config = config;
        config.n_layers = layers.len();
        // Widths as the weights have them (the largest, when structured pruning made the
        // blocks differ).
        if let Some(l) = layers.iter().max_by_key(|l| l.n_heads(hd)) {
            (config.n_heads, config.n_kv_heads) = (l.n_heads(hd), l.n_kv_heads(hd));
        }
        config.ffn_dim = layers.iter().map(Layer::ffn_dim).max().unwrap_or(0);
        config.vocab_size = output.rows;
        Ok(Self {
            config,
            tok_embd,
            layers,
            out_norm,
            output,
            inv_freq,
            inv_freq_local,
            precision: Precision::process_default(),
        })
    }

    /// RoPE inverse frequencies θ^(−2i/rope_dim), i < rope_dim/2.
    pub fn rope_inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// The same at the local RoPE base of sliding-window blocks.
    pub fn rope_inv_freq_local(&self) -> &[f32] {
        &self.inv_freq_local
    }

    /// A fresh cache sized for this model's layers.
    pub fn new_cache(&self) -> KvCache {
        let hd = self.config.head_dim;
        KvCache::new(self.layers.iter().map(|l| l.n_kv_heads(hd) * hd).collect())
    }

    pub fn vocab_size(&self) -> usize {
        self.output.rows
    }

    /// Run one sequence; `tokens` continue what `cache` holds. Returns logits row-major
    /// `(positions, vocab)` for the positions `logits` selects.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits: Logits) -> Result<Vec<f32>> {
        self.forward_batch(&[tokens], &mut [cache], Pass::logits(logits))
    }

    /// Run `b` sequences of equal length `t` together; sequence `s` continues `caches[s]`.
    pub fn forward_batch(
        &self,
        tokens: &[&[u32]],
        caches: &mut [&mut KvCache],
        pass: Pass,
    ) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let (b, t, d) = (
            tokens.len(),
            tokens.first().map_or(0, |s| s.len()),
            cfg.d_model,
        );
        if b == 0 || t == 0 {
            return Err(Error::InvalidInput(
                "nothing to run: the token sequence is empty".into(),
            ));
        }
        if tokens.iter().any(|s| s.len() != t) || caches.len() != b {
            return Err(Error::InvalidInput(
                "batched sequences must have equal length and one cache each".into(),
            ));
        }
        for (s, c) in tokens.iter().zip(caches.iter()) {
            if c.n_layers() != self.layers.len() {
                return Err(Error::InvalidInput(
                    "KV cache was made for another model".into(),
                ));
            }
            if c.len() + t > cfg.context_len {
                return Err(Error::ContextOverflow {
                    needed: c.len() + t,
                    ctx: cfg.context_len,
                });
            }
            if let Some(&bad) = s.iter().find(|&&id| id as usize >= self.vocab_size()) {
                return Err(Error::InvalidInput(format!(
                    "token id {bad} is outside the vocabulary ({})",
                    self.vocab_size()
                )));
            }
        }
        let n_run = match pass.exit_after {
            Some(k) if k == 0 || k > self.layers.len() => {
                return Err(Error::InvalidInput(format!(
                    "exit layer {k} must be in 1..={}",
                    self.layers.len()
                )))
            }
            Some(k) => k,
            None => self.layers.len(),
        };
        let n = b * t;
        let starts: Vec<usize> = caches.iter().map(|c| c.len()).collect();

        // x = token embeddings                                          (n, d)
        let flat: Vec<u32> = tokens.iter().flat_map(|s| s.iter().copied()).collect();
        let mut x = self.embed(&flat);
        let hooks = pass.hooks;
        let mut exit_when = pass.exit_when;
        let mut n_run = n_run;
        for (l, layer) in self.layers[..n_run].iter().enumerate() {
            hooks.block_input(l, &x, n);
            self.block(l, layer, &mut x, t, &starts, caches, hooks);
            hooks.block_output(l, &x, n);
            if let Some(f) = exit_when.as_mut() {
                if l + 1 < n_run && f(l, &x) {
                    n_run = l + 1;
                    break;
                }
            }
        }
        // Early exit: give the skipped layers K/V computed from the exit hidden state.
        for (l, layer) in self.layers.iter().enumerate().skip(n_run) {
            let xn = rms_norm(&x, &layer.attn_norm, cfg.rms_eps);
            self.append_kv(l, layer, &xn, t, &starts, caches);
        }
        for c in caches.iter_mut() {
            c.advance(t);
        }

        // logits = RMSNorm(x) · outputᵀ for the selected rows           (rows, vocab)
        let rows: Vec<usize> = match pass.logits {
            Logits::None => return Ok(Vec::new()),
            Logits::Last => (0..b).map(|s| s * t + t - 1).collect(),
            Logits::All => (0..n).collect(),
            Logits::Tail(k) => (0..b)
                .flat_map(|s| s * t + t.saturating_sub(k)..(s + 1) * t)
                .collect(),
        };
        let mut h = Vec::with_capacity(rows.len() * d);
        for &r in &rows {
            h.extend_from_slice(&x[r * d..(r + 1) * d]);
        }
        Ok(self.head(&h))
    }

    /// logits = RMSNorm(h) · outputᵀ for hidden-state rows `h` `(rows, d_model)`,
    /// soft-capped where the family does so.
    pub fn head(&self, h: &[f32]) -> Vec<f32> {
        let rows = h.len() / self.config.d_model;
        let h = rms_norm(h, &self.out_norm, self.config.rms_eps);
        let mut logits = vec![0f32; rows * self.vocab_size()];
        self.output.matmul(&h, rows, &mut logits, self.precision);
        if let Some(c) = self.config.final_softcap {
            logits.iter_mut().for_each(|v| *v = c * (*v / c).tanh());
        }
        logits
    }

    /// Token embeddings, row-major `(tokens, d_model)`, scaled by √d_model where the
    /// family does so. Ids must be in the vocabulary.
    pub fn embed(&self, tokens: &[u32]) -> Vec<f32> {
        let d = self.config.d_model;
        let scale = self
            .config
            .family()
            .embed_scale_sqrt_d
            .then(|| (d as f32).sqrt());
        let mut x = vec![0f32; tokens.len() * d];
        for (r, &id) in tokens.iter().enumerate() {
            let row = &mut x[r * d..(r + 1) * d];
            row.copy_from_slice(&self.tok_embd.row_f32(id as usize));
            if let Some(s) = scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
        x
    }

    /// Run `layer` in the place of block `l` over `b` independent sequences of `t`
    /// positions each (row-major `(b·t, d_model)`, starting at position 0), updating `x` in
    /// place. Layer-by-layer calibration feeds each block the previous block's outputs this
    /// way, with the block's weights as they stand during pruning.
    pub fn run_block(
        &self,
        l: usize,
        layer: &Layer,
        x: &mut [f32],
        b: usize,
        t: usize,
        hooks: &mut dyn Hooks,
    ) -> Result<()> {
        let d = self.config.d_model;
        let hd = self.config.head_dim;
        let shape_ok = layer.wq.cols == d && layer.n_kv_heads(hd) > 0;
        if l >= self.layers.len()
            || !shape_ok
            || x.len() != b * t * d
            || t > self.config.context_len
        {
            return Err(Error::InvalidInput(format!(
                "run_block: layer {l} of {}, {} values for {b}×{t} rows of width {d}",
                self.layers.len(),
                x.len()
            )));
        }
        let mut owned: Vec<KvCache> = (0..b).map(|_| self.new_cache()).collect();
        let mut caches: Vec<&mut KvCache> = owned.iter_mut().collect();
        let starts = vec![0; b];
        hooks.block_input(l, x, b * t);
        self.block(l, layer, x, t, &starts, &mut caches, hooks);
        hooks.block_output(l, x, b * t);
        Ok(())
    }

    /// One block over `x` (n = b·t rows), updating x in place and appending to the caches.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        l: usize,
        layer: &Layer,
        x: &mut [f32],
        t: usize,
        starts: &[usize],
        caches: &mut [&mut KvCache],
        hooks: &mut dyn Hooks,
    ) {
        let cfg = &self.config;
        let (d, hd) = (cfg.d_model, cfg.head_dim);
        let n = x.len() / d;
        let nh = layer.n_heads(hd);

        // Attention: x += [PostNorm] Wo · attn(RoPE([QNorm] Wq·xn), RoPE([KNorm] Wk·xn), Wv·xn)
        let xn = rms_norm(x, &layer.attn_norm, cfg.rms_eps); // (n, d)
        hooks.linear_input(l, LinearSite::Qkv, &xn, n);
        let mut q = vec![0f32; n * nh * hd]; // (n, nh·hd)
        layer.wq.matmul(&xn, n, &mut q, self.precision);
        add_bias(&mut q, layer.bq.as_deref());
        norm_in_place(&mut q, layer.q_norm.as_deref(), cfg.rms_eps);
        self.rope(&mut q, nh, t, starts, layer.sliding);
        self.append_kv(l, layer, &xn, t, starts, caches);
        let att = self.attention(l, layer, &q, t, starts, caches); // (n, nh·hd)
        hooks.linear_input(l, LinearSite::AttnOut, &att, n);
        let mut o = vec![0f32; n * d];
        layer.wo.matmul(&att, n, &mut o, self.precision);
        norm_in_place(&mut o, layer.post_attn_norm.as_deref(), cfg.rms_eps);
        add_into(x, &o);

        // MLP: x += [PostNorm] W_down · (act(W_gate·xn) ⊙ W_up·xn)
        let xn = rms_norm(x, &layer.ffn_norm, cfg.rms_eps);
        hooks.linear_input(l, LinearSite::GateUp, &xn, n);
        let ff = layer.ffn_dim();
        let (mut g, mut u) = (vec![0f32; n * ff], vec![0f32; n * ff]); // (n, ff)
        layer.w_gate.matmul(&xn, n, &mut g, self.precision);
        layer.w_up.matmul(&xn, n, &mut u, self.precision);
        let gate = match cfg.family().activation {
            Activation::SiluGlu => silu_mul,
            Activation::GeluTanhGlu => gelu_tanh_mul,
        };
        g.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(u.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(g, u)| gate(g, u));
        hooks.linear_input(l, LinearSite::Down, &g, n);
        layer.w_down.matmul(&g, n, &mut o, self.precision);
        norm_in_place(&mut o, layer.post_ffn_norm.as_deref(), cfg.rms_eps);
        add_into(x, &o);
    }

    /// k = RoPE([KNorm] Wk·xn), v = Wv·xn, appended to each sequence's cache.
    fn append_kv(
        &self,
        l: usize,
        layer: &Layer,
        xn: &[f32],
        t: usize,
        starts: &[usize],
        caches: &mut [&mut KvCache],
    ) {
        let hd = self.config.head_dim;
        let n = xn.len() / self.config.d_model;
        let nkv = layer.n_kv_heads(hd);
        let w = nkv * hd;
        let (mut k, mut v) = (vec![0f32; n * w], vec![0f32; n * w]);
        layer.wk.matmul(xn, n, &mut k, self.precision);
        layer.wv.matmul(xn, n, &mut v, self.precision);
        add_bias(&mut k, layer.bk.as_deref());
        add_bias(&mut v, layer.bv.as_deref());
        norm_in_place(&mut k, layer.k_norm.as_deref(), self.config.rms_eps);
        self.rope(&mut k, nkv, t, starts, layer.sliding);
        for (s, c) in caches.iter_mut().enumerate() {
            c.append(
                l,
                &k[s * t * w..(s + 1) * t * w],
                &v[s * t * w..(s + 1) * t * w],
            );
        }
    }

    /// Causal attention of the new queries over each sequence's cache.
    fn attention(
        &self,
        l: usize,
        layer: &Layer,
        q: &[f32],
        t: usize,
        starts: &[usize],
        caches: &[&mut KvCache],
    ) -> Vec<f32> {
        let head_dim = self.config.head_dim;
        let heads = Heads {
            n_heads: layer.n_heads(head_dim),
            n_kv_heads: layer.n_kv_heads(head_dim),
            head_dim,
            window: self.config.sliding_window.filter(|_| layer.sliding),
        };
        let kv: Vec<(&[f32], &[f32])> = caches.iter().map(|c| c.layer(l)).collect();
        attend(q, t, starts, &kv, heads)
    }

    /// Rotate the first `rope_dim` dimensions of each head by its absolute position, at
    /// the local RoPE base in sliding-window blocks.
    fn rope(&self, x: &mut [f32], heads: usize, t: usize, starts: &[usize], local: bool) {
        let (hd, half) = (self.config.head_dim, self.config.rope_dim / 2);
        let inv_freq = if local {
            &self.inv_freq_local
        } else {
            &self.inv_freq
        };
        let width = heads * hd;
        let (mut cos, mut sin) = (vec![0f32; half], vec![0f32; half]);
        for (r, row) in x.chunks_exact_mut(width).enumerate() {
            let pos = (starts[r / t] + r % t) as f32;
            for i in 0..half {
                let (s, c) = (pos * inv_freq[i]).sin_cos();
                cos[i] = c;
                sin[i] = s;
            }
            for head in row.chunks_exact_mut(hd) {
                for i in 0..half {
                    let (a, b) = match self.config.rope_style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Halves => (i, i + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[i] - x1 * sin[i];
                    head[b] = x0 * sin[i] + x1 * cos[i];
                }
            }
        }
    }

    /// The same model with every matrix decoded to dense f32: the reference the quantized
    /// kernels are measured against, and the starting point of transforms.
    pub fn dequantized(&self) -> Model {
        let dense = |m: &Matrix| Matrix::from_f32(m.rows, m.cols, m.to_f32()).expect("same shape");
        let tok_embd = dense(&self.tok_embd);
        let output = if self.tied() {
            tok_embd.clone()
        } else {
            dense(&self.output)
        };
        let layers = self.layers.iter().map(Layer::dequantized).collect();
        Model {
            tok_embd,
            output,
            layers,
            ..self.clone()
        }
    }

    /// Parameter count (embeddings counted once when tied).
    pub fn n_params(&self) -> usize {
        let d = self.config.d_model;
        let mut n = self.tok_embd.rows * d + d;
        if !self.tied() {
            n += self.output.rows * d;
        }
        for l in &self.layers {
            n += l
                .weights()
                .map(|(_, w)| match w {
                    super::tensors::WeightRef::Matrix(m) => m.rows * m.cols,
                    super::tensors::WeightRef::Vector(v) => v.len(),
                })
                .sum::<usize>();
        }
        n
    }

    /// Whether the output head reuses the token embedding.
    pub fn tied(&self) -> bool {
        use crate::quant::matrix::Storage;
        match (&self.tok_embd.storage, &self.output.storage) {
            (Storage::F32(a), Storage::F32(b)) => std::sync::Arc::ptr_eq(a, b),
            (Storage::Quant { bytes: a, .. }, Storage::Quant { bytes: b, .. }) => {
                std::ptr::eq(a.as_slice(), b.as_slice())
            }
            _ => false,
        }
    }

    /// Multiply-accumulates ×2 per token at context position `ctx` (weights + attention).
    pub fn flops_per_token(&self, ctx: usize) -> f64 {
        let hd = self.config.head_dim;
        let mut macs = (self.output.rows * self.output.cols) as f64;
        for l in &self.layers {
            macs += l
                .matrices()
                .iter()
                .map(|(_, _, m)| (m.rows * m.cols) as f64)
                .sum::<f64>();
            macs += 2.0 * (l.n_heads(hd) * hd * ctx) as f64; // q·k and p·v
        }
        2.0 * macs
    }
}

/// y = x / sqrt(mean(x²) + eps) ⊙ w, row by row.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((y, &x), &w) in yr.iter_mut().zip(xr).zip(w) {
            *y = x * inv * w;
        }
    }
    y
}

/// RMSNorm over each `w.len()`-wide slice of `x`, in place, when the block has that norm:
/// per head for query/key norms, per row for the norms after attention and the MLP.
fn norm_in_place(x: &mut [f32], w: Option<&[f32]>, eps: f32) {
    if let Some(w) = w {
        let y = rms_norm(x, w, eps);
        x.copy_from_slice(&y);
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            add_into(row, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_hand_checked() {
        // x = [3, 4]: mean(x²) = 12.5, 1/sqrt(12.5) = 0.28284
        let y = rms_norm(&[3.0, 4.0], &[1.0, 2.0], 0.0);
        assert!((y[0] - 0.848_528).abs() < 1e-5);
        assert!((y[1] - 2.262_742).abs() < 1e-5);
    }
}
