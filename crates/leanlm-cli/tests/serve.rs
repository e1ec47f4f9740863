//! `leanlm serve` on the default model, spoken to over plain HTTP/1.1: chat and completion
//! answers equal `leanlm generate`'s, streamed or not; usage counts the tokens; stop
//! strings and max_tokens end answers; malformed requests get OpenAI's error JSON and
//! leave the server healthy; a client that goes away frees its slot.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leanlm::model::gguf::GgufFile;
use leanlm::tokenizer::Tokenizer;
use serde_json::{json, Value};

mod common;

const KEY: &str = "test-key";
const QUESTION: &str = "What is the capital of France?";

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let model = common::model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_leanlm"))
        .args(["serve", "-m"])
        .arg(&model)
        .args(["--port", "0", "-c", "512", "--api-key", KEY])
        .args(extra)
        .current_dir(common::root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server printed its address")
            .unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep reading stderr so that the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn send(addr: &str, method: &str, path: &str, body: &[u8], key: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) before reading a large body and close; that is fine.
    let _ = s.write_all(body);
    s
}

fn read_reply(mut s: TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete reply");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers: head.to_string(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = s.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
}

fn post(addr: &str, path: &str, body: &Value) -> Reply {
    read_reply(send(
        addr,
        "POST",
        path,
        body.to_string().as_bytes(),
        Some(KEY),
    ))
}

fn get(addr: &str, path: &str) -> Reply {
    read_reply(send(addr, "GET", path, b"", Some(KEY)))
}

/// The `data:` payloads of a server-sent event stream.
fn events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|s| s.trim().to_string())
        .collect()
}

