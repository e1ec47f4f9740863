//! `leanlm serve`: an OpenAI-compatible HTTP server in front of the slots engine
//! (`leanlm::run::slots`), on axum and tokio.
//!
//! The engine's worker runs on this command's thread (a pool thread, so matrix kernels
//! split across the pool as everywhere else); HTTP runs on a second thread with its own
//! single-threaded runtime, and hands requests to the engine through its bounded queue.
//! Each request's events come back through a channel; a client that goes away drops the
//! channel, and the engine frees the slot at its next token.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use leanlm::run::chat::{self, Message};
use leanlm::run::slots::{self, Engine, Event, Finish, Logprob, Rejected, Request, Summary};
use leanlm::run::stop::MAX_STOP_STRINGS;
use leanlm::run::SamplerConfig;
use leanlm::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArg,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0 to open it to others).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests decoded together, in one batched forward pass per token (llama-server's
    /// --parallel / -np).
    #[arg(long, value_name = "N", default_value_t = 1)]
    parallel: usize,
    /// Requests that may wait for a free slot; more get 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 16)]
    queue: usize,
    /// Context size per request: prompt plus answer (default: the model's).
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    ctx: Option<usize>,
    /// Answer only requests with `Authorization: Bearer KEY` (GET /health stays open).
    #[arg(long = "api-key", value_name = "KEY")]
    api_key: Option<String>,
    /// The model's name in the API (default: the file name without .gguf).
    #[arg(long)]
    alias: Option<String>,
    /// Largest request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_body: usize,
    /// Tokens per answer when a request gives no max_tokens (default: what the context
    /// leaves).
    #[arg(short = 'n', long = "n-predict", value_name = "N")]
    n_predict: Option<usize>,
    /// After SIGINT or SIGTERM, seconds that requests in flight get to finish.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    shutdown_timeout: u64,
    /// Defaults for requests that leave a sampling field out.
    #[command(flatten)]
    sampling: super::SamplingArgs,
    #[command(flatten)]
    gpu: super::GpuArg,
}

struct App {
    engine: Engine,
    tok: Arc<Tokenizer>,
    template: Option<String>,
    stop_tokens: Vec<u32>,
    model_id: String,
    ctx: usize,
    api_key: Option<String>,
    max_body: usize,
    n_predict: Option<usize>,
    defaults: SamplerConfig,
    seed_given: bool,
    created: u64,
    ids: AtomicU64,
    http_errors: AtomicU64,
}

pub fn run(a: Args) -> Result<()> {
    a.gpu.check()?;
    let mut loaded = a.model.load()?;
    if let Some(c) = a.ctx {
        super::generate::set_context(&mut loaded.model, c)?;
    }
    let path = a.model.path();
    let model_id = a.alias.clone().unwrap_or_else(|| {
        path.file_name()
            .map(|f| f.to_string_lossy().trim_end_matches(".gguf").to_string())
            .unwrap_or_else(|| "model".into())
    });
    let family = loaded.model.config.family();
    let template = chat::template_of(&loaded.tokenizer, family).map(str::to_string);
    let ctx = loaded.model.config.context_len;
    let stop_tokens = loaded.tokenizer.end_of_generation();
    let tok = Arc::new(loaded.tokenizer);
    let (engine, worker) = slots::engine(Arc::new(loaded.model), tok.clone(), a.parallel, a.queue)?;
    let (defaults, _) = a.sampling.config();
    let app = Arc::new(App {
        engine,
        tok,
        template,
        stop_tokens,
        model_id: model_id.clone(),
        ctx,
        api_key: a.api_key.clone(),
        max_body: a.max_body,
        n_predict: a.n_predict,
        defaults,
        seed_given: a.sampling.seed.is_some(),
        created: now(),
        ids: AtomicU64::new(super::random_seed()),
        http_errors: AtomicU64::new(0),
    });
    let listener = std::net::TcpListener::bind((a.host.as_str(), a.port))
        .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    eprintln!(
        "leanlm serve: {model_id} on http://{addr} ({} slot{}, context {ctx}, {} kernels); \
         POST /v1/chat/completions, /v1/completions; Ctrl-C stops",
        a.parallel,
        if a.parallel == 1 { "" } else { "s" },
        leanlm::quant::dot::simd_level()
    );
    let timeout = Duration::from_secs(a.shutdown_timeout);
    let http = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, router(app))
                    .with_graceful_shutdown(shutdown_signal(timeout))
                    .await?;
                anyhow::Ok(())
            })
        })?;
    // Returns once the HTTP side has dropped every engine handle and the last request
    // is done.
    worker.run();
    http.join()
        .map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))??;
    eprintln!("leanlm serve: stopped");
    Ok(())
}

