//! SentencePiece vocabularies read from GGUF give llama.cpp's token ids: Gemma 3 270M's
//! (262,144 tokens, scores instead of merges, byte fallback, user-defined whitespace runs)
//! on all of wiki.test.raw. The fixture is llama-tokenize's output (bench/make-fixtures.py).

mod common;

use std::io::Read;

fn gemma3_wiki_ids() -> Vec<u32> {
    let mut gz = flate2::read::GzDecoder::new(
        std::fs::File::open(common::fixture(
            "llama_cpp/gemma3-270m/wiki_test_ids.u32.gz",
        ))
        .unwrap(),
    );
    let mut raw = Vec::new();
    gz.read_to_end(&mut raw).unwrap();
    let want: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // llama-perplexity reports 295,173 tokens for this file with this vocabulary.
    assert_eq!(want.len(), 295_173);
    want
}

#[test]
fn gemma3_token_ids_equal_llama_cpp_on_all_of_wikitext2_test() {
    let want = gemma3_wiki_ids();
    let path = common::fetched_model("gemma3-270m");
    let tok = leanlm::model::load_tokenizer(&path).unwrap();
    assert!(tok.spm().is_some(), "Gemma's vocabulary is SentencePiece");
    let text = std::fs::read_to_string(common::data_file("wikitext-2-raw/wiki.test.raw")).unwrap();
    let got = tok.encode(&text, true, false).unwrap();
    common::assert_same_ids(&tok, &got, &want);
    // Decoding gives the text back (the file has no byte that lacks a token).
    assert_eq!(tok.decode(&got[1..]), text.as_bytes());
}

#[test]
fn gemma3_chat_markup_is_split_into_its_control_tokens() {
    let tok = leanlm::model::load_tokenizer(&common::fetched_model("gemma3-270m")).unwrap();
    let ids = tok
        .encode("<start_of_turn>user\nHi<end_of_turn>\n", true, true)
        .unwrap();
    // BOS, <start_of_turn>, "user", "\n", "Hi", <end_of_turn>, "\n": llama-tokenize's ids.
    assert_eq!(ids, [2, 105, 2364, 107, 10979, 106, 107]);
    // Without special parsing the markup is text.
    let plain = tok.encode("<start_of_turn>", false, false).unwrap();
    assert!(!plain.contains(&105));
}

/// The vocabulary written as a Hugging Face tokenizer.json (as `prune -o FOLDER` writes it)
/// reads back as the same SentencePiece tokenizer: llama.cpp's ids on all of
/// wiki.test.raw, the same token types and the same merge order.
#[test]
fn gemma3_vocabulary_round_trips_through_tokenizer_json() {
    let tok = leanlm::model::load_tokenizer(&common::fetched_model("gemma3-270m")).unwrap();
    let dir = std::env::temp_dir().join(format!("leanlm-spm-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, config) = tok.hf_json();
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let back = leanlm::tokenizer::Tokenizer::from_hf_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let (a, b) = (
        tok.spm().unwrap(),
        back.spm().expect("read back as SentencePiece"),
    );
    assert_eq!(a.types, b.types);
    assert_eq!(a.add_space_prefix, b.add_space_prefix);
    assert_eq!(
        (back.bos, back.eos, back.add_bos),
        (tok.bos, tok.eos, tok.add_bos)
    );
    let text = std::fs::read_to_string(common::data_file("wikitext-2-raw/wiki.test.raw")).unwrap();
    common::assert_same_ids(
        &back,
        &back.encode(&text, true, false).unwrap(),
        &gemma3_wiki_ids(),
    );
    let chat = "<start_of_turn>user\nHello!<end_of_turn>\n";
    assert_eq!(
        back.encode(chat, true, true).unwrap(),
        tok.encode(chat, true, true).unwrap()
    );
}
