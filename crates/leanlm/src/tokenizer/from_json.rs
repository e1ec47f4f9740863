//! Tokenizer from a Hugging Face `tokenizer.json` (byte-level BPE models).

use std::path::Path;

use serde_json::Value as Json;

use super::bpe::{Tokenizer, TokenizerParts};
use super::pretokenize::{PreTokenizer, DIGITS, GPT2};
use crate::error::{Error, Result};

impl Tokenizer {
    /// `dir` holds `tokenizer.json` and optionally `tokenizer_config.json` (for BOS,
    /// EOS and the chat template).
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Tokenizer(format!(
                "{}: {e} (a Hugging Face model folder needs tokenizer.json)",
                path.display()
            ))
        })?;
        let j: Json = serde_json::from_str(&text)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let bad = |what: &str| Error::Tokenizer(format!("{}: {what}", path.display()));
        let model = &j["model"];
        if model["type"].as_str() != Some("BPE") {
            return Err(bad("only BPE tokenizers are supported"));
        }
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| bad("model.vocab is missing"))?;
        let mut entries: Vec<(u32, String)> = vocab
            .iter()
            .map(|(k, v)| {
                v.as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .map(|i| (i, k.clone()))
                    .ok_or_else(|| bad(&format!("vocab id of {k:?} is {v}, not a token id")))
            })
            .collect::<Result<_>>()?;
        let mut special_ids = Vec::new();
        for t in j["added_tokens"].as_array().into_iter().flatten() {
            let id = t["id"].as_u64().and_then(|i| u32::try_from(i).ok());
            let (Some(id), Some(content)) = (id, t["content"].as_str()) else {
                return Err(bad(&format!("malformed added_tokens entry {t}")));
            };
            match vocab.get(content).and_then(Json::as_u64) {
                None => entries.push((id, content.to_string())),
                Some(v) if v == id as u64 => {}
                Some(v) => {
                    return Err(bad(&format!(
                        "added token {content:?} has id {id} but the vocabulary gives it {v}"
                    )))
                }
            }
            special_ids.push(id);
        }
        entries.sort();
        entries.dedup();
        if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(bad(&format!(
                "tokens {:?} and {:?} share id {}",
                w[0].1, w[1].1, w[0].0
            )));
        }
        if let Some((i, e)) = entries.iter().enumerate().find(|(i, e)| e.0 as usize != *i) {
            return Err(bad(&format!(
                "vocabulary ids are not contiguous from 0 (id {i} is missing, next is {})",
                e.0
            )));
        }
        let tokens: Vec<String> = entries.into_iter().map(|e| e.1).collect();
        let merges = model["merges"]
            .as_array()
            .ok_or_else(|| bad("model.merges is missing"))?
            .iter()
            .map(|m| match m {
                Json::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string())),
                Json::Array(p) if p.len() == 2 => {
                    Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string()))
                }
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("malformed merge"))?;
        let patterns = pre_tokenizer_patterns(&j["pre_tokenizer"]).map_err(|e| bad(&e))?;
        let pats: Vec<&str> = patterns.iter().map(String::as_str).collect();

        let cfg: Json = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Json::Null);
        let named = |key: &str| -> Option<u32> {
            let v = &cfg[key];
            let s = v.as_str().or_else(|| v["content"].as_str())?;
            tokens.iter().position(|t| t == s).map(|i| i as u32)
        };
        Tokenizer::build(TokenizerParts {
            bos: named("bos_token"),
            eos: named("eos_token"),
            add_bos: cfg["add_bos_token"].as_bool().unwrap_or(false),
            chat_template: cfg["chat_template"].as_str().map(str::to_string),
            tokens,
            merges,
            pre: PreTokenizer::new(&pats)?,
            special_ids,
            user_ids: Vec::new(),
            spm: None,
        })
    }
}

/// Translate the pre-tokenizer pipeline of tokenizer.json into our regex list.
fn pre_tokenizer_patterns(p: &Json) -> std::result::Result<Vec<String>, String> {
    match p["type"].as_str() {
        None => Ok(vec![GPT2.to_string()]),
        Some("Sequence") => {
            let mut out = Vec::new();
            for step in p["pretokenizers"].as_array().into_iter().flatten() {
                out.extend(pre_tokenizer_patterns(step)?);
            }
            Ok(out)
        }
        Some("ByteLevel") => match p["use_regex"].as_bool().unwrap_or(true) {
            true if p["add_prefix_space"].as_bool().unwrap_or(false) => {
                Err("ByteLevel with add_prefix_space is not supported".into())
            }
            true => Ok(vec![GPT2.to_string()]),
            false => Ok(vec![]),
        },
        Some("Digits") if p["individual_digits"].as_bool().unwrap_or(false) => {
            Ok(vec![DIGITS.to_string()])
        }
        Some("Digits") => Ok(vec![r"\p{N}+".to_string()]),
        Some("Split") => match (p["pattern"]["Regex"].as_str(), p["behavior"].as_str()) {
            (Some(re), Some("Isolated")) => Ok(vec![re.to_string()]),
            _ => Err("only Split with a Regex pattern and Isolated behavior is supported".into()),
        },
        Some(other) => Err(format!("pre-tokenizer '{other}' is not supported")),
    }
}
