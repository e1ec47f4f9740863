//! Tokenizer from a Hugging Face `tokenizer.json`: byte-level BPE models, and
//! SentencePiece BPE vocabularies as transformers writes them (byte fallback, `▁` for
//! spaces; Gemma, Llama 2), whose merge ranks give back SentencePiece's score order, by
//! our own code (ids equal llama.cpp's on the same vocabulary as GGUF); every other model
//! type and pipeline (Unigram, WordPiece, WordLevel, Metaspace BPE, …) by `tokenizers`.

use std::path::Path;

use serde_json::Value as Json;

use super::bpe::{token_type, SpmParts, Tokenizer, TokenizerParts};
use super::hf::External;
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
        let cfg: Json = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Json::Null);
        let model = &j["model"];
        let sentencepiece = model["byte_fallback"].as_bool().unwrap_or(false);
        let own_code = model["type"].as_str() == Some("BPE")
            && (sentencepiece || pre_tokenizer_patterns(&j["pre_tokenizer"]).is_ok());
        if !own_code {
            return external(&text, &j, &cfg).map_err(|e| bad(&e));
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
        let patterns = match sentencepiece {
            true => Vec::new(),
            false => pre_tokenizer_patterns(&j["pre_tokenizer"]).map_err(|e| bad(&e))?,
        };
        let pats: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let (bos, eos) = (
            named(&cfg, &tokens, "bos_token"),
            named(&cfg, &tokens, "eos_token"),
        );
        let add_bos = cfg["add_bos_token"].as_bool().unwrap_or(sentencepiece);
        let chat_template = cfg["chat_template"].as_str().map(str::to_string);
        if sentencepiece {
            return sentencepiece_parts(&j, tokens, &merges, bos, eos, add_bos, chat_template)
                .map_err(|e| bad(&e))
                .and_then(Tokenizer::build);
        }
        Tokenizer::build(TokenizerParts {
            bos,
            eos,
            add_bos,
            chat_template,
            tokens,
            merges,
            pre: PreTokenizer::new(&pats)?,
            special_ids,
            user_ids: Vec::new(),
            spm: None,
        })
    }
}

/// The id of a token that `tokenizer_config.json` names under `key` (as a string or as
/// an added-token object).
fn named(cfg: &Json, tokens: &[String], key: &str) -> Option<u32> {
    let v = &cfg[key];
    let s = v.as_str().or_else(|| v["content"].as_str())?;
    tokens.iter().position(|t| t == s).map(|i| i as u32)
}

/// A model our own code does not encode, through `tokenizers` ([`super::hf`]). BOS is
/// prepended when `tokenizer_config.json` says so, else when the post-processor starts a
/// sequence with it.
fn external(text: &str, j: &Json, cfg: &Json) -> std::result::Result<Tokenizer, String> {
    let parts = External::load(text, j)?;
    let bos = named(cfg, &parts.tokens, "bos_token").or(parts.post_processor_bos);
    let eos = named(cfg, &parts.tokens, "eos_token");
    let add_bos = match cfg["add_bos_token"].as_bool() {
        Some(b) => b,
        None => bos.is_some() && bos == parts.post_processor_bos,
    };
    let chat_template = cfg["chat_template"].as_str().map(str::to_string);
    Tokenizer::with_external(parts, bos, eos, add_bos, chat_template).map_err(|e| e.to_string())
}

/// A SentencePiece vocabulary from a byte-fallback BPE `tokenizer.json`: token types from
/// `added_tokens` (special: control, else user-defined), `<0xNN>` spellings (bytes) and
/// `unk_token`; each merged piece scored by its first merge's rank (earlier merges score
/// higher, as SentencePiece's scores order them); whether a `▁` is prepended from the
/// normalizer.
fn sentencepiece_parts(
    j: &Json,
    tokens: Vec<String>,
    merges: &[(String, String)],
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    chat_template: Option<String>,
) -> std::result::Result<TokenizerParts, String> {
    let n = tokens.len();
    let id_of: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut types = vec![token_type::NORMAL; n];
    for (i, t) in tokens.iter().enumerate() {
        let hex = t.strip_prefix("<0x").and_then(|r| r.strip_suffix('>'));
        if hex.is_some_and(|h| h.len() == 2 && u8::from_str_radix(h, 16).is_ok()) {
            types[i] = token_type::BYTE;
        }
    }
    for t in j["added_tokens"].as_array().into_iter().flatten() {
        if let Some(id) = t["id"].as_u64().map(|i| i as usize).filter(|&i| i < n) {
            types[id] = match t["special"].as_bool().unwrap_or(false) {
                true => token_type::CONTROL,
                false => token_type::USER_DEFINED,
            };
        }
    }
    if let Some(&unk) = j["model"]["unk_token"].as_str().and_then(|u| id_of.get(u)) {
        types[unk] = token_type::UNKNOWN;
    }
    let mut scores: Vec<f32> = (0..n).map(|i| -((merges.len() + i) as f32)).collect();
    for (rank, (a, b)) in merges.iter().enumerate().rev() {
        let merged = format!("{a}{b}");
        let id = id_of
            .get(merged.as_str())
            .ok_or_else(|| format!("merge {a:?} + {b:?} makes {merged:?}, which is not a token"))?;
        scores[*id] = -(rank as f32);
    }
    let normalizer = j["normalizer"].to_string();
    let add_space_prefix = normalizer.contains("\"Prepend\"");
    let ids_of = |wanted: &[i32]| -> Vec<u32> {
        (0..n)
            .filter(|&i| wanted.contains(&types[i]))
            .map(|i| i as u32)
            .collect()
    };
    Ok(TokenizerParts {
        special_ids: ids_of(&[token_type::CONTROL, token_type::UNKNOWN]),
        user_ids: ids_of(&[token_type::USER_DEFINED]),
        tokens,
        merges: Vec::new(),
        pre: PreTokenizer::new(&[]).map_err(|e| e.to_string())?,
        bos,
        eos,
        add_bos,
        chat_template,
        spm: Some(SpmParts {
            scores,
            types,
            add_space_prefix,
        }),
    })
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
