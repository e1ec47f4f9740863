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
        let bad = |what: String| Error::Tokenizer(format!("{}: {what}", f.path.display()));
        let strings = |key: &str| -> Result<Vec<String>> {
            match f.get(key) {
                None => Err(missing(key)),
                Some(Value::Array(a)) => a.as_strings().map(<[String]>::to_vec).ok_or_else(|| {
                    bad(format!(
                        "{key} is an array of {}, expected strings",
                        a_type(a)
                    ))
                }),
                Some(v) => Err(bad(format!(
                    "{key} is {}, expected an array of strings",
                    v.type_description()
                ))),
            }
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        // A SentencePiece vocabulary merges by score and has no merge list.
        let merges = match sentencepiece {
            true => Vec::new(),
            false => strings("tokenizer.ggml.merges")?
                .into_iter()
                .map(|m| match m.split_once(' ') {
                    Some((a, b)) => Ok((a.to_string(), b.to_string())),
                    None => Err(bad(format!(
                        "merge {m:?} is not two tokens separated by a space"
                    ))),
                })
                .collect::<Result<_>>()?,
        };
        // Per-token arrays must describe exactly the vocabulary.
        for key in ["tokenizer.ggml.token_type", "tokenizer.ggml.scores"] {
            match f.get(key) {
                None => {}
                Some(Value::Array(a)) if a.len() == tokens.len() => {}
                Some(v) => {
                    return Err(bad(format!(
                        "{key} ({} with {} entries) does not match the {} tokens",
                        v.type_description(),
                        v.as_array().map_or(1, |a| a.len()),
                        tokens.len()
                    )))
                }
            }
        }
        let types: Vec<i64> = match f.get("tokenizer.ggml.token_type") {
            None => vec![token_type::NORMAL as i64; tokens.len()],
            Some(v) => v
                .as_array()
                .into_iter()
                .flat_map(|a| a.iter())
                .map(|t| {
                    t.as_i64().ok_or_else(|| {
                        bad(format!(
                            "tokenizer.ggml.token_type holds {}, expected integers",
                            t.type_description()
                        ))
                    })
                })
                .collect::<Result<_>>()?,
        };
        let ids_of = |wanted: &[i32]| -> Vec<u32> {
            types
                .iter()
                .enumerate()
                .filter(|(_, &t)| wanted.iter().any(|&w| w as i64 == t))
                .map(|(i, _)| i as u32)
                .collect()
        };
        let spm = match sentencepiece {
            false => None,
            true => {
                let scores: Vec<f32> = match f.get("tokenizer.ggml.scores") {
                    None => return Err(missing("tokenizer.ggml.scores")),
                    Some(v) => v
                        .as_array()
                        .into_iter()
                        .flat_map(|a| a.iter())
                        .map(|s| {
                            s.as_f64().map(|x| x as f32).ok_or_else(|| {
                                bad(format!(
                                    "tokenizer.ggml.scores holds {}, expected numbers",
                                    s.type_description()
                                ))
                            })
                        })
                        .collect::<Result<_>>()?,
                };
                let add_space_prefix = match f.get("tokenizer.ggml.add_space_prefix") {
                    // llama.cpp's default for SentencePiece vocabularies.
                    None => true,
                    Some(v) => v.as_bool().ok_or_else(|| {
                        f.wrong_type("tokenizer.ggml.add_space_prefix", v, "a bool")
                    })?,
                };
                Some(SpmParts {
                    scores,
                    types: types.iter().map(|&t| t as i32).collect(),
                    add_space_prefix,
                })
            }
        };
        let pre_name = match f.get("tokenizer.ggml.pre") {
            None => "default",
            Some(_) => f.get_str("tokenizer.ggml.pre")?,
        };
        let id = |key: &str| -> Result<Option<u32>> {
            match f.opt_u64(key)? {
                None => Ok(None),
                Some(v) if v < tokens.len() as u64 => Ok(Some(v as u32)),
                Some(v) => Err(bad(format!(
                    "{key} {v} is outside the vocabulary ({} tokens)",
                    tokens.len()
                ))),
            }
        };
        let add_bos = match f.get("tokenizer.ggml.add_bos_token") {
            // llama.cpp's defaults: SentencePiece vocabularies add BOS, BPE ones do not.
            None => sentencepiece,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| f.wrong_type("tokenizer.ggml.add_bos_token", v, "a bool"))?,
        };
        let chat_template = match f.get("tokenizer.chat_template") {
            None => None,
            Some(_) => Some(f.get_str("tokenizer.chat_template")?.to_string()),
        };
        // SentencePiece vocabularies that name no ids use llama.cpp's 1 and 2.
        let default_id = |v: u32| (sentencepiece && (v as usize) < tokens.len()).then_some(v);
        let (bos, eos) = (
            id("tokenizer.ggml.bos_token_id")?.or(default_id(1)),
            id("tokenizer.ggml.eos_token_id")?.or(default_id(2)),
        );
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
            bos,
            eos,
            add_bos,
            chat_template,
            spm,
        })
    }
}

fn a_type(a: &crate::model::gguf::Array) -> &'static str {
    crate::model::gguf::type_name(a.elem_type_id())
}
