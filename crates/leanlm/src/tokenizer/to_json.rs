//! Tokenizer → Hugging Face `tokenizer.json` and `tokenizer_config.json`, so that models
//! written as safetensors folders carry their tokenizer (read back by `from_json`).
//!
//! A SentencePiece vocabulary is written as transformers writes Gemma's and Llama 2's:
//! a BPE model with byte fallback over `▁`-spelled pieces, spaces replaced by `▁`, and
//! the merges SentencePiece's scores imply (every split of a piece into two pieces, in
//! the order of the merged piece's score), so that HF's BPE merges in SentencePiece's
//! order and `from_json` can recover the scores' order from the merge ranks.

use serde_json::{json, Map, Value as Json};

use super::bpe::Tokenizer;

/// GGUF token types that are not plain byte-level text: control and user-defined.
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

impl Tokenizer {
    /// (`tokenizer.json`, `tokenizer_config.json`) contents.
    pub fn hf_json(&self) -> (Json, Json) {
        let tokenizer = match (self.external(), self.spm()) {
            (Some(ext), _) => ext.json.clone(),
            (None, Some(spm)) => self.spm_json(spm),
            (None, None) => self.bpe_json(),
        };
        let spellings = self.spellings();
        let name = |id: Option<u32>| id.and_then(|i| spellings.get(i as usize)).cloned();
        let config = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": name(self.bos),
            "eos_token": name(self.eos),
            "add_bos_token": self.add_bos,
            "chat_template": self.chat_template,
            "clean_up_tokenization_spaces": false,
        });
        (tokenizer, config)
    }

    /// `added_tokens` and `vocab`: control and user-defined tokens are added tokens.
    fn vocab_json(&self) -> (Map<String, Json>, Vec<Json>) {
        let spellings = self.spellings();
        let types = self.token_types();
        let mut vocab = Map::new();
        let mut added = Vec::new();
        for (id, (s, &ty)) in spellings.iter().zip(&types).enumerate() {
            if ty == CONTROL || ty == USER_DEFINED {
                added.push(json!({
                    "id": id, "content": s, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": ty == CONTROL,
                }));
            }
            vocab.insert(s.clone(), json!(id));
        }
        (vocab, added)
    }

    fn spm_json(&self, spm: &super::bpe::SpmParts) -> Json {
        let spellings = self.spellings();
        let (vocab, added) = self.vocab_json();
        let ids: std::collections::HashMap<&str, usize> = spellings
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        // (score of the merged piece, its id, split position) → merge.
        let mut merges: Vec<(f32, usize, usize)> = Vec::new();
        for (id, piece) in spellings.iter().enumerate() {
            if spm.types[id] != super::bpe::token_type::NORMAL {
                continue;
            }
            for (at, _) in piece.char_indices().skip(1) {
                if ids.contains_key(&piece[..at]) && ids.contains_key(&piece[at..]) {
                    merges.push((spm.scores[id], id, at));
                }
            }
        }
        merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let merges: Vec<Json> = merges
            .iter()
            .map(|&(_, id, at)| json!([&spellings[id][..at], &spellings[id][at..]]))
            .collect();
        let unk = spm
            .types
            .iter()
            .position(|&t| t == super::bpe::token_type::UNKNOWN)
            .map(|i| spellings[i].clone());
        let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
        let (normalizer, decoder_head) = match spm.add_space_prefix {
            true => (
                json!({"type": "Sequence", "normalizers": [
                    {"type": "Prepend", "prepend": "\u{2581}"}, replace]}),
                vec![
                    json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                    json!({"type": "ByteFallback"}),
                    json!({"type": "Fuse"}),
                    json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}),
                ],
            ),
            false => (
                replace,
                vec![
                    json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                    json!({"type": "ByteFallback"}),
                    json!({"type": "Fuse"}),
                ],
            ),
        };
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": null,
            "post_processor": null,
            "decoder": {"type": "Sequence", "decoders": decoder_head},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                "ignore_merges": false, "vocab": vocab, "merges": merges,
            },
        })
    }

    fn bpe_json(&self) -> Json {
        let (vocab, added) = self.vocab_json();
        // Our regex list in order, then byte-level mapping without a regex of its own.
        let mut steps: Vec<Json> = self
            .pre_tokenizer()
            .patterns
            .iter()
            .map(|p| {
                json!({"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": false})
            })
            .collect();
        steps.push(json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false,
        }));
        let merges: Vec<Json> = self
            .merge_list()
            .iter()
            .map(|(a, b)| json!([a, b]))
            .collect();
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": steps},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": false, "vocab": vocab, "merges": merges,
            },
        })
    }
}