/// `leanlm generate … --json` on the default model.
fn generate(args: &[&str]) -> Value {
    let model = common::model();
    let mut all = vec!["generate", "-m", model.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let out = common::leanlm(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn chat_request(max_tokens: usize, extra: Value) -> Value {
    let mut r = json!({
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0, "max_tokens": max_tokens,
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

#[test]
fn answers_equal_generate_streamed_or_not_and_bad_requests_get_error_json() {
    let server = start(&["--parallel", "2"]);
    let addr = server.addr.as_str();

    let health = read_reply(send(addr, "GET", "/health", b"", None));
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, json!("ok"))
    );
    let models = get(addr, "/v1/models").json();
    assert_eq!(models["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");

    // Greedy chat: the same text and token counts as `generate --chat`.
    let n = 24;
    let want = generate(&["--chat", "-p", QUESTION, "-n", &n.to_string()]);
    let end = ["<|im_end|>", "<|endoftext|>"];
    let tok = Tokenizer::from_gguf(&GgufFile::open(common::model()).unwrap()).unwrap();
    let ids: Vec<u32> = want["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .filter(|&t| !end.contains(&String::from_utf8_lossy(tok.token_bytes(t)).as_ref()))
        .collect();
    let r = post(addr, "/v1/chat/completions", &chat_request(n, json!({})));
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let content = j["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(content, want["text"].as_str().unwrap());
    assert!(!content.is_empty());
    assert_eq!(j["object"], "chat.completion");
    assert_eq!(j["usage"]["completion_tokens"], ids.len());
    assert_eq!(
        j["usage"]["prompt_tokens"],
        want["prompt_tokens"].as_array().unwrap().len()
    );
    assert_eq!(
        j["usage"]["total_tokens"].as_u64(),
        Some(j["usage"]["prompt_tokens"].as_u64().unwrap() + ids.len() as u64)
    );
    let finish = j["choices"][0]["finish_reason"].clone();
    assert_eq!(finish, if ids.len() == n { "length" } else { "stop" });

    // Streamed: the deltas add up to the same text, then usage, then [DONE].
    let r = post(
        addr,
        "/v1/chat/completions",
        &chat_request(
            n,
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.to_ascii_lowercase().contains("text/event-stream"));
    let ev = events(&r.body);
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let reasons: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(reasons, [&finish]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], ids.len());

    // A stop string that spans two tokens ends the answer before it, and is not shown.
    let texts: Vec<String> = ids
        .iter()
        .map(|&t| String::from_utf8_lossy(tok.token_bytes(t)).into_owned())
        .collect();
    let i = (1..texts.len())
        .find(|&i| texts[i - 1].chars().count() >= 2 && texts[i].chars().count() >= 2)
        .expect("two neighbouring tokens of two characters or more");
    let left: String = texts[i - 1]
        .chars()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let right: String = texts[i].chars().take(2).collect();
    let stop = format!("{left}{right}");
    let at = content.find(&stop).unwrap();
    for stream in [false, true] {
        let r = post(
            addr,
            "/v1/chat/completions",
            &chat_request(n, json!({"stop": [stop.clone()], "stream": stream})),
        );
        let text = if stream {
            events(&r.body)
                .iter()
                .filter(|e| *e != "[DONE]")
                .filter_map(|e| {
                    serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_string)
                })
                .collect::<String>()
        } else {
            let j = r.json();
            assert_eq!(j["choices"][0]["finish_reason"], "stop");
            j["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(text, content[..at], "stop {stop:?}, streamed {stream}");
    }

    // max_tokens ends the answer with "length".
    let j = post(addr, "/v1/chat/completions", &chat_request(3, json!({}))).json();
    assert_eq!(j["choices"][0]["finish_reason"], "length");
    assert_eq!(j["usage"]["completion_tokens"], 3);

    // Completions: the same text as `generate` on the raw prompt; logprobs when asked.
    let prompt = "The capital of France is";
    let want = generate(&["-p", prompt, "-n", "8"]);
    let j = post(
        addr,
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 2}),
    )
    .json();
    assert_eq!(j["choices"][0]["text"], want["text"]);
    let lp = &j["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 8);
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        // Greedy: the chosen token is the most likely one.
        let best = top
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert!((lp["token_logprobs"][i].as_f64().unwrap() - best).abs() < 1e-6);
    }

    // Malformed requests: each a 4xx with OpenAI's error JSON; the server stays healthy.
    let long = "word ".repeat(700);
    let bad: Vec<(&str, Vec<u8>, Option<&str>, u16)> = vec![
        ("not JSON", b"{\"messages\": [".to_vec(), Some(KEY), 400),
        ("not an object", b"[1, 2]".to_vec(), Some(KEY), 400),
        (
            "no messages",
            br#"{"max_tokens": 4}"#.to_vec(),
            Some(KEY),
            400,
        ),
        (
            "empty messages",
            br#"{"messages": []}"#.to_vec(),
            Some(KEY),
            400,
        ),
        (
            "unknown model",
            chat_request(4, json!({"model": "gpt-9"}))
                .to_string()
                .into_bytes(),
            Some(KEY),
            404,
        ),
        (
            "prompt over the context",
            json!({"messages": [{"role": "user", "content": long}]})
                .to_string()
                .into_bytes(),
            Some(KEY),
            400,
        ),
        (
            "max_tokens over the context",
            chat_request(100_000, json!({})).to_string().into_bytes(),
            Some(KEY),
            400,
        ),
        (
            "bad API key",
            chat_request(4, json!({})).to_string().into_bytes(),
            Some("wrong"),
            401,
        ),
        (
            "temperature not a number",
            chat_request(4, json!({"temperature": "hot"}))
                .to_string()
                .into_bytes(),
            Some(KEY),
            400,
        ),
        (
            "n = 2",
            chat_request(4, json!({"n": 2})).to_string().into_bytes(),
            Some(KEY),
            400,
        ),
        (
            "five stop strings",
            chat_request(4, json!({"stop": ["a", "b", "c", "d", "e"]}))
                .to_string()
                .into_bytes(),
            Some(KEY),
            400,
        ),
    ];
    for (what, body, key, status) in &bad {
        let r = read_reply(send(addr, "POST", "/v1/chat/completions", body, *key));
        assert_eq!(r.status, *status, "{what}: {}", r.body);
        let e = r.json();
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {e}"
        );
        assert!(e["error"]["type"].is_string(), "{what}: {e}");
    }
    // A body declared over the limit is refused before it is read (the client sends only
    // the head, so the refusal is not lost to a reset connection).
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        2 << 20
    );
    s.write_all(head.as_bytes()).unwrap();
    let r = read_reply(s);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.json()["error"]["message"].is_string());
    let r = get(addr, "/v1/nothing");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].is_string());
    let j = post(addr, "/v1/chat/completions", &chat_request(n, json!({}))).json();
    assert_eq!(j["choices"][0]["message"]["content"], content.as_str());
}

#[test]
fn a_client_that_goes_away_frees_its_slot() {
    let server = start(&["--parallel", "1"]);
    let addr = server.addr.as_str();
    // A long streamed answer, dropped after its first piece of text.
    let mut s = send(
        addr,
        "POST",
        "/v1/chat/completions",
        chat_request(400, json!({"stream": true}))
            .to_string()
            .as_bytes(),
        Some(KEY),
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&seen).contains("\"content\":\"") || seen.len() < 400 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
    // The one slot is free again: a short request is answered, and the metrics count the
    // cancelled request, which stopped long before its 400 tokens.
    let t0 = Instant::now();
    let j = post(addr, "/v1/chat/completions", &chat_request(2, json!({}))).json();
    assert_eq!(j["usage"]["completion_tokens"], 2, "{j}");
    let metrics = get(addr, "/metrics").body;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("leanlm_{name} ")))
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("requests_cancelled_total"), 1.0, "{metrics}");
    assert!(
        value("completion_tokens_total") < 200.0,
        "the cancelled request went on: {metrics} ({:?})",
        t0.elapsed()
    );
}
