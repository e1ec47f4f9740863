//! Chat prompts rendered from the model's own Jinja template with `minijinja`.
//!
//! The environment is the one Hugging Face's `apply_chat_template` gives jinja2:
//! `trim_blocks` and `lstrip_blocks` on, loop controls, `raise_exception(msg)`,
//! `strftime_now(fmt)`, a `tojson` that does not escape HTML, Python's string and dict
//! methods (`.strip()`, `.items()`, … via minijinja-contrib's pycompat), and the variables
//! `messages`, `add_generation_prompt`, `bos_token` and `eos_token`. Tests compare the
//! output with jinja2's on ChatML, Gemma and Llama 3 templates
//! (`bench/make-chat-fixtures.py`). A template that fails names its line; rendering is
//! bounded (fuel), so a template cannot loop for ever.

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// Template instructions one rendering may execute. A chat of a few turns takes a few
/// thousand; minijinja also charges fuel for the strings a template builds, so this bounds
/// a hostile template's memory too (a string doubled in a loop stops below 100 MB).
const FUEL: u64 = 2_000_000;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Render `template` over `messages`, as `apply_chat_template(messages, tokenize=False,
/// add_generation_prompt=…)` does.
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| template_error(&e))?;
    env.set_syntax(syntax);
    env.set_fuel(Some(FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<Value, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env.add_template("chat_template", template)
        .map_err(|e| template_error(&e))?;
    let t = env
        .get_template("chat_template")
        .map_err(|e| template_error(&e))?;
    t.render(minijinja::context! {
        messages => Value::from(minijinja::value::Serde(messages)),
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(|e| template_error(&e))
}

/// The chat template a model uses: its tokenizer's, else its family's default (Gemma's
/// GGUF files carry none; llama.cpp falls back to a built-in format the same way).
pub fn template_of<'a>(
    tok: &'a Tokenizer,
    family: &'static crate::model::Family,
) -> Option<&'a str> {
    tok.chat_template.as_deref().or(family.chat_template)
}

/// The token ids of a conversation, ready for generation: the rendered text with special
/// tokens parsed, and BOS prepended only where the vocabulary asks for it and the template
/// did not write it already (as llama.cpp's server does).
pub fn prompt_ids(tok: &Tokenizer, template: &str, messages: &[Message]) -> Result<Vec<u32>> {
    prompt_ids_continuing(tok, template, messages, "")
}

/// [`prompt_ids`] with the assistant's answer begun by `answer_prefix`, for protocols
/// that put words in the model's mouth (tokenized with the rendered text, as one string).
pub fn prompt_ids_continuing(
    tok: &Tokenizer,
    template: &str,
    messages: &[Message],
    answer_prefix: &str,
) -> Result<Vec<u32>> {
    let piece = |id: Option<u32>| {
        id.map(|i| String::from_utf8_lossy(tok.token_bytes(i)).into_owned())
            .unwrap_or_default()
    };
    let (bos, eos) = (piece(tok.bos), piece(tok.eos));
    let text = render(template, messages, true, &bos, &eos)?;
    let add_bos = bos.is_empty() || !text.starts_with(&bos);
    tok.encode(&(text + answer_prefix), add_bos, true)
}

fn template_error(e: &JinjaError) -> Error {
    let reason = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    Error::ChatTemplate {
        line: e.line(),
        reason,
    }
}

/// `strftime_now(format)`: today's date, for templates that print it (Llama 3.1). Only
/// the directives such templates use are supported (`%d %b %Y %m %B %y`).
fn strftime_now(format: String) -> std::result::Result<String, JinjaError> {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    let (y, m, d) = civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let name = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('%') => out.push('%'),
            other => {
                return Err(JinjaError::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}",
                        other.unwrap_or(' ')
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

/// `tojson` as transformers defines it: JSON without HTML escaping, optional `indent`.
fn tojson(v: Value, indent: Option<usize>) -> std::result::Result<Value, JinjaError> {
    let json = serde_json::to_value(&v)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let text = match indent {
        None => serde_json::to_string(&json),
        Some(n) => {
            let ind = vec![b' '; n];
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&ind);
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            json.serialize(&mut ser)
                .map(|_| String::from_utf8_lossy(&buf).into_owned())
        }
    }
    .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    // Python's json.dumps separates items with ", " and keys with ": ".
    Ok(Value::from_safe_string(python_separators(
        &text,
        indent.is_some(),
    )))
}

/// serde_json's compact form with Python's `", "` and `": "` separators outside strings.
fn python_separators(json: &str, pretty: bool) -> String {
    if pretty {
        return json.to_string();
    }
    let mut out = String::with_capacity(json.len() + json.len() / 8);
    let (mut in_str, mut escaped) = (false, false);
    for c in json.chars() {
        out.push(c);
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            ',' | ':' => out.push(' '),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_with_default_system() {
        let out = render(CHATML, &[Message::new("user", "Hi")], true, "", "").unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn failures_name_the_template_line() {
        let t = "{{ bos_token }}\n{% if messages[0].role == 'system' %}\n{{ raise_exception('no system turns') }}\n{% endif %}";
        let e = render(t, &[Message::new("system", "x")], true, "<s>", "</s>").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("line 3") && msg.contains("no system turns"),
            "{msg}"
        );
        let e = render("{% for %}", &[], true, "", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("syntax error"), "{e}");
        // A hostile template (from a model file) ends with an error: an endless loop and a
        // string doubled to 16 GiB run out of fuel, endless recursion hits the limit.
        for (t, why) in [
            (
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                "fuel",
            ),
            (
                "{% set ns = namespace(x='ab') %}{% for i in range(34) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x }}",
                "fuel",
            ),
            ("{{ 'a' * 10000000000 }}", "fuel"),
            (
                "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
                "recursion",
            ),
        ] {
            let e = render(t, &[], true, "", "").unwrap_err().to_string();
            assert!(e.contains(why), "{t}: {e}");
        }
    }

    #[test]
    fn python_methods_json_and_dates() {
        let t = "{{ messages[0].content.strip() }}|{{ {'a': [1, 'x<y']} | tojson }}|{{ strftime_now('%d %b %Y') | length }}";
        let out = render(t, &[Message::new("user", "  hi \n")], false, "", "").unwrap();
        assert_eq!(out, "hi|{\"a\": [1, \"x<y\"]}|11");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
    }
}
