//! Several generations at once on one model: continuous batching over a fixed number of
//! slots, the engine behind `leanlm serve`.
//!
//! Requests wait in a bounded queue. A free slot takes the next one and runs its prompt;
//! then every step decodes one token for all busy slots in a single batched forward pass
//! (each slot continues its own KV cache, at its own position), so the weights are read
//! once per step however many requests share it. A request that finishes, or whose
//! receiver goes away, leaves at that step and its slot takes the next request at the
//! following one. A prompt runs on its own while the other slots wait one step (llama.cpp's
//! server splits long prompts into chunks between steps; not done here).
//!
//! The engine knows nothing of HTTP or async runtimes: results go to a callback per
//! request, which ends the request by returning `ControlFlow::Break`.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use super::sampler::{Sampler, SamplerConfig};
use super::stop::StopStrings;
use crate::error::{Error, Result};
use crate::model::{KvCache, Logits, Model, Pass};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// One generation to run.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Tokens that end the generation and are not part of the text (end of turn, EOS).
    pub stop_tokens: Vec<u32>,
    /// Text that ends the generation; never part of the text.
    pub stop_strings: Vec<String>,
    /// Report each chosen token's log-probability and this many alternatives.
    pub top_logprobs: Option<usize>,
}

/// A chosen token's log-probability under the model (before any sampling filter), and
/// the most likely tokens at that position.
#[derive(Debug, Clone, PartialEq)]
pub struct Logprob {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub finish: Finish,
    pub prompt_tokens: usize,
    /// Tokens generated, not counting the end token that stopped them.
    pub completion_tokens: usize,
    /// Text that was held back as a possible stop string and turned out not to be one.
    pub tail: String,
    /// Seconds from admission to the first token, and from there to the end.
    pub prompt_secs: f64,
    pub decode_secs: f64,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// A generated token and the text it completes (possibly empty: part of a character,
    /// or held back as the start of a stop string).
    Token {
        id: u32,
        text: String,
        logprob: Option<Logprob>,
    },
    Done(Summary),
    /// The request could not run (its prompt does not fit, a bad sampler option).
    Failed(String),
}

/// Where a request's events go; `Break` ends the request and frees its slot.
pub type Sink = Box<dyn FnMut(Event) -> ControlFlow<()> + Send>;

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The queue is full: try again later.
    Busy,
    /// The engine has stopped.
    Closed,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub cancelled: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub queued: AtomicUsize,
    pub busy_slots: AtomicUsize,
    /// Microseconds spent in prompts and in decode steps.
    pub prompt_micros: AtomicU64,
    pub decode_micros: AtomicU64,
    /// Tokens decoded in batched steps (all slots together).
    pub step_tokens: AtomicU64,
}

struct Job {
    request: Request,
    sink: Sink,
}

/// The submitting side: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Engine {
    jobs: SyncSender<Job>,
    stats: Arc<Stats>,
    slots: usize,
}

/// The computing side: owns the model; [`Worker::run`] serves until every [`Engine`] is
/// dropped and the last request has finished.
pub struct Worker {
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    jobs: Receiver<Job>,
    stats: Arc<Stats>,
    slots: usize,
}

/// An engine with `slots` concurrent generations and room for `queue` waiting requests.
pub fn engine(
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    slots: usize,
    queue: usize,
) -> Result<(Engine, Worker)> {
    if slots == 0 || slots > 256 {
        return Err(Error::InvalidInput(format!(
            "--parallel {slots}: the slot count must be between 1 and 256"
        )));
    }
    let (tx, rx) = sync_channel(queue);
    let stats = Arc::new(Stats::default());
    Ok((
        Engine {
            jobs: tx,
            stats: stats.clone(),
            slots,
        },
        Worker {
            model,
            tokenizer,
            jobs: rx,
            stats,
            slots,
        },
    ))
}

