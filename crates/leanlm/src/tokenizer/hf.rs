//! `tokenizer.json` models that llama.cpp's GGUF vocabularies do not cover (Unigram,
//! WordPiece, WordLevel, and BPE pipelines with normalizers or pre-tokenizers outside
//! llama.cpp's regex set) run through Hugging Face's `tokenizers` crate, which defines
//! what those files mean.
//!
//! Byte-level BPE and SentencePiece vocabularies stay with our own code ([`super::bpe`],
//! [`super::spm`]): a model read from a Hugging Face folder and the same model converted
//! to GGUF must give the token ids llama.cpp gives, and llama.cpp's special-token
//! splitting and SentencePiece merging differ in details from `tokenizers`'.
//!
//! Conventions kept the same as for our own vocabularies: BOS is prepended by us when the
//! model asks for it (never the post-processor's pair/EOS templates, which would append
//! `</s>` or `[SEP]` to a prompt); control tokens are split out of text only when asked,
//! user-defined tokens always.

use serde_json::Value as Json;

use super::byte_level;
use crate::error::{Error, Result};

/// A `tokenizers` pipeline and what our [`super::Tokenizer`] needs to know of it.
pub(super) struct External {
    /// Splits every added token out of the text.
    parse: tokenizers::Tokenizer,
    /// Encodes the text of special (control) tokens like any text.
    literal: tokenizers::Tokenizer,
    /// The file as read, written again as is by the Hugging Face writer.
    pub json: Json,
    /// `model.type`: Unigram, WordPiece, WordLevel or BPE.
    pub kind: String,
}

/// What [`External::load`] gives the tokenizer builder.
pub(super) struct ExternalParts {
    pub external: External,
    /// Vocabulary spellings by id, added tokens included.
    pub tokens: Vec<String>,
    /// The bytes each id stands for when decoded.
    pub pieces: Vec<Vec<u8>>,
    pub special_ids: Vec<u32>,
    pub user_ids: Vec<u32>,
    /// Whether the post-processor starts a single sequence with a special token.
    pub post_processor_bos: Option<u32>,
}

/// Vocabularies beyond this are refused before `tokenizers` allocates for them.
const MAX_VOCAB: usize = 4 << 20;