async fn shutdown_signal(timeout: Duration) {
    let interrupt = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminate = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    eprintln!(
        "leanlm serve: shutting down; requests in flight get {}s",
        timeout.as_secs()
    );
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        eprintln!("leanlm serve: requests still running after the shutdown timeout; exiting");
        std::process::exit(0);
    });
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this endpoint does not take that method",
            )
        })
        .with_state(app)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
    retry_after: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
            retry_after: false,
        }
    }

    fn bad(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    fn body(&self) -> Value {
        json!({"error": {
            "message": self.message, "type": self.kind(),
            "param": self.param, "code": self.code.map_or(json!(self.status.as_u16()), |c| json!(c)),
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        if self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl App {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given == Some(key.as_str()) {
            Ok(())
        } else {
            Err(
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid or missing API key")
                    .code("invalid_api_key"),
            )
        }
    }

    fn next_id(&self, prefix: &str) -> String {
        let n = self.ids.fetch_add(1, Relaxed);
        format!("{prefix}-{n:016x}")
    }

    /// Read and parse a JSON object body, within the size limit.
    async fn body(&self, headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, ApiError> {
        self.authorize(headers)?;
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {} bytes", self.max_body),
            )
        };
        // A declared length over the limit is refused before anything is read.
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(body, self.max_body)
            .await
            .map_err(|_| too_large())?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "the request body must be a JSON object",
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the request body is not valid JSON: {e}"),
            )),
        }
    }

    fn check_model(&self, m: &Map<String, Value>) -> Result<(), ApiError> {
        match m.get("model") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(s)) if *s == self.model_id || s.is_empty() => Ok(()),
            Some(Value::String(s)) => Err(ApiError {
                param: Some("model"),
                ..ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "the model '{s}' does not exist here; this server runs '{}'",
                        self.model_id
                    ),
                )
            }
            .code("model_not_found")),
            Some(_) => Err(ApiError::bad("model", "model must be a string")),
        }
    }
}

/// Fields shared by both endpoints: sampling, limits, stop strings, logprobs.
struct Common {
    sampler: SamplerConfig,
    max_tokens: Option<usize>,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
    top_logprobs: Option<usize>,
}

fn number(m: &Map<String, Value>, key: &'static str) -> Result<Option<f64>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(ApiError::bad(key, format!("{key} must be a number"))),
    }
}

fn in_range(
    m: &Map<String, Value>,
    key: &'static str,
    lo: f64,
    hi: f64,
) -> Result<Option<f32>, ApiError> {
    match number(m, key)? {
        Some(x) if !(lo..=hi).contains(&x) => Err(ApiError::bad(
            key,
            format!("{key} must be between {lo} and {hi} (got {x})"),
        )),
        x => Ok(x.map(|x| x as f32)),
    }
}

fn count(m: &Map<String, Value>, key: &'static str) -> Result<Option<usize>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().map(|x| x as usize)),
        Some(_) => Err(ApiError::bad(
            key,
            format!("{key} must be a whole number ≥ 0"),
        )),
    }
}