impl Engine {
    /// Queue a request; its events go to `sink` from the worker's thread.
    pub fn submit(&self, request: Request, sink: Sink) -> std::result::Result<(), Rejected> {
        self.stats.queued.fetch_add(1, Relaxed);
        match self.jobs.try_send(Job { request, sink }) {
            Ok(()) => {
                self.stats.requests.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(e) => {
                self.stats.queued.fetch_sub(1, Relaxed);
                self.stats.rejected.fetch_add(1, Relaxed);
                Err(match e {
                    TrySendError::Full(_) => Rejected::Busy,
                    TrySendError::Disconnected(_) => Rejected::Closed,
                })
            }
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn slots(&self) -> usize {
        self.slots
    }
}

struct Slot {
    cache: KvCache,
    sampler: Sampler,
    decoder: StreamDecoder,
    stops: StopStrings,
    request: Request,
    sink: Sink,
    /// Chosen and sent, not yet in the cache.
    last: u32,
    generated: usize,
    started: Instant,
    first_token: Option<Instant>,
    prompt_secs: f64,
}

impl Worker {
    pub fn run(self) {
        let mut busy: Vec<Slot> = Vec::with_capacity(self.slots);
        loop {
            while busy.len() < self.slots {
                let job = if busy.is_empty() {
                    match self.jobs.recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    }
                } else {
                    match self.jobs.try_recv() {
                        Ok(j) => j,
                        Err(_) => break,
                    }
                };
                self.stats.queued.fetch_sub(1, Relaxed);
                if let Some(slot) = self.start(job) {
                    busy.push(slot);
                }
                self.stats.busy_slots.store(busy.len(), Relaxed);
            }
            if !busy.is_empty() {
                self.step(&mut busy);
                self.stats.busy_slots.store(busy.len(), Relaxed);
            }
        }
    }

    /// Run a request's prompt and choose its first token; `None` when it already ended.
    fn start(&self, job: Job) -> Option<Slot> {
        let Job { request, mut sink } = job;
        let started = Instant::now();
        let fail = |sink: &mut Sink, e: Error| {
            let _ = sink(Event::Failed(e.to_string()));
        };
        let ctx = self.model.config.context_len;
        if request.prompt.is_empty() {
            fail(&mut sink, Error::InvalidInput("the prompt is empty".into()));
            return None;
        }
        if request.max_tokens == 0 || request.prompt.len() + request.max_tokens > ctx {
            fail(
                &mut sink,
                Error::ContextOverflow {
                    needed: request.prompt.len() + request.max_tokens,
                    ctx,
                },
            );
            return None;
        }
        let (mut sampler, stops) = match Sampler::new(request.sampler)
            .and_then(|s| Ok((s, StopStrings::new(&request.stop_strings)?)))
        {
            Ok(x) => x,
            Err(e) => {
                fail(&mut sink, e);
                return None;
            }
        };
        sampler.prime(&request.prompt);
        let mut cache = self.model.new_cache();
        let logits = match self
            .model
            .forward(&request.prompt, &mut cache, Logits::Last)
        {
            Ok(l) => l,
            Err(e) => {
                fail(&mut sink, e);
                return None;
            }
        };
        let prompt_secs = started.elapsed().as_secs_f64();
        self.stats
            .prompt_micros
            .fetch_add((prompt_secs * 1e6) as u64, Relaxed);
        self.stats
            .prompt_tokens
            .fetch_add(request.prompt.len() as u64, Relaxed);
        let mut slot = Slot {
            cache,
            sampler,
            decoder: StreamDecoder::default(),
            stops,
            request,
            sink,
            last: 0,
            generated: 0,
            started,
            first_token: None,
            prompt_secs,
        };
        self.take(&mut slot, &logits).then_some(slot)
    }

    /// One token for every busy slot, in one batched pass.
    fn step(&self, busy: &mut Vec<Slot>) {
        let t0 = Instant::now();
        let tokens: Vec<[u32; 1]> = busy.iter().map(|s| [s.last]).collect();
        let seqs: Vec<&[u32]> = tokens.iter().map(|t| &t[..]).collect();
        let mut caches: Vec<&mut KvCache> = busy.iter_mut().map(|s| &mut s.cache).collect();
        let result = self
            .model
            .forward_batch(&seqs, &mut caches, Pass::logits(Logits::Last));
        self.stats
            .decode_micros
            .fetch_add(t0.elapsed().as_micros() as u64, Relaxed);
        self.stats.step_tokens.fetch_add(busy.len() as u64, Relaxed);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                for mut s in busy.drain(..) {
                    let _ = (s.sink)(Event::Failed(e.to_string()));
                }
                return;
            }
        };
        let v = self.model.vocab_size();
        let mut i = 0;
        busy.retain_mut(|slot| {
            let keep = self.take(slot, &logits[i * v..(i + 1) * v]);
            i += 1;
            keep
        });
    }