impl External {
    pub fn load(text: &str, j: &Json) -> std::result::Result<ExternalParts, String> {
        let kind = j["model"]["type"]
            .as_str()
            .ok_or("model.type is missing")?
            .to_string();
        let n_model = match &j["model"]["vocab"] {
            Json::Object(m) => m.len(),
            Json::Array(a) => a.len(),
            _ => return Err(format!("model.vocab of the {kind} model is missing")),
        };
        if n_model == 0 || n_model > MAX_VOCAB {
            return Err(format!("the {kind} vocabulary has {n_model} tokens"));
        }
        if kind == "Unigram" {
            check_unigram(&j["model"], n_model)?;
        }
        // `tokenizers` is robust to what its own writer produces; on a hostile file a
        // panic in it must still become an error naming the file.
        let parse = catch(|| text.parse::<tokenizers::Tokenizer>())
            .map_err(|_| format!("the {kind} tokenizer could not be built"))?
            .map_err(|e| format!("{e}"))?;
        let mut literal = parse.clone();
        literal.set_encode_special_tokens(true);

        let n = parse.get_vocab_size(true);
        if n == 0 || n > MAX_VOCAB {
            return Err(format!("the {kind} vocabulary has {n} tokens"));
        }
        let tokens = (0..n as u32)
            .map(|i| {
                parse.id_to_token(i).ok_or_else(|| {
                    format!("vocabulary ids are not contiguous from 0 (id {i} is missing)")
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut special_ids = Vec::new();
        let mut user_ids = Vec::new();
        for (id, t) in parse.get_added_tokens_decoder() {
            match t.special {
                true => special_ids.push(id),
                false => user_ids.push(id),
            }
        }
        special_ids.sort_unstable();
        user_ids.sort_unstable();
        let rule = PieceRule::from_decoder(&j["decoder"]);
        let pieces = tokens
            .iter()
            .enumerate()
            .map(
                |(i, t)| match special_ids.binary_search(&(i as u32)).is_ok() {
                    true => t.as_bytes().to_vec(),
                    false => rule.bytes(t),
                },
            )
            .collect();
        let first = |special: bool| {
            catch(|| parse.encode_fast("a", special))
                .ok()
                .and_then(|r| r.ok())
                .and_then(|e| e.get_ids().first().copied())
        };
        let post_processor_bos = match (first(true), first(false)) {
            (Some(with), without) if Some(with) != without => Some(with),
            _ => None,
        }
        .filter(|id| special_ids.binary_search(id).is_ok());
        Ok(ExternalParts {
            external: External {
                parse,
                literal,
                json: j.clone(),
                kind,
            },
            tokens,
            pieces,
            special_ids,
            user_ids,
            post_processor_bos,
        })
    }

    /// Ids of `text`, without the post-processor's special tokens.
    pub fn encode(&self, text: &str, parse_special: bool, ids: &mut Vec<u32>) -> Result<()> {
        let tok = match parse_special {
            true => &self.parse,
            false => &self.literal,
        };
        let enc = catch(|| tok.encode_fast(text, false))
            .map_err(|_| Error::Tokenizer(format!("the {} tokenizer failed", self.kind)))?
            .map_err(|e| Error::Tokenizer(format!("{} tokenizer: {e}", self.kind)))?;
        ids.extend_from_slice(enc.get_ids());
        Ok(())
    }
}

/// Runs `f`, turning a panic inside `tokenizers` into `Err(())`.
fn catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, ()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| ())
}

/// `tokenizers` indexes a Unigram vocabulary by `unk_id` and turns scores into a
/// lattice; reject what would make either misbehave.
fn check_unigram(model: &Json, n: usize) -> std::result::Result<(), String> {
    for (i, e) in model["vocab"].as_array().into_iter().flatten().enumerate() {
        let score = e.get(1).and_then(Json::as_f64);
        if !score.is_some_and(f64::is_finite) {
            return Err(format!("Unigram piece {i} has no finite score ({e})"));
        }
    }
    match &model["unk_id"] {
        Json::Null => Ok(()),
        v => match v.as_u64() {
            Some(u) if (u as usize) < n => Ok(()),
            _ => Err(format!(
                "Unigram unk_id {v} is outside the vocabulary ({n})"
            )),
        },
    }
}

/// How a vocabulary spelling becomes bytes, read off the `decoder` pipeline.
#[derive(Default)]
struct PieceRule {
    byte_level: bool,
    byte_fallback: bool,
    /// Spellings of a space (`▁` for Metaspace and SentencePiece-style Replace).
    space: Vec<String>,
    /// WordPiece's continuation prefix; other pieces start a word with a space.
    continuation: Option<String>,
}

impl PieceRule {
    fn from_decoder(d: &Json) -> Self {
        let mut rule = Self::default();
        rule.read(d);
        rule
    }

    fn read(&mut self, d: &Json) {
        match d["type"].as_str() {
            Some("Sequence") => d["decoders"]
                .as_array()
                .into_iter()
                .flatten()
                .for_each(|s| self.read(s)),
            Some("ByteLevel") => self.byte_level = true,
            Some("ByteFallback") => self.byte_fallback = true,
            Some("Metaspace") => self
                .space
                .push(d["replacement"].as_str().unwrap_or("▁").to_string()),
            Some("Replace") if d["content"].as_str() == Some(" ") => {
                if let Some(p) = d["pattern"]["String"].as_str() {
                    self.space.push(p.to_string());
                }
            }
            Some("WordPiece") => {
                self.continuation = Some(d["prefix"].as_str().unwrap_or("##").to_string())
            }
            _ => {}
        }
    }

    fn bytes(&self, t: &str) -> Vec<u8> {
        if self.byte_fallback {
            let hex = t.strip_prefix("<0x").and_then(|r| r.strip_suffix('>'));
            if let Some(b) = hex
                .filter(|h| h.len() == 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                return vec![b];
            }
        }
        if self.byte_level {
            if let Some(b) = byte_level::decode(t) {
                return b;
            }
        }
        if let Some(prefix) = &self.continuation {
            return match t.strip_prefix(prefix.as_str()) {
                Some(rest) => rest.as_bytes().to_vec(),
                None => format!(" {t}").into_bytes(),
            };
        }
        let mut s = t.to_string();
        for sp in self.space.iter().filter(|s| !s.is_empty()) {
            s = s.replace(sp.as_str(), " ");
        }
        s.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Tokenizer;
    use std::path::PathBuf;

    fn added(id: u32, content: &str) -> serde_json::Value {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    }

    fn template(first: Option<(&str, u32)>, last: Option<(&str, u32)>) -> serde_json::Value {
        let mut single = Vec::new();
        let mut special = serde_json::Map::new();
        for (t, id) in first.into_iter().chain(last) {
            special.insert(
                t.into(),
                serde_json::json!({"id": t, "ids": [id], "tokens": [t]}),
            );
        }
        if let Some((t, _)) = first {
            single.push(serde_json::json!({"SpecialToken": {"id": t, "type_id": 0}}));
        }
        single.push(serde_json::json!({"Sequence": {"id": "A", "type_id": 0}}));
        if let Some((t, _)) = last {
            single.push(serde_json::json!({"SpecialToken": {"id": t, "type_id": 0}}));
        }
        serde_json::json!({"type": "TemplateProcessing", "single": single, "pair": single,
            "special_tokens": special})
    }

    /// A T5-style Unigram vocabulary: Metaspace pre-tokenizer, `</s>` appended by the
    /// post-processor, no BOS.
    fn unigram() -> serde_json::Value {
        let metaspace = serde_json::json!({"type": "Metaspace", "replacement": "▁",
            "prepend_scheme": "always", "split": true});
        let pieces = [
            ("<pad>", 0.0),
            ("</s>", 0.0),
            ("<unk>", 0.0),
            ("▁", -2.0),
            ("▁hello", -3.0),
            ("▁hel", -4.0),
            ("lo", -4.5),
            ("▁world", -3.5),
            ("h", -6.0),
            ("e", -6.0),
            ("l", -6.0),
            ("o", -6.0),
        ];
        serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [added(0, "<pad>"), added(1, "</s>"), added(2, "<unk>")],
            "normalizer": null,
            "pre_tokenizer": metaspace,
            "post_processor": template(None, Some(("</s>", 1))),
            "decoder": metaspace,
            "model": {"type": "Unigram", "unk_id": 2, "byte_fallback": false,
                "vocab": pieces.iter().map(|(p, s)| serde_json::json!([p, s])).collect::<Vec<_>>()},
        })
    }

    /// A BERT-style WordPiece vocabulary: lower-casing normalizer, `[CLS] … [SEP]`.
    fn wordpiece() -> serde_json::Value {
        serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [added(0, "[PAD]"), added(1, "[UNK]"), added(2, "[CLS]"), added(3, "[SEP]")],
            "normalizer": {"type": "BertNormalizer", "clean_text": true,
                "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": template(Some(("[CLS]", 2)), Some(("[SEP]", 3))),
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100,
                "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "un": 4, "##aff": 5,
                    "##able": 6, "the": 7, "!": 8}},
        })
    }

    fn folder(name: &str, json: &serde_json::Value) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("leanlm-hf-tok-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
        dir
    }

    fn load(name: &str, json: &serde_json::Value) -> crate::error::Result<Tokenizer> {
        let dir = folder(name, json);
        let t = Tokenizer::from_hf_dir(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        t
    }

    #[test]
    fn unigram_segments_by_best_score_and_never_appends_eos() {
        let tok = load("unigram", &unigram()).unwrap();
        assert_eq!(tok.vocab_size(), 12);
        // ▁hello (−3) beats ▁hel + lo (−8.5); the post-processor's </s> is not added.
        assert_eq!(tok.encode("hello world", true, false).unwrap(), [4, 7]);
        assert_eq!(tok.decode_lossy(&[4, 7]), " hello world");
        assert_eq!((tok.bos, tok.add_bos), (None, false));
        assert_eq!(tok.encode("hello</s>", false, true).unwrap(), [4, 1]);
        assert!(tok.is_special(1) && !tok.is_special(4));
        // Written again as Hugging Face writes it, and as GGUF refused by name.
        let (json, _) = tok.hf_json();
        assert_eq!(json, unigram());
        let e = tok.gguf_metadata().unwrap_err().to_string();
        assert!(
            e.contains("Unigram") && e.contains("Hugging Face folder"),
            "{e}"
        );
    }

    #[test]
    fn wordpiece_normalizes_splits_words_and_takes_cls_as_bos() {
        let tok = load("wordpiece", &wordpiece()).unwrap();
        assert_eq!((tok.bos, tok.add_bos), (Some(2), true));
        // BERT's lower-casing and punctuation split, then greedy longest-match pieces;
        // [CLS] from the post-processor's template, its [SEP] left off.
        assert_eq!(
            tok.encode("The unaffable!", true, false).unwrap(),
            [2, 7, 4, 5, 6, 8]
        );
        assert_eq!(tok.decode_lossy(&[7, 4, 5, 6]), " the unaffable");
        // Control tokens are split out only when asked.
        assert_eq!(tok.encode("the[SEP]", false, true).unwrap(), [7, 3]);
        assert_eq!(tok.encode("the[SEP]", false, false).unwrap(), [7, 1, 1, 1]);
        // tokenizer_config.json overrides what the post-processor implies.
        let dir = folder("wordpiece-cfg", &wordpiece());
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"add_bos_token": false, "eos_token": "[SEP]"}"#,
        )
        .unwrap();
        let tok = Tokenizer::from_hf_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((tok.add_bos, tok.eos), (false, Some(3)));
        assert_eq!(tok.encode("the", true, false).unwrap(), [7]);
    }

    #[test]
    fn broken_unigram_and_wordpiece_files_are_errors_naming_the_problem() {
        let mut j = unigram();
        j["model"]["unk_id"] = 99.into();
        let e = load("bad-unk", &j).err().unwrap().to_string();
        assert!(e.contains("unk_id 99"), "{e}");
        let mut j = unigram();
        j["model"]["vocab"] = serde_json::json!([]);
        let e = load("empty", &j).err().unwrap().to_string();
        assert!(e.contains("0 tokens"), "{e}");
        let mut j = unigram();
        j["model"]["vocab"][4] = serde_json::json!(["▁hello", "high"]);
        let e = load("score", &j).err().unwrap().to_string();
        assert!(e.contains("no finite score"), "{e}");
        let mut j = wordpiece();
        j["model"]["vocab"] =
            serde_json::json!({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "un": 7});
        let e = load("gap", &j).err().unwrap().to_string();
        assert!(e.contains("not contiguous"), "{e}");
    }
}
