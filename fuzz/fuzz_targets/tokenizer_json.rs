//! A Hugging Face `tokenizer.json`: vocabulary, merges, added tokens, pre-tokenizer; a
//! tokenizer that builds then encodes and decodes a short text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = leanlm_fuzz::scratch("tok");
    std::fs::create_dir_all(&dir).expect("scratch folder");
    std::fs::write(dir.join("tokenizer.json"), data).expect("scratch file");
    if let Ok(tok) = leanlm::tokenizer::Tokenizer::from_hf_dir(&dir) {
        for special in [false, true] {
            if let Ok(ids) = tok.encode("Hello, world! <|im_start|> 12345 ünï", special, special)
            {
                let _ = tok.decode_lossy(&ids);
            }
        }
    }
});