    /// Choose the slot's next token from `logits` and send it; false when the request
    /// has ended (and was told so).
    fn take(&self, slot: &mut Slot, logits: &[f32]) -> bool {
        let t = slot.sampler.sample(logits);
        if slot.first_token.is_none() {
            slot.first_token = Some(Instant::now());
        }
        if slot.request.stop_tokens.contains(&t) {
            self.finish(slot, Finish::Stop, String::new());
            return false;
        }
        slot.generated += 1;
        self.stats.completion_tokens.fetch_add(1, Relaxed);
        let logprob = slot.request.top_logprobs.map(|k| logprob(logits, t, k));
        let piece = slot.decoder.push(self.tokenizer.token_bytes(t));
        let released = slot.stops.push(&piece);
        let flow = (slot.sink)(Event::Token {
            id: t,
            text: released.text,
            logprob,
        });
        if flow.is_break() {
            self.stats.cancelled.fetch_add(1, Relaxed);
            return false;
        }
        if released.stopped {
            self.finish(slot, Finish::Stop, String::new());
            return false;
        }
        if slot.generated == slot.request.max_tokens {
            let rest = slot.decoder.finish();
            let r = slot.stops.push(&rest);
            let mut tail = r.text;
            if !r.stopped {
                tail.push_str(&slot.stops.finish());
            }
            self.finish(slot, Finish::Length, tail);
            return false;
        }
        slot.last = t;
        true
    }

    fn finish(&self, slot: &mut Slot, finish: Finish, tail: String) {
        let first = slot.first_token.unwrap_or(slot.started);
        let _ = (slot.sink)(Event::Done(Summary {
            finish,
            prompt_tokens: slot.request.prompt.len(),
            completion_tokens: slot.generated,
            tail,
            prompt_secs: slot.prompt_secs,
            decode_secs: first.elapsed().as_secs_f64(),
        }));
    }
}

