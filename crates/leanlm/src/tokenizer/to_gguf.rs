//! Tokenizer → GGUF metadata (`tokenizer.ggml.*`), so converted models carry it.

use super::bpe::Tokenizer;
use crate::error::{Error, Result};
use crate::model::gguf::{Array, Value};

impl Tokenizer {
    pub fn gguf_metadata(&self) -> Result<Vec<(String, Value)>> {
        if let Some(ext) = self.external() {
            return Err(Error::Tokenizer(format!(
                "a {} tokenizer.json cannot be written as GGUF metadata yet; \
                 write the model as a Hugging Face folder instead",
                ext.kind
            )));
        }
        let pre = self.pre_tokenizer().gguf_name().ok_or_else(|| {
            Error::Tokenizer(format!(
                "pre-tokenizer {:?} has no GGUF name that llama.cpp knows",
                self.pre_tokenizer().patterns
            ))
        })?;
        let s = |v: &str| Value::String(v.to_string());
        let mut kv = vec![
            ("tokenizer.ggml.model".to_string(), s("gpt2")),
            ("tokenizer.ggml.pre".to_string(), s(pre)),
            (
                "tokenizer.ggml.tokens".to_string(),
                Value::Array(Array::String(self.spellings().to_vec())),
            ),
            (
                "tokenizer.ggml.token_type".to_string(),
                Value::Array(Array::I32(self.token_types())),
            ),
            (
                "tokenizer.ggml.merges".to_string(),
                Value::Array(Array::String(
                    self.merge_list()
                        .iter()
                        .map(|(a, b)| format!("{a} {b}"))
                        .collect(),
                )),
            ),
            (
                "tokenizer.ggml.add_bos_token".to_string(),
                Value::Bool(self.add_bos),
            ),
        ];
        if let Some(b) = self.bos {
            kv.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
        }
        if let Some(e) = self.eos {
            kv.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(e)));
        }
        if let Some(t) = &self.chat_template {
            kv.push(("tokenizer.chat_template".into(), s(t)));
        }
        Ok(kv)
    }
}
