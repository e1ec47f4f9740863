//! Tokenizer from GGUF metadata (`tokenizer.ggml.*`).

use super::bpe::{token_type, SpmParts, Tokenizer, TokenizerParts};
use super::pretokenize::PreTokenizer;
use crate::error::{Error, Result};
use crate::model::gguf::{GgufFile, Value};

impl Tokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let missing = |what: &str| {
            Error::Tokenizer(format!(
                "{}: no tokenizer in this GGUF ({what} is missing)",
                f.path.display()
            ))
        };
        let model = f
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .ok_or_else(|| missing("tokenizer.ggml.model"))?;
        let sentencepiece = match model {
            "gpt2" => false,
            "llama" => true,
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer model '{other}' is not supported (byte-level BPE 'gpt2' or SentencePiece 'llama')"
                )))
            }
        };
        let tokens: Vec<String> = f
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| missing("tokenizer.ggml.tokens"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| missing("a string token"))
            })
            .collect::<Result<_>>()?;
        let merges = match sentencepiece {
            true => Vec::new(),
            false => f
                .get("tokenizer.ggml.merges")
                .and_then(Value::as_array)
                .ok_or_else(|| missing("tokenizer.ggml.merges"))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .and_then(|m| m.split_once(' '))
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .ok_or_else(|| Error::Tokenizer(format!("bad merge entry {v:?}")))
                })
                .collect::<Result<_>>()?,
        };
        let types: Vec<i32> = match f.get("tokenizer.ggml.token_type") {
            None => vec![token_type::NORMAL; tokens.len()],
            Some(v) => v
                .as_array()
                .ok_or_else(|| missing("tokenizer.ggml.token_type as an array"))?
                .iter()
                .map(|v| v.as_i64().map(|t| t as i32))
                .collect::<Option<_>>()
                .ok_or_else(|| missing("integer token types"))?,
        };
        if types.len() != tokens.len() {
            return Err(Error::Tokenizer(format!(
                "{}: {} tokens but {} token types",
                f.path.display(),
                tokens.len(),
                types.len()
            )));
        }
        let ids_of = |wanted: &[i32]| -> Vec<u32> {
            types
                .iter()
                .enumerate()
                .filter(|(_, t)| wanted.contains(t))
                .map(|(i, _)| i as u32)
                .collect()
        };
        let spm = match sentencepiece {
            false => None,
            true => {
                let scores: Vec<f32> = f
                    .get("tokenizer.ggml.scores")
                    .and_then(Value::as_array)
                    .ok_or_else(|| missing("tokenizer.ggml.scores"))?
                    .iter()
                    .map(|v| v.as_f64().map(|s| s as f32))
                    .collect::<Option<_>>()
                    .ok_or_else(|| missing("numeric token scores"))?;
                Some(SpmParts {
                    scores,
                    types: types.clone(),
                    // llama.cpp's default for SentencePiece vocabularies: prefix a space.
                    add_space_prefix: f
                        .get("tokenizer.ggml.add_space_prefix")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                })
            }
        };
        let pre_name = f
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let id = |key: &str| f.get(key).and_then(Value::as_u64).map(|v| v as u32);
        Tokenizer::build(TokenizerParts {
            tokens,
            merges,
            pre: match sentencepiece {
                true => PreTokenizer::new(&[])?,
                false => PreTokenizer::for_gguf_name(pre_name)?,
            },
            // Unknown tokens (`<unk>`) are matched in text as control tokens are.
            special_ids: ids_of(&[token_type::CONTROL, token_type::UNKNOWN]),
            user_ids: ids_of(&[token_type::USER_DEFINED]),
            // llama.cpp's defaults when the keys are absent: SentencePiece vocabularies
            // use ids 1 and 2 and add BOS; BPE ones name their ids and add none.
            bos: id("tokenizer.ggml.bos_token_id").or(sentencepiece.then_some(1)),
            eos: id("tokenizer.ggml.eos_token_id").or(sentencepiece.then_some(2)),
            add_bos: f
                .get("tokenizer.ggml.add_bos_token")
                .and_then(Value::as_bool)
                .unwrap_or(sentencepiece),
            chat_template: f
                .get("tokenizer.chat_template")
                .and_then(Value::as_str)
                .map(str::to_string),
            spm,
        })
    }
}