/// Log-softmax of `logits` at `t`, and the `k` most likely tokens with theirs.
pub fn logprob(logits: &[f32], t: u32, k: usize) -> Logprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max as f64
        + logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln();
    let lp = |i: usize| (logits[i] as f64 - lse) as f32;
    let mut top: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(top.len());
    if k > 0 && k < top.len() {
        top.select_nth_unstable_by(k - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
    }
    top.truncate(k);
    top.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    Logprob {
        logprob: lp(t as usize),
        top: top.into_iter().map(|i| (i, lp(i as usize))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::{random_model, RandomSpec};
    use std::sync::Mutex;

    #[test]
    fn logprobs_are_a_log_softmax() {
        let l = logprob(&[0.0, 1.0, 2.0, -1.0], 1, 2);
        let z: f64 = [0.0f64, 1.0, 2.0, -1.0].iter().map(|x| x.exp()).sum();
        assert!((l.logprob as f64 - (1.0 - z.ln())).abs() < 1e-6);
        assert_eq!(l.top.iter().map(|x| x.0).collect::<Vec<_>>(), [2, 1]);
    }

    /// Requests run together through batched steps give each the tokens it gets alone.
    #[test]
    fn batched_slots_equal_one_request_at_a_time() {
        let spec = RandomSpec {
            layers: 2,
            d_model: 32,
            heads: 4,
            kv_heads: 2,
            ffn: 48,
            vocab: 40,
            ..RandomSpec::default()
        };
        let model = Arc::new(random_model(spec, 5).unwrap());
        let tok = Arc::new(crate::tokenizer::Tokenizer::plain_for_tests(40));
        let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![7], vec![4, 4, 9, 12, 30], vec![2]];
        let request = |p: &Vec<u32>, n| Request {
            prompt: p.clone(),
            max_tokens: n,
            sampler: SamplerConfig::default(),
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
            top_logprobs: None,
        };
        let alone: Vec<Vec<u32>> = prompts
            .iter()
            .zip([6, 9, 4, 7])
            .map(|(p, n)| {
                let mut s = Sampler::new(SamplerConfig::default()).unwrap();
                crate::run::generate(&model, p, n, &mut s, &[], crate::run::keep_going)
                    .unwrap()
                    .tokens
            })
            .collect();
        let (engine, worker) = engine(model.clone(), tok, 3, 8).unwrap();
        type Seen = Arc<Mutex<(Vec<u32>, Option<Summary>)>>;
        let got: Vec<Seen> = prompts
            .iter()
            .zip([6, 9, 4, 7])
            .map(|(p, n)| {
                let out = Arc::new(Mutex::new((Vec::new(), None)));
                let o = out.clone();
                engine
                    .submit(
                        request(p, n),
                        Box::new(move |e| {
                            let mut o = o.lock().unwrap();
                            match e {
                                Event::Token { id, .. } => o.0.push(id),
                                Event::Done(s) => o.1 = Some(s),
                                Event::Failed(m) => panic!("{m}"),
                            }
                            ControlFlow::Continue(())
                        }),
                    )
                    .unwrap();
                out
            })
            .collect();
        drop(engine);
        worker.run();
        for (i, g) in got.iter().enumerate() {
            let g = g.lock().unwrap();
            assert_eq!(g.0, alone[i], "request {i}");
            let s = g.1.as_ref().expect("finished");
            assert_eq!(s.finish, Finish::Length);
            assert_eq!(s.completion_tokens, alone[i].len());
            assert_eq!(s.prompt_tokens, prompts[i].len());
        }
    }

    #[test]
    fn a_sink_that_breaks_frees_its_slot_and_a_full_queue_is_busy() {
        let model = Arc::new(random_model(RandomSpec::default(), 1).unwrap());
        let v = model.vocab_size();
        let tok = Arc::new(crate::tokenizer::Tokenizer::plain_for_tests(v));
        let (engine, worker) = engine(model, tok, 1, 1).unwrap();
        let req = Request {
            prompt: vec![1, 2],
            max_tokens: 50,
            sampler: SamplerConfig::default(),
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
            top_logprobs: Some(2),
        };
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        // The first request leaves after three tokens.
        engine
            .submit(
                req.clone(),
                Box::new(move |_| {
                    if s.fetch_add(1, Relaxed) == 2 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                }),
            )
            .unwrap();
        // The queue holds one request (the worker is not running yet).
        assert_eq!(
            engine.submit(req.clone(), Box::new(|_| ControlFlow::Continue(()))),
            Err(Rejected::Busy)
        );
        let handle = std::thread::spawn(move || worker.run());
        // The next request gets the freed slot and runs to its end.
        let done = Arc::new(Mutex::new(None));
        let d = done.clone();
        loop {
            let d = d.clone();
            let r = engine.submit(
                Request {
                    max_tokens: 5,
                    ..req.clone()
                },
                Box::new(move |e| {
                    if let Event::Done(s) = e {
                        *d.lock().unwrap() = Some(s);
                    }
                    ControlFlow::Continue(())
                }),
            );
            match r {
                Ok(()) => break,
                Err(Rejected::Busy) => std::thread::sleep(std::time::Duration::from_millis(5)),
                Err(Rejected::Closed) => panic!("closed"),
            }
        }
        drop(engine);
        handle.join().unwrap();
        assert_eq!(seen.load(Relaxed), 3);
        let s = done
            .lock()
            .unwrap()
            .clone()
            .expect("the second request finished");
        assert_eq!((s.finish, s.completion_tokens), (Finish::Length, 5));
    }
}