fn flag(m: &Map<String, Value>, key: &'static str) -> Result<bool, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad(key, format!("{key} must be true or false"))),
    }
}

fn common(app: &App, m: &Map<String, Value>, chat: bool) -> Result<Common, ApiError> {
    app.check_model(m)?;
    if let Some(n) = count(m, "n")? {
        if n != 1 {
            return Err(ApiError::bad("n", "only n = 1 is supported"));
        }
    }
    for key in ["tools", "functions"] {
        if m.get(key).is_some_and(|v| !v.is_null() && v != &json!([])) {
            return Err(ApiError::bad(key, format!("{key} are not supported")));
        }
    }
    if !chat && flag(m, "echo")? {
        return Err(ApiError::bad("echo", "echo is not supported"));
    }
    let d = app.defaults;
    let mut s = SamplerConfig {
        temperature: in_range(m, "temperature", 0.0, 2.0)?.unwrap_or(d.temperature),
        top_p: in_range(m, "top_p", 0.0, 1.0)?.unwrap_or(d.top_p),
        top_k: count(m, "top_k")?.unwrap_or(d.top_k),
        min_p: in_range(m, "min_p", 0.0, 1.0)?.unwrap_or(d.min_p),
        penalties: d.penalties,
        seed: d.seed,
    };
    if s.top_p == 0.0 {
        return Err(ApiError::bad("top_p", "top_p must be above 0"));
    }
    if let Some(x) = in_range(m, "frequency_penalty", -2.0, 2.0)? {
        s.penalties.frequency = x;
    }
    if let Some(x) = in_range(m, "presence_penalty", -2.0, 2.0)? {
        s.penalties.presence = x;
    }
    if let Some(x) = in_range(m, "repeat_penalty", 0.0, 10.0)? {
        if x == 0.0 {
            return Err(ApiError::bad(
                "repeat_penalty",
                "repeat_penalty must be above 0",
            ));
        }
        s.penalties.repeat = x;
    }
    if let Some(n) = count(m, "repeat_last_n")? {
        s.penalties.last_n = n.min(app.ctx);
    }
    match m.get("seed") {
        None | Some(Value::Null) => {
            if !app.seed_given {
                s.seed = super::random_seed();
            }
        }
        Some(v) => {
            s.seed = v
                .as_u64()
                .or_else(|| v.as_i64().map(|x| x as u64))
                .ok_or_else(|| ApiError::bad("seed", "seed must be an integer"))?;
        }
    }
    let max_tokens = match (count(m, "max_completion_tokens")?, count(m, "max_tokens")?) {
        (Some(n), _) | (None, Some(n)) => Some(n),
        _ => None,
    };
    if max_tokens == Some(0) {
        return Err(ApiError::bad("max_tokens", "max_tokens must be at least 1"));
    }
    let stop = match m.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad("stop", "stop must be a string or a list of strings"))?,
        Some(_) => {
            return Err(ApiError::bad(
                "stop",
                "stop must be a string or a list of strings",
            ))
        }
    };
    // OpenAI's limit (the engine takes up to MAX_STOP_STRINGS, for -r on the command line).
    if stop.len() > 4.min(MAX_STOP_STRINGS) {
        return Err(ApiError::bad("stop", "at most 4 stop strings"));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::bad("stop", "a stop string is empty"));
    }
    let stream = flag(m, "stream")?;
    let include_usage = match m.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => flag(o, "include_usage")?,
        Some(_) => {
            return Err(ApiError::bad(
                "stream_options",
                "stream_options must be an object",
            ))
        }
    };
    let top_logprobs = if chat {
        let n = count(m, "top_logprobs")?;
        if n.is_some_and(|n| n > 20) {
            return Err(ApiError::bad(
                "top_logprobs",
                "top_logprobs must be at most 20",
            ));
        }
        match (flag(m, "logprobs")?, n) {
            (true, n) => Some(n.unwrap_or(0)),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(ApiError::bad(
                    "top_logprobs",
                    "top_logprobs needs logprobs: true",
                ))
            }
        }
    } else {
        let n = count(m, "logprobs")?;
        if n.is_some_and(|n| n > 20) {
            return Err(ApiError::bad("logprobs", "logprobs must be at most 20"));
        }
        n
    };
    Ok(Common {
        sampler: s,
        max_tokens,
        stop,
        stream,
        include_usage,
        top_logprobs,
    })
}

