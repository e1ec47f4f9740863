//! SentencePiece-style merging for GGUF vocabularies of `tokenizer.ggml.model = llama`
//! (Gemma, Llama 2, Mistral, TinyLlama): no merge list, a score per token instead.
//!
//! Our own code rather than the `tokenizers` crate because the ids must equal llama.cpp's
//! on GGUF files, and llama.cpp does not run SentencePiece's unigram search: it merges
//! greedily. Spaces become `▁` (and one is prepended where the vocabulary asks for a space
//! prefix), the text is split into characters, and the adjacent pair whose concatenation
//! is a token with the highest score is joined (leftmost on ties) until no pair is a
//! token; characters left unmatched are spelled with the byte tokens `<0xNN>`. The pairs
//! wait in a priority queue, invalidated lazily, so a piece of n characters costs
//! O(n log n).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::error::{Error, Result};

/// What merging needs of a vocabulary.
pub struct SpmVocab<'a> {
    pub by_text: &'a HashMap<String, u32>,
    pub scores: &'a [f32],
    /// Token of each byte for characters no merge covers: `<0xNN>`, else the byte itself.
    pub byte_ids: &'a [Option<u32>; 256],
}

/// The SentencePiece escape for a space.
pub const SPACE: &str = "\u{2581}";

/// `text` with its spaces escaped, and one prepended when `prefix`.
pub fn escape(text: &str, prefix: bool) -> String {
    let mut s = String::with_capacity(text.len() + 3);
    if prefix {
        s.push_str(SPACE);
    }
    for c in text.chars() {
        match c {
            ' ' => s.push_str(SPACE),
            c => s.push(c),
        }
    }
    s
}

/// The bytes a normal token stands for: its text with `▁` back to spaces.
pub fn unescape(piece: &str) -> Vec<u8> {
    piece.replace(SPACE, " ").into_bytes()
}

/// The byte a `<0xNN>` token spells.
pub fn byte_token_value(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

const NONE: usize = usize::MAX;

struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

/// A candidate join of `left` and `right`, `size` bytes long when queued.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Higher score first, then the leftmost pair (scores are finite: checked at build).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl SpmVocab<'_> {
    /// Merge one escaped piece of text and append its ids to `out`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let i = syms.len();
            syms.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: if i == 0 { NONE } else { i - 1 },
                next: i + 1,
            });
        }
        let Some(last) = syms.last_mut() else {
            return Ok(());
        };
        last.next = NONE;
        let mut queue = BinaryHeap::with_capacity(syms.len());
        for i in 1..syms.len() {
            self.push_pair(text, &syms, i - 1, i, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (&syms[b.left], &syms[b.right]);
            // Stale: one side was joined to something else since the pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            let next = r.next;
            syms[b.left].len += syms[b.right].len;
            syms[b.right].len = 0;
            syms[b.left].next = next;
            if next != NONE {
                syms[next].prev = b.left;
            }
            let prev = syms[b.left].prev;
            if prev != NONE {
                self.push_pair(text, &syms, prev, b.left, &mut queue);
            }
            if next != NONE {
                self.push_pair(text, &syms, b.left, next, &mut queue);
            }
        }
        let mut i = 0;
        while i != NONE {
            let s = &syms[i];
            let piece = &text[s.start..s.start + s.len];
            match self.by_text.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &byte in piece.as_bytes() {
                        out.push(self.byte_ids[byte as usize].ok_or_else(|| {
                            Error::Tokenizer(format!(
                                "byte 0x{byte:02X} has no token (<0x{byte:02X}>) in the vocabulary"
                            ))
                        })?);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    fn push_pair(
        &self,
        text: &str,
        syms: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Bigram>,
    ) {
        let (l, r) = (&syms[left], &syms[right]);
        let joined = &text[l.start..r.start + r.len];
        if let Some(&id) = self.by_text.get(joined) {
            if let Some(&score) = self.scores.get(id as usize) {
                queue.push(Bigram {
                    score,
                    left,
                    right,
                    size: joined.len(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tiny {
        by_text: HashMap<String, u32>,
        scores: Vec<f32>,
        byte_ids: [Option<u32>; 256],
    }

    /// `(text, score)` tokens after the 256 byte tokens `<0x00>` … `<0xFF>`.
    fn tiny(tokens: &[(&str, f32)]) -> Tiny {
        let mut by_text = HashMap::new();
        let mut scores = Vec::new();
        let mut byte_ids = [None; 256];
        for b in 0..=255u8 {
            by_text.insert(format!("<0x{b:02X}>"), b as u32);
            byte_ids[b as usize] = Some(b as u32);
            scores.push(0.0);
        }
        for (i, (t, s)) in tokens.iter().enumerate() {
            by_text.insert(t.to_string(), 256 + i as u32);
            scores.push(*s);
        }
        Tiny {
            by_text,
            scores,
            byte_ids,
        }
    }

    fn encode(t: &Tiny, text: &str) -> Vec<u32> {
        let v = SpmVocab {
            by_text: &t.by_text,
            scores: &t.scores,
            byte_ids: &t.byte_ids,
        };
        let mut out = Vec::new();
        v.encode(text, &mut out).unwrap();
        out
    }

    #[test]
    fn the_best_scoring_pair_is_joined_first() {
        // "abc": "bc" (score -1) beats "ab" (-2); then "a"+"bc" = "abc" is no token.
        let t = tiny(&[
            ("a", -5.0),
            ("b", -5.0),
            ("c", -5.0),
            ("ab", -2.0),
            ("bc", -1.0),
        ]);
        assert_eq!(encode(&t, "abc"), vec![256, 260]);
        // With "abc" in the vocabulary the chain continues.
        let t = tiny(&[
            ("a", -5.0),
            ("b", -5.0),
            ("c", -5.0),
            ("ab", -2.0),
            ("bc", -1.0),
            ("abc", -3.0),
        ]);
        assert_eq!(encode(&t, "abc"), vec![261]);
    }

    #[test]
    fn ties_go_to_the_leftmost_pair() {
        // "aaa": both pairs are "aa" with one score; the left one joins, "a" stays.
        let t = tiny(&[("a", -5.0), ("aa", -1.0)]);
        assert_eq!(encode(&t, "aaa"), vec![257, 256]);
        assert_eq!(encode(&t, "aaaa"), vec![257, 257]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let t = tiny(&[("a", -5.0)]);
        // "é" is 0xC3 0xA9 and no token.
        assert_eq!(encode(&t, "aé"), vec![256, 0xC3, 0xA9]);
    }

    #[test]
    fn spaces_are_escaped_and_prefixed_on_request() {
        assert_eq!(escape("a b", false), "a\u{2581}b");
        assert_eq!(escape("a", true), "\u{2581}a");
        assert_eq!(unescape("\u{2581}a\u{2581}\u{2581}b"), b" a  b");
        assert_eq!(byte_token_value("<0x0A>"), Some(10));
        assert_eq!(byte_token_value("<0xZZ>"), None);
        assert_eq!(byte_token_value("<0x0A0>"), None);
    }

    #[test]
    fn a_long_word_merges_in_near_linear_time() {
        // 100,000 characters, every pair a token: the naive rescan is quadratic.
        let t = tiny(&[("a", -5.0), ("aa", -1.0), ("aaaa", -0.5)]);
        let text = "a".repeat(100_000);
        let start = std::time::Instant::now();
        let ids = encode(&t, &text);
        assert_eq!(ids.len(), 25_000);
        assert!(ids.iter().all(|&i| i == 258));
        assert!(start.elapsed().as_secs_f64() < 5.0, "{:?}", start.elapsed());
    }
}
