//! Tokenizers, built from GGUF metadata or `tokenizer.json`.
//!
//! Byte-level BPE (GPT-2 family): split special tokens out (when asked), pre-tokenize the
//! rest with the model's regex list, map each piece's bytes to GPT-2's printable byte
//! alphabet, then merge adjacent symbols by rank. SentencePiece vocabularies merge by
//! score with byte fallback ([`spm`]). The regex lists, special-token splitting and
//! merge orders follow llama.cpp, so token ids equal llama.cpp's. Other `tokenizer.json`
//! models (Unigram, WordPiece, …) are encoded by the `tokenizers` crate ([`hf`]).

mod bpe;
mod byte_level;
mod from_gguf;
mod from_json;
mod hf;
mod pretokenize;
mod spm;
mod to_gguf;
mod to_json;

pub use bpe::Tokenizer;
pub use pretokenize::PreTokenizer;

/// Bytes of decoded tokens are released as text only once they form whole UTF-8
/// characters, so a character split across two tokens prints correctly.
#[derive(Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Feed the bytes of one token; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An error with no length means the tail is an incomplete character: keep it.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Invalid bytes that no continuation can fix: release them lossily.
            Err(_) => self.pending.len(),
        };
        let out: Vec<u8> = self.pending.drain(..valid).collect();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Whatever remains at the end of the stream.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_decoder_holds_split_characters() {
        let mut d = StreamDecoder::default();
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(d.push(&euro[..1]), "");
        assert_eq!(d.push(&euro[1..]), "€");
        assert_eq!(d.push(b"ab"), "ab");
        assert_eq!(d.push(&[0xe2]), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }
}