fn messages(m: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let bad = |msg: &str| ApiError::bad("messages", msg.to_string());
    let list = match m.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(bad("messages is empty")),
        Some(_) => return Err(bad("messages must be a list of {role, content} objects")),
        None => return Err(bad("messages is missing")),
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let role = v
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("messages[{i}] has no role")))?;
            if !["system", "developer", "user", "assistant"].contains(&role) {
                return Err(bad(&format!("messages[{i}]: unknown role '{role}'")));
            }
            let content = match v.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(
                        |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                            (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                            _ => Err(bad(&format!(
                                "messages[{i}]: only text content parts are supported"
                            ))),
                        },
                    )
                    .collect::<Result<Vec<_>, _>>()?
                    .concat(),
                Some(Value::Null) | None if role == "assistant" => String::new(),
                _ => return Err(bad(&format!("messages[{i}] has no content"))),
            };
            let role = if role == "developer" { "system" } else { role };
            Ok(Message::new(role, &content))
        })
        .collect()
}

impl App {
    /// The request for the engine, with the context checked.
    fn request(
        &self,
        prompt: Vec<u32>,
        c: &Common,
        param: &'static str,
    ) -> Result<Request, ApiError> {
        if prompt.len() >= self.ctx {
            return Err(ApiError::bad(
                param,
                format!(
                    "the prompt's {} tokens leave no room in the context of {}",
                    prompt.len(),
                    self.ctx
                ),
            )
            .code("context_length_exceeded"));
        }
        let room = self.ctx - prompt.len();
        let max_tokens = match c.max_tokens {
            Some(n) if n > room => {
                return Err(ApiError::bad(
                    "max_tokens",
                    format!(
                        "max_tokens {n} and the prompt's {} tokens exceed the context of {}",
                        prompt.len(),
                        self.ctx
                    ),
                )
                .code("context_length_exceeded"))
            }
            Some(n) => n,
            None => self.n_predict.unwrap_or(room).min(room),
        };
        Ok(Request {
            prompt,
            max_tokens,
            sampler: c.sampler,
            stop_tokens: self.stop_tokens.clone(),
            stop_strings: c.stop.clone(),
            top_logprobs: c.top_logprobs,
        })
    }

    fn submit(&self, r: Request) -> Result<UnboundedReceiver<Event>, ApiError> {
        let (tx, rx) = unbounded_channel();
        let sink = Box::new(move |e| {
            if tx.send(e).is_ok() {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        });
        match self.engine.submit(r, sink) {
            Ok(()) => Ok(rx),
            Err(Rejected::Busy) => Err(ApiError {
                retry_after: true,
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the server is busy: {} slot(s) decoding and the queue full; retry later",
                        self.engine.slots()
                    ),
                )
            }),
            Err(Rejected::Closed) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            )),
        }
    }

    fn token_text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.tok.token_bytes(id)).into_owned()
    }

    fn chat_logprobs(&self, items: &[(u32, Logprob)]) -> Value {
        let entry = |id: u32, lp: f32| json!({"token": self.token_text(id), "logprob": lp, "bytes": self.tok.token_bytes(id)});
        let content: Vec<Value> = items
            .iter()
            .map(|(id, l)| {
                let mut e = entry(*id, l.logprob);
                e["top_logprobs"] = l.top.iter().map(|&(t, lp)| entry(t, lp)).collect();
                e
            })
            .collect();
        json!({ "content": content })
    }

    fn completion_logprobs(&self, items: &[(u32, Logprob)], offsets: &[usize]) -> Value {
        json!({
            "tokens": items.iter().map(|(id, _)| self.token_text(*id)).collect::<Vec<_>>(),
            "token_logprobs": items.iter().map(|(_, l)| l.logprob).collect::<Vec<_>>(),
            "top_logprobs": items.iter().map(|(_, l)| {
                l.top.iter().map(|&(t, lp)| (self.token_text(t), json!(lp))).collect::<Map<_, _>>()
            }).collect::<Vec<_>>(),
            "text_offset": offsets,
        })
    }
}

