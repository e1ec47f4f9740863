//! Pre-tokenization: a list of regexes applied in order, as llama.cpp applies them. Each
//! regex splits every current piece into its matches and the text between them (both
//! kept), so later regexes refine what earlier ones produced.

use fancy_regex::Regex;

use crate::error::{Error, Result};

/// GPT-2's pattern.
pub const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's pattern (also used by many later models).
pub const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pattern.
pub const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Each digit on its own.
pub const DIGITS: &str = r"\p{N}";

#[derive(Clone)]
pub struct PreTokenizer {
    regexes: Vec<Regex>,
    /// The patterns, kept for display and for writers.
    pub patterns: Vec<String>,
}

/// Compiled regexes by pattern: compiling GPT-2's pattern costs about 10 ms, paid once
/// per process rather than at every load of a vocabulary. A regex is cheap to clone
/// (it shares its program). Bounded, since tokenizer.json may name any pattern.
fn compiled(p: &str) -> Result<Regex> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(p) {
        return Ok(re.clone());
    }
    let re = Regex::new(p)
        .map_err(|e| Error::Tokenizer(format!("bad pre-tokenizer regex {p:?}: {e}")))?;
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() < 64 {
        map.insert(p.to_string(), re.clone());
    }
    Ok(re)
}

impl PreTokenizer {
    pub fn new(patterns: &[&str]) -> Result<Self> {
        let regexes = patterns
            .iter()
            .map(|p| compiled(p))
            .collect::<Result<_>>()?;
        Ok(Self {
            regexes,
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The regex list llama.cpp uses for a GGUF `tokenizer.ggml.pre` name.
    pub fn for_gguf_name(name: &str) -> Result<Self> {
        let patterns: &[&str] = match name {
            "default" | "gpt2" | "gpt-2" | "mpt" | "olmo" | "jais" => &[GPT2],
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => &[DIGITS, GPT2],
            "llama3" | "llama-bpe" | "llama-v3" | "falcon3" | "smaug-bpe" | "pixtral" => &[LLAMA3],
            "qwen2" | "deepseek-r1-qwen" | "megrez" => &[QWEN2],
            other => {
                return Err(Error::Tokenizer(format!(
                    "unknown pre-tokenizer '{other}' (known: gpt2, smollm, starcoder, llama-bpe, qwen2, …)"
                )))
            }
        };
        Self::new(patterns)
    }

    /// The GGUF `tokenizer.ggml.pre` name of this regex list, if it has one.
    pub fn gguf_name(&self) -> Option<&'static str> {
        let p: Vec<&str> = self.patterns.iter().map(String::as_str).collect();
        match p[..] {
            [GPT2] => Some("gpt2"),
            [DIGITS, GPT2] => Some("smollm"),
            [LLAMA3] => Some("llama-bpe"),
            [QWEN2] => Some("qwen2"),
            _ => None,
        }
    }

    /// Split `text` into pieces; their concatenation is `text`.
    pub fn split<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut pieces = vec![text];
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                let mut last = 0;
                for m in re.find_iter(piece) {
                    // fancy-regex only fails on backtrack limits; treat the rest as one piece.
                    let Ok(m) = m else { break };
                    if m.start() > last {
                        next.push(&piece[last..m.start()]);
                    }
                    if m.end() > m.start() {
                        next.push(m.as_str());
                    }
                    last = m.end();
                }
                if last < piece.len() {
                    next.push(&piece[last..]);
                }
            }
            pieces = next;
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_pattern_pieces() {
        let p = PreTokenizer::new(&[GPT2]).unwrap();
        assert_eq!(
            p.split("Hello world's  end!\n"),
            vec!["Hello", " world", "'s", " ", " end", "!", "\n"]
        );
    }

    #[test]
    fn smollm_splits_digits_and_keeps_their_space_apart() {
        let p = PreTokenizer::for_gguf_name("smollm").unwrap();
        // " 2024" → the space stays alone because each digit became its own piece first.
        assert_eq!(
            p.split("in 2024."),
            vec!["in", " ", "2", "0", "2", "4", "."]
        );
    }

    #[test]
    fn unknown_name_is_an_error() {
        assert!(PreTokenizer::for_gguf_name("martian").is_err());
    }
}
