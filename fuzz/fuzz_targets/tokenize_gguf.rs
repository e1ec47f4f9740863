//! Text through the default model's own vocabulary (byte-level BPE read from its GGUF):
//! the pre-tokenizer's regexes, special-token matching and the merge loop. Without
//! special tokens, decoding must give back the text byte for byte; the one error allowed
//! is a byte the vocabulary has no token for (SmolLM2 lacks 21 of the 256, e.g. 0x13).
#![no_main]

use std::sync::OnceLock;

use leanlm::model::gguf::GgufFile;
use leanlm::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = std::env::var("LEANLM_FUZZ_MODEL").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
            )
            .into()
        });
        let f = GgufFile::open(&path).expect("the default model (scripts/fetch-model.sh)");
        Tokenizer::from_gguf(&f).expect("its vocabulary")
    })
}

fuzz_target!(|data: &[u8]| {
    let tok = tokenizer();
    let text = String::from_utf8_lossy(data);
    match tok.encode(&text, false, false) {
        Ok(ids) => assert_eq!(
            tok.decode(&ids),
            text.as_bytes(),
            "decode(encode(text)) differs from the text"
        ),
        Err(e) => assert!(e.to_string().contains("has no token"), "{e}"),
    }
    if let Ok(ids) = tok.encode(&text, true, true) {
        let _ = tok.decode_lossy(&ids);
    }
});