fn usage(s: &Summary) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.prompt_tokens + s.completion_tokens,
    })
}

fn timings(s: &Summary) -> Value {
    let decoded = s.completion_tokens.saturating_sub(1);
    json!({
        "prompt_n": s.prompt_tokens, "prompt_ms": s.prompt_secs * 1e3,
        "predicted_n": s.completion_tokens, "predicted_ms": s.decode_secs * 1e3,
        "predicted_per_second": if s.decode_secs > 0.0 { decoded as f64 / s.decode_secs } else { 0.0 },
    })
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

/// A whole answer, for requests without `stream`.
struct Answer {
    text: String,
    offsets: Vec<usize>,
    logprobs: Vec<(u32, Logprob)>,
    summary: Summary,
}

async fn collect(mut rx: UnboundedReceiver<Event>) -> Result<Answer, ApiError> {
    let (mut text, mut offsets, mut logprobs) = (String::new(), Vec::new(), Vec::new());
    while let Some(e) = rx.recv().await {
        match e {
            Event::Token {
                id,
                text: t,
                logprob,
            } => {
                offsets.push(text.len());
                text.push_str(&t);
                if let Some(l) = logprob {
                    logprobs.push((id, l));
                }
            }
            Event::Done(summary) => {
                text.push_str(&summary.tail);
                return Ok(Answer {
                    text,
                    offsets,
                    logprobs,
                    summary,
                });
            }
            Event::Failed(m) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)),
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server stopped before the answer was complete",
    ))
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = chat_inner(&app, &headers, body).await;
    if result.is_err() {
        app.http_errors.fetch_add(1, Relaxed);
    }
    result
}

async fn chat_inner(app: &Arc<App>, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let m = app.body(headers, body).await?;
    let c = common(app, &m, true)?;
    let msgs = messages(&m)?;
    let template = app.template.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "this model has no chat template: use /v1/completions",
        )
    })?;
    let prompt = chat::prompt_ids(&app.tok, template, &msgs)
        .map_err(|e| ApiError::bad("messages", format!("the chat template failed: {e}")))?;
    let rx = app.submit(app.request(prompt, &c, "messages")?)?;
    let id = app.next_id("chatcmpl");
    let created = now();
    if c.stream {
        return Ok(stream(
            app.clone(),
            rx,
            id,
            created,
            true,
            c.include_usage,
            c.top_logprobs.is_some(),
        ));
    }
    let a = collect(rx).await?;
    let logprobs = if c.top_logprobs.is_some() {
        app.chat_logprobs(&a.logprobs)
    } else {
        Value::Null
    };
    Ok(Json(json!({
        "id": id, "object": "chat.completion", "created": created, "model": app.model_id,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": a.text},
            "logprobs": logprobs,
            "finish_reason": finish_reason(a.summary.finish),
        }],
        "usage": usage(&a.summary),
        "timings": timings(&a.summary),
    }))
    .into_response())
}

async fn completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = completions_inner(&app, &headers, body).await;
    if result.is_err() {
        app.http_errors.fetch_add(1, Relaxed);
    }
    result
}

