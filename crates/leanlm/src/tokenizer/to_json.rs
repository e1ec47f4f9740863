//! Tokenizer → Hugging Face `tokenizer.json` and `tokenizer_config.json`, so that models
//! written as safetensors folders carry their tokenizer (read back by `from_json`).

use serde_json::{json, Map, Value as Json};

use super::bpe::Tokenizer;

/// GGUF token types that are not plain byte-level text: control and user-defined.
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

impl Tokenizer {
    /// (`tokenizer.json`, `tokenizer_config.json`) contents.
    pub fn hf_json(&self) -> (Json, Json) {
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
        let tokenizer = json!({
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
        });
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
}
