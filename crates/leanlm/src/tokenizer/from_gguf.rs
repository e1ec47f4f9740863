//! Tokenizer from GGUF metadata (`tokenizer.ggml.*`).

use super::bpe::{Tokenizer, TokenizerParts};
use super::pretokenize::PreTokenizer;
use crate::error::{Error, Result};
use crate::model::gguf::{GgufFile, Value};

/// GGUF token types.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

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
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "tokenizer model '{model}' is not supported (only byte-level BPE, 'gpt2')"
            )));
        }
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
        let merges = f
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
            .collect::<Result<_>>()?;
        let types: Vec<i64> = f
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|v| v.as_i64().unwrap_or(1)).collect())
            .unwrap_or_default();
        let ids_of = |ty: i64| -> Vec<u32> {
            types
                .iter()
                .enumerate()
                .filter(|(_, &t)| t == ty)
                .map(|(i, _)| i as u32)
                .collect()
        };
        let pre_name = f
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let id = |key: &str| f.get(key).and_then(Value::as_u64).map(|v| v as u32);
        Tokenizer::build(TokenizerParts {
            tokens,
            merges,
            pre: PreTokenizer::for_gguf_name(pre_name)?,
            special_ids: ids_of(CONTROL),
            user_ids: ids_of(USER_DEFINED),
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            // llama.cpp's default for BPE vocabularies when the key is absent: no BOS.
            add_bos: f
                .get("tokenizer.ggml.add_bos_token")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            chat_template: f
                .get("tokenizer.chat_template")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}