async fn completions_inner(
    app: &Arc<App>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let m = app.body(headers, body).await?;
    let c = common(app, &m, false)?;
    let text = match m.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Some(Value::Array(_)) => {
            return Err(ApiError::bad(
                "prompt",
                "only one prompt per request is supported",
            ))
        }
        Some(_) => return Err(ApiError::bad("prompt", "prompt must be a string")),
        None => return Err(ApiError::bad("prompt", "prompt is missing")),
    };
    let prompt = app
        .tok
        .encode(&text, true, false)
        .map_err(|e| ApiError::bad("prompt", e.to_string()))?;
    if prompt.is_empty() {
        return Err(ApiError::bad("prompt", "the prompt is empty"));
    }
    let rx = app.submit(app.request(prompt, &c, "prompt")?)?;
    let id = app.next_id("cmpl");
    let created = now();
    if c.stream {
        return Ok(stream(
            app.clone(),
            rx,
            id,
            created,
            false,
            c.include_usage,
            c.top_logprobs.is_some(),
        ));
    }
    let a = collect(rx).await?;
    let logprobs = if c.top_logprobs.is_some() {
        app.completion_logprobs(&a.logprobs, &a.offsets)
    } else {
        Value::Null
    };
    Ok(Json(json!({
        "id": id, "object": "text_completion", "created": created, "model": app.model_id,
        "choices": [{
            "text": a.text, "index": 0, "logprobs": logprobs,
            "finish_reason": finish_reason(a.summary.finish),
        }],
        "usage": usage(&a.summary),
        "timings": timings(&a.summary),
    }))
    .into_response())
}

/// Server-sent events: one chunk per piece of text, then the finish reason, the usage
/// when asked for, and `[DONE]`.
struct Chunks {
    app: Arc<App>,
    rx: UnboundedReceiver<Event>,
    id: String,
    created: u64,
    chat: bool,
    include_usage: bool,
    logprobs: bool,
    pending: VecDeque<Sse>,
    done: bool,
}

impl Chunks {
    /// A chunk's fields around its `choices`.
    fn envelope(&self, choices: Value) -> Value {
        let object = if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        json!({
            "id": self.id, "object": object, "created": self.created,
            "model": self.app.model_id, "choices": choices,
        })
    }

    fn chunk(&self, choice: Value) -> Sse {
        Sse::default().data(self.envelope(json!([choice])).to_string())
    }

    fn text(&self, text: &str, logprob: Option<(u32, Logprob)>, finish: Option<Finish>) -> Sse {
        let lp = match (&logprob, self.logprobs) {
            (Some(l), true) if self.chat => self.app.chat_logprobs(std::slice::from_ref(l)),
            (Some(l), true) => self.app.completion_logprobs(std::slice::from_ref(l), &[0]),
            _ => Value::Null,
        };
        let reason = finish.map(finish_reason);
        self.chunk(if self.chat {
            let delta = if text.is_empty() {
                json!({})
            } else {
                json!({ "content": text })
            };
            json!({"index": 0, "delta": delta, "logprobs": lp, "finish_reason": reason})
        } else {
            json!({"text": text, "index": 0, "logprobs": lp, "finish_reason": reason})
        })
    }

    fn on(&mut self, e: Event) {
        match e {
            Event::Token { id, text, logprob } => {
                if !text.is_empty() || logprob.is_some() {
                    let e = self.text(&text, logprob.map(|l| (id, l)), None);
                    self.pending.push_back(e);
                }
            }
            Event::Done(s) => {
                if !s.tail.is_empty() {
                    let e = self.text(&s.tail, None, None);
                    self.pending.push_back(e);
                }
                let e = self.text("", None, Some(s.finish));
                self.pending.push_back(e);
                if self.include_usage {
                    let mut j = self.envelope(json!([]));
                    j["usage"] = usage(&s);
                    j["timings"] = timings(&s);
                    self.pending.push_back(Sse::default().data(j.to_string()));
                }
                self.finish();
            }
            Event::Failed(m) => {
                let err = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m);
                self.pending
                    .push_back(Sse::default().data(err.body().to_string()));
                self.finish();
            }
        }
    }

    fn finish(&mut self) {
        self.pending.push_back(Sse::default().data("[DONE]"));
        self.done = true;
    }
}

fn stream(
    app: Arc<App>,
    rx: UnboundedReceiver<Event>,
    id: String,
    created: u64,
    chat: bool,
    include_usage: bool,
    logprobs: bool,
) -> Response {
    let mut first = Chunks {
        app,
        rx,
        id,
        created,
        chat,
        include_usage,
        logprobs,
        pending: VecDeque::new(),
        done: false,
    };
    if chat {
        let role = first.chunk(json!({
            "index": 0, "delta": {"role": "assistant", "content": ""},
            "logprobs": null, "finish_reason": null,
        }));
        first.pending.push_back(role);
    }
    let events = futures_util::stream::unfold(first, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), st));
            }
            if st.done {
                return None;
            }
            match st.rx.recv().await {
                Some(e) => st.on(e),
                None => st.done = true,
            }
        }
    });
    axum::response::Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    let s = app.engine.stats();
    let busy = s.busy_slots.load(Relaxed);
    Json(json!({
        "status": "ok",
        "slots_idle": app.engine.slots().saturating_sub(busy),
        "slots_processing": busy,
    }))
}

async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers)?;
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": app.model_id, "object": "model", "created": app.created,
            "owned_by": "leanlm", "meta": {"n_ctx": app.ctx, "n_vocab": app.tok.vocab_size()},
        }],
    })))
}

/// Prometheus text format.
async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.authorize(&headers)?;
    let s = app.engine.stats();
    let rate = |tokens: u64, micros: u64| {
        if micros == 0 {
            0.0
        } else {
            tokens as f64 / (micros as f64 / 1e6)
        }
    };
    let rows: [(&str, &str, &str, f64); 11] = [
        (
            "requests_total",
            "counter",
            "Requests accepted into the queue.",
            s.requests.load(Relaxed) as f64,
        ),
        (
            "requests_rejected_total",
            "counter",
            "Requests refused because the queue was full.",
            s.rejected.load(Relaxed) as f64,
        ),
        (
            "requests_cancelled_total",
            "counter",
            "Requests whose client went away before the end.",
            s.cancelled.load(Relaxed) as f64,
        ),
        (
            "http_errors_total",
            "counter",
            "Requests answered with an error.",
            app.http_errors.load(Relaxed) as f64,
        ),
        (
            "prompt_tokens_total",
            "counter",
            "Prompt tokens processed.",
            s.prompt_tokens.load(Relaxed) as f64,
        ),
        (
            "completion_tokens_total",
            "counter",
            "Tokens generated.",
            s.completion_tokens.load(Relaxed) as f64,
        ),
        (
            "queue_length",
            "gauge",
            "Requests waiting for a slot.",
            s.queued.load(Relaxed) as f64,
        ),
        (
            "slots_busy",
            "gauge",
            "Slots generating now.",
            s.busy_slots.load(Relaxed) as f64,
        ),
        (
            "slots_total",
            "gauge",
            "Slots (--parallel).",
            app.engine.slots() as f64,
        ),
        (
            "prompt_tokens_per_second",
            "gauge",
            "Prompt tokens per second of prompt processing.",
            rate(s.prompt_tokens.load(Relaxed), s.prompt_micros.load(Relaxed)),
        ),
        (
            "decode_tokens_per_second",
            "gauge",
            "Tokens per second of batched decoding, all slots together.",
            rate(s.step_tokens.load(Relaxed), s.decode_micros.load(Relaxed)),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, v) in rows {
        out.push_str(&format!(
            "# HELP leanlm_{name} {help}\n# TYPE leanlm_{name} {kind}\nleanlm_{name} {v}\n"
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
