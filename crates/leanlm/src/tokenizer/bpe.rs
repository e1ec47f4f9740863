//! The tokenizer value: special-token splitting as llama.cpp does it, then byte-level
//! BPE (merges by rank, GPT-2 family) or SentencePiece-style merging by score
//! ([`super::spm`], GGUF `llama` vocabularies) on the text between special tokens.

use std::collections::HashMap;
use std::sync::Mutex;

use super::byte_level;
use super::hf::{External, ExternalParts};
use super::pretokenize::PreTokenizer;
use super::spm;
use crate::error::{Error, Result};

pub struct Tokenizer {
    /// Bytes each id stands for (special tokens: their text).
    pieces: Vec<Vec<u8>>,
    /// Byte-level spelling → id.
    by_spelling: HashMap<String, u32>,
    /// (left, right) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    pre: PreTokenizer,
    /// Tokens matched verbatim in text, longest first. Control tokens only when special
    /// parsing is on; user-defined tokens always (llama.cpp's rule).
    specials: Vec<Special>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether encoding with special tokens prepends BOS.
    pub add_bos: bool,
    pub chat_template: Option<String>,
    /// Single-byte ids, for pieces the merges cannot spell.
    byte_ids: [Option<u32>; 256],
    cache: Mutex<HashMap<String, Vec<u32>>>,
    /// Scores and flags of a SentencePiece vocabulary; `None` for byte-level BPE.
    spm: Option<SpmParts>,
    /// Finds which special tokens occur in a text at all, in one pass.
    special_finder: Option<aho_corasick::AhoCorasick>,
    /// What it was built from, kept so that writers can store the tokenizer again.
    source: SourceParts,
    /// A `tokenizers` pipeline that encodes instead of our merging ([`super::hf`]).
    external: Option<External>,
}

/// What a SentencePiece vocabulary adds to the tokens: a score each (higher merges
/// first), each token's GGUF type, and whether a space is prepended to text that starts
/// the input or follows a special token.
#[derive(Debug, Clone)]
pub struct SpmParts {
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    pub add_space_prefix: bool,
}

/// GGUF token types (llama.cpp's `llama_token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const BYTE: i32 = 6;
}

/// A stretch of the input: text still to be merged, or a special token found in it.
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

struct SourceParts {
    tokens: Vec<String>,
    merges: Vec<(String, String)>,
    special_ids: Vec<u32>,
    user_ids: Vec<u32>,
}

/// What a loader extracted; `Tokenizer::build` validates it.
struct Special {
    text: String,
    id: u32,
    always: bool,
}

pub struct TokenizerParts {
    /// Vocabulary in byte-level spelling (special tokens as plain text).
    pub tokens: Vec<String>,
    /// Merges as (left, right) spellings, in rank order.
    pub merges: Vec<(String, String)>,
    pub pre: PreTokenizer,
    /// Ids of control tokens: not byte-decoded, matched in text only with special parsing.
    pub special_ids: Vec<u32>,
    /// Ids of user-defined tokens: not byte-decoded, always matched in text.
    pub user_ids: Vec<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
    /// A SentencePiece vocabulary (`merges` empty, `pre` unused); `None` for BPE.
    pub spm: Option<SpmParts>,
}

impl Tokenizer {
    pub fn build(parts: TokenizerParts) -> Result<Self> {
        let n = parts.tokens.len();
        if n == 0 {
            return Err(Error::Tokenizer("empty vocabulary".into()));
        }
        let by_spelling: HashMap<String, u32> = parts
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut is_special = vec![false; n];
        for &id in parts.special_ids.iter().chain(&parts.user_ids) {
            let slot = is_special.get_mut(id as usize).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "special token id {id} is outside the vocabulary ({n})"
                ))
            })?;
            *slot = true;
        }
        for (name, id) in [("bos", parts.bos), ("eos", parts.eos)] {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(Error::Tokenizer(format!(
                        "{name} id {id} is outside the vocabulary ({n})"
                    )));
                }
            }
        }
        if let Some(spm) = &parts.spm {
            if spm.scores.len() != n || spm.types.len() != n {
                return Err(Error::Tokenizer(format!(
                    "{n} tokens but {} scores and {} token types",
                    spm.scores.len(),
                    spm.types.len()
                )));
            }
            if let Some(i) = spm.scores.iter().position(|s| !s.is_finite()) {
                return Err(Error::Tokenizer(format!(
                    "token {i} has a non-finite score {}",
                    spm.scores[i]
                )));
            }
        }
        let pieces = parts
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| match (&parts.spm, is_special[i]) {
                (_, true) => t.as_bytes().to_vec(),
                (Some(spm), false) => match spm.types[i] {
                    token_type::BYTE => spm::byte_token_value(t)
                        .map(|b| vec![b])
                        .unwrap_or_else(|| t.as_bytes().to_vec()),
                    token_type::NORMAL => spm::unescape(t),
                    _ => t.as_bytes().to_vec(),
                },
                (None, false) => byte_level::decode(t).unwrap_or_else(|| t.as_bytes().to_vec()),
            })
            .collect();
        let mut merges = HashMap::with_capacity(parts.merges.len());
        for (rank, (a, b)) in parts.merges.iter().enumerate() {
            let (Some(&ia), Some(&ib)) = (by_spelling.get(a), by_spelling.get(b)) else {
                return Err(Error::Tokenizer(format!(
                    "merge '{a} {b}' names a token not in the vocabulary"
                )));
            };
            let Some(&im) = by_spelling.get(&format!("{a}{b}")) else {
                return Err(Error::Tokenizer(format!(
                    "merge '{a} {b}' produces a token not in the vocabulary"
                )));
            };
            merges.entry((ia, ib)).or_insert((rank as u32, im));
        }
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = match parts.spm {
                // `<0xNN>`, else (ASCII) the byte's own one-character token, as llama.cpp.
                Some(_) => by_spelling
                    .get(&format!("<0x{b:02X}>"))
                    .or_else(|| {
                        (b < 0x80)
                            .then(|| by_spelling.get(&(b as u8 as char).to_string()))
                            .flatten()
                    })
                    .copied(),
                None => by_spelling
                    .get(&byte_level::byte_char(b as u8).to_string())
                    .copied(),
            };
        }
        let mut specials: Vec<Special> = parts
            .special_ids
            .iter()
            .map(|&id| (id, false))
            .chain(parts.user_ids.iter().map(|&id| (id, true)))
            .map(|(id, always)| Special {
                text: parts.tokens[id as usize].clone(),
                id,
                always,
            })
            .filter(|s| !s.text.is_empty())
            .collect();
        // llama.cpp splits the text at the longest special tokens first.
        specials.sort_by_key(|s| (std::cmp::Reverse(s.text.len()), s.id));
        let special_finder = match specials.is_empty() {
            true => None,
            false => Some(
                aho_corasick::AhoCorasick::new(specials.iter().map(|s| s.text.as_str()))
                    .map_err(|e| Error::Tokenizer(format!("special tokens: {e}")))?,
            ),
        };
        Ok(Self {
            pieces,
            by_spelling,
            merges,
            pre: parts.pre,
            specials,
            bos: parts.bos,
            eos: parts.eos,
            add_bos: parts.add_bos,
            chat_template: parts.chat_template,
            byte_ids,
            cache: Mutex::new(HashMap::new()),
            spm: parts.spm,
            special_finder,
            source: SourceParts {
                tokens: parts.tokens,
                merges: parts.merges,
                special_ids: parts.special_ids,
                user_ids: parts.user_ids,
            },
            external: None,
        })
    }

    /// A tokenizer whose encoding `tokenizers` does (Unigram, WordPiece, …); the
    /// vocabulary, special tokens and decoding are ours as for any other.
    pub(super) fn with_external(
        parts: ExternalParts,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
        chat_template: Option<String>,
    ) -> Result<Self> {
        let mut t = Self::build(TokenizerParts {
            tokens: parts.tokens,
            merges: Vec::new(),
            pre: PreTokenizer::new(&[])?,
            special_ids: parts.special_ids,
            user_ids: parts.user_ids,
            bos,
            eos,
            add_bos,
            chat_template,
            spm: None,
        })?;
        t.pieces = parts.pieces;
        t.external = Some(parts.external);
        Ok(t)
    }

    /// The `tokenizers` pipeline, for a vocabulary our own code does not encode.
    pub(super) fn external(&self) -> Option<&External> {
        self.external.as_ref()
    }

    /// A vocabulary of `n` distinct plain tokens ("t0", "t1", …) without merges, for tests
    /// of code that only needs token texts.
    #[cfg(test)]
    pub(crate) fn plain_for_tests(n: usize) -> Self {
        Self::build(TokenizerParts {
            tokens: (0..n).map(|i| format!("t{i}")).collect(),
            merges: Vec::new(),
            pre: PreTokenizer::new(&[crate::tokenizer::pretokenize::GPT2]).unwrap(),
            special_ids: Vec::new(),
            user_ids: Vec::new(),
            bos: None,
            eos: None,
            add_bos: false,
            chat_template: None,
            spm: None,
        })
        .unwrap()
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Encode text. `add_special` prepends BOS when the model asks for it; `parse_special`
    /// turns the text of control tokens (e.g. `<|im_start|>`) into their ids.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        if add_special && self.add_bos {
            if let Some(b) = self.bos {
                ids.push(b);
            }
        }
        if let Some(ext) = &self.external {
            ext.encode(text, parse_special, &mut ids)?;
            return Ok(ids);
        }
        // A SentencePiece vocabulary may ask for a space before text that opens the
        // input or follows a special token.
        let mut after_special = true;
        for fragment in self.partition(text, parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    ids.push(id);
                    after_special = true;
                }
                Fragment::Text(t) => {
                    match &self.spm {
                        Some(spm) => {
                            let escaped = spm::escape(t, spm.add_space_prefix && after_special);
                            self.spm_vocab(spm).encode(&escaped, &mut ids)?;
                        }
                        None => self.encode_plain(t, &mut ids)?,
                    }
                    after_special = false;
                }
            }
        }
        Ok(ids)
    }

    /// Split `text` at special tokens as llama.cpp does: the longest special token first,
    /// at every place it occurs in the text not yet claimed, then the next. Control tokens
    /// only when `parse_special`; user-defined ones always.
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut fragments = Vec::new();
        if text.is_empty() {
            return fragments;
        }
        fragments.push(Fragment::Text(text));
        let Some(finder) = &self.special_finder else {
            return fragments;
        };
        // Which specials occur at all (one pass over the text), so that a vocabulary of
        // thousands of control tokens costs a scan per token that is present, not each.
        let mut present = vec![false; self.specials.len()];
        for m in finder.find_overlapping_iter(text) {
            present[m.pattern().as_usize()] = true;
        }
        for (s, _) in self
            .specials
            .iter()
            .zip(&present)
            .filter(|(s, &p)| p && (parse_special || s.always))
        {
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for f in fragments {
                let Fragment::Text(mut t) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = t.find(s.text.as_str()) {
                    if at > 0 {
                        next.push(Fragment::Text(&t[..at]));
                    }
                    next.push(Fragment::Token(s.id));
                    t = &t[at + s.text.len()..];
                }
                if !t.is_empty() {
                    next.push(Fragment::Text(t));
                }
            }
            fragments = next;
        }
        fragments
    }

    fn spm_vocab<'a>(&'a self, spm: &'a SpmParts) -> spm::SpmVocab<'a> {
        spm::SpmVocab {
            by_text: &self.by_spelling,
            scores: &spm.scores,
            byte_ids: &self.byte_ids,
        }
    }

    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) -> Result<()> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for piece in self.pre.split(text) {
            if let Some(hit) = cache.get(piece) {
                ids.extend_from_slice(hit);
                continue;
            }
            let toks = self.bpe(piece.as_bytes())?;
            ids.extend_from_slice(&toks);
            if cache.len() < 1 << 20 {
                cache.insert(piece.to_string(), toks);
            }
        }
        Ok(())
    }

    /// Merge the bytes of one piece: repeatedly join the adjacent pair of lowest rank
    /// (leftmost on ties), as [`merge_by_rank`] does.
    fn bpe(&self, bytes: &[u8]) -> Result<Vec<u32>> {
        let mut syms: Vec<u32> = Vec::with_capacity(bytes.len());
        for &b in bytes {
            let id = self.byte_ids[b as usize].ok_or_else(|| {
                Error::Tokenizer(format!("byte 0x{b:02x} has no token in the vocabulary"))
            })?;
            syms.push(id);
        }
        Ok(merge_by_rank(syms, |a, b| {
            self.merges.get(&(a, b)).copied()
        }))
    }

    /// The bytes of one token (special tokens render as their text).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], |p| p.as_slice())
    }

    /// Concatenated bytes of `ids`; may be invalid UTF-8 if a character is cut.
    pub fn decode(&self, ids: &[u32]) -> Vec<u8> {
        ids.iter()
            .flat_map(|&id| self.token_bytes(id).iter().copied())
            .collect()
    }

    pub fn decode_lossy(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode(ids)).into_owned()
    }

    /// Id of a token by its exact spelling (byte-level or special text).
    pub fn token_id(&self, spelling: &str) -> Option<u32> {
        self.by_spelling.get(spelling).copied()
    }

    /// Tokens that end a generation: EOS and the special end-of-turn tokens llama.cpp
    /// recognises by their text (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, …).
    pub fn end_of_generation(&self) -> Vec<u32> {
        const END_OF_TURN: [&str; 8] = [
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|eom_id|>",
            "<EOT>",
            "<|end_of_text|>",
        ];
        let mut ids: Vec<u32> = END_OF_TURN
            .iter()
            .filter_map(|t| self.token_id(t))
            .filter(|&id| self.is_special(id))
            .chain(self.eos)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.specials.iter().any(|s| s.id == id)
    }

    /// The SentencePiece scores and flags, for a vocabulary of that kind.
    pub fn spm(&self) -> Option<&SpmParts> {
        self.spm.as_ref()
    }

    pub fn pre_tokenizer(&self) -> &PreTokenizer {
        &self.pre
    }

    /// Vocabulary spellings (byte-level alphabet; special tokens as text).
    pub fn spellings(&self) -> &[String] {
        &self.source.tokens
    }

    pub fn merge_list(&self) -> &[(String, String)] {
        &self.source.merges
    }

    /// GGUF token type of each id: 1 normal, 3 control, 4 user-defined (and, for a
    /// SentencePiece vocabulary, the types it was read with).
    pub fn token_types(&self) -> Vec<i32> {
        if let Some(spm) = &self.spm {
            return spm.types.clone();
        }
        let mut t = vec![1; self.source.tokens.len()];
        for &i in &self.source.special_ids {
            t[i as usize] = 3;
        }
        for &i in &self.source.user_ids {
            t[i as usize] = 4;
        }
        t
    }
}

/// Byte-pair merging in O(n log n): the symbols form a linked list, and a heap holds
/// candidate pairs keyed by (rank, position of the left symbol). A merge changes only its
/// two neighbours' pairs, so entries left stale in the heap are recognised when popped
/// (a symbol gone or changed) and skipped. Popping the smallest (rank, position) picks
/// what a rescan of the whole sequence would pick, since positions keep their order, so
/// the result equals the quadratic loop's, only a 100 kB word no longer takes minutes.
/// `merge(a, b)` gives the pair's (rank, merged id) when the vocabulary has one.
fn merge_by_rank(mut syms: Vec<u32>, merge: impl Fn(u32, u32) -> Option<(u32, u32)>) -> Vec<u32> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let n = syms.len();
    const NONE: usize = usize::MAX;
    let mut prev: Vec<usize> = (0..n).map(|i| i.checked_sub(1).unwrap_or(NONE)).collect();
    let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
    let mut alive = vec![true; n];
    // Reverse((rank, left position, left id, right id)): a min-heap.
    let mut heap = BinaryHeap::new();
    let candidate = |heap: &mut BinaryHeap<_>, syms: &[u32], i: usize, j: usize| {
        if i != NONE && j != NONE {
            if let Some((rank, _)) = merge(syms[i], syms[j]) {
                heap.push(Reverse((rank, i, syms[i], syms[j])));
            }
        }
    };
    for i in 1..n {
        candidate(&mut heap, &syms, i - 1, i);
    }
    while let Some(Reverse((_, i, left, right))) = heap.pop() {
        let j = next[i];
        // Stale: the left symbol was absorbed, or either side has changed since.
        if !alive[i] || j == NONE || syms[i] != left || syms[j] != right {
            continue;
        }
        let Some((_, merged)) = merge(left, right) else {
            continue;
        };
        syms[i] = merged;
        alive[j] = false;
        next[i] = next[j];
        if next[j] != NONE {
            prev[next[j]] = i;
        }
        candidate(&mut heap, &syms, prev[i], i);
        candidate(&mut heap, &syms, i, next[i]);
    }
    (0..n).filter(|&i| alive[i]).map(|i| syms[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::pretokenize::GPT2;

    /// Vocabulary: the 256 byte letters, then "ab", "abc", "<s>".
    fn tiny() -> Tokenizer {
        let mut tokens: Vec<String> = (0..=255u8)
            .map(|b| byte_level::byte_char(b).to_string())
            .collect();
        tokens.push("ab".into()); // 256
        tokens.push("abc".into()); // 257
        tokens.push("<s>".into()); // 258
        Tokenizer::build(TokenizerParts {
            tokens,
            merges: vec![("a".into(), "b".into()), ("ab".into(), "c".into())],
            pre: PreTokenizer::new(&[GPT2]).unwrap(),
            special_ids: vec![258],
            user_ids: vec![],
            bos: Some(258),
            eos: None,
            add_bos: true,
            chat_template: None,
            spm: None,
        })
        .unwrap()
    }

    #[test]
    fn merges_by_rank() {
        let t = tiny();
        // "abcab": a+b (rank 0) twice, then ab+c (rank 1) → [abc, ab]
        assert_eq!(t.encode("abcab", false, false).unwrap(), vec![257, 256]);
        assert_eq!(t.encode("abcab", true, false).unwrap(), vec![258, 257, 256]);
    }

    #[test]
    fn special_tokens_only_when_asked() {
        let t = tiny();
        assert_eq!(t.encode("<s>ab", false, true).unwrap(), vec![258, 256]);
        assert_eq!(
            t.encode("<s>", false, false).unwrap(),
            vec![b'<' as u32, b's' as u32, b'>' as u32]
        );
    }

    /// The merge as it was written first: rescan every pair after each merge (O(n²)).
    fn reference_merge(mut syms: Vec<u32>, merges: &HashMap<(u32, u32), (u32, u32)>) -> Vec<u32> {
        loop {
            let best = syms
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| merges.get(&(w[0], w[1])).map(|&(rank, id)| (rank, i, id)))
                .min();
            let Some((_, i, id)) = best else { break };
            syms[i] = id;
            syms.remove(i + 1);
        }
        syms
    }

    #[test]
    fn heap_merge_equals_the_rescanning_merge_on_random_input() {
        // Symbols 0..4 and every pair of them merges (in a shuffled rank order) into a
        // new id, which merges further with the originals: plenty of ties and chains.
        let mut state = 12345u64;
        let mut rand = |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        for round in 0..200 {
            let mut merges = HashMap::new();
            let n_merges = 1 + rand(24) as u32;
            for rank in 0..n_merges {
                // Merge `rank` makes id 4 + rank from any two earlier ids.
                let id = 4 + rank;
                let (a, b) = (rand(id as u64) as u32, rand(id as u64) as u32);
                merges.entry((a, b)).or_insert((rank, id));
            }
            for len in [0usize, 1, 2, 3, 7, 40, 200] {
                let syms: Vec<u32> = (0..len).map(|_| rand(4) as u32).collect();
                let fast = merge_by_rank(syms.clone(), |a, b| merges.get(&(a, b)).copied());
                assert_eq!(
                    fast,
                    reference_merge(syms.clone(), &merges),
                    "round {round}, input {syms:?}"
                );
            }
        }
    }

    #[test]
    fn a_100_kb_word_tokenizes_in_well_under_a_second() {
        let t = tiny();
        let word = "abc".repeat(100_000 / 3) + "ab";
        let start = std::time::Instant::now();
        let ids = t.encode(&word, false, false).unwrap();
        let took = start.elapsed();
        println!("100 kB word: {} tokens in {took:?}", ids.len());
        assert_eq!(ids.len(), 100_000 / 3 + 1);
        assert_eq!(t.decode(&ids), word.as_bytes());
        assert!(took.as_secs_f64() < 5.0, "took {took:?}");
    }

    #[test]
    fn arbitrary_utf8_round_trips() {
        let t = tiny();
        for s in ["", "héllo wörld", "日本語 🎉 \u{0}\t\r\n", "  spaces   "] {
            assert_eq!(t.decode(&t.encode(s, false, false).unwrap()), s.as_bytes());
        }
    }

    #[test]
    fn longer_special_tokens_claim_text_first_as_in_llama_cpp() {
        // User-defined "xy" and "yzw" overlap in "xyzw": llama.cpp splits at the longer
        // one first, so "x" stays text.
        let mut tokens: Vec<String> = (0..=255u8)
            .map(|b| byte_level::byte_char(b).to_string())
            .collect();
        tokens.push("xy".into()); // 256
        tokens.push("yzw".into()); // 257
        let t = Tokenizer::build(TokenizerParts {
            tokens,
            merges: vec![],
            pre: PreTokenizer::new(&[GPT2]).unwrap(),
            special_ids: vec![],
            user_ids: vec![256, 257],
            bos: None,
            eos: None,
            add_bos: false,
            chat_template: None,
            spm: None,
        })
        .unwrap();
        assert_eq!(
            t.encode("xyzw", false, false).unwrap(),
            vec![b'x' as u32, 257]
        );
        assert_eq!(t.encode("xyxy", false, false).unwrap(), vec![256, 256]);
    }

    /// A SentencePiece vocabulary: `<unk>`, `<s>`, `</s>`, 256 byte tokens, then pieces.
    fn tiny_spm(add_space_prefix: bool) -> Tokenizer {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut types = vec![
            token_type::UNKNOWN,
            token_type::CONTROL,
            token_type::CONTROL,
        ];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(token_type::BYTE);
        }
        let pieces = [
            ("\u{2581}", -3.0),   // 259
            ("a", -4.0),          // 260
            ("b", -4.0),          // 261
            ("ab", -2.0),         // 262
            ("\u{2581}ab", -1.0), // 263
            ("\n\n", 0.0),        // 264, user-defined
        ];
        let mut scores = vec![0.0; tokens.len()];
        for (p, s) in pieces {
            tokens.push(p.to_string());
            types.push(token_type::NORMAL);
            scores.push(s);
        }
        *types.last_mut().unwrap() = token_type::USER_DEFINED;
        Tokenizer::build(TokenizerParts {
            merges: vec![],
            pre: PreTokenizer::new(&[]).unwrap(),
            special_ids: vec![0, 1, 2],
            user_ids: vec![264],
            bos: Some(1),
            eos: Some(2),
            add_bos: true,
            chat_template: None,
            spm: Some(SpmParts {
                scores,
                types,
                add_space_prefix,
            }),
            tokens,
        })
        .unwrap()
    }

    #[test]
    fn sentencepiece_vocabularies_merge_by_score_with_byte_fallback() {
        let t = tiny_spm(true);
        // " ab ab" after the space prefix: "▁ab" twice.
        assert_eq!(t.encode("ab ab", true, false).unwrap(), vec![1, 263, 263]);
        // "é" has no piece: its two bytes.
        assert_eq!(
            t.encode("é", false, false).unwrap(),
            vec![259, 3 + 0xC3, 3 + 0xA9]
        );
        // User-defined "\n\n" splits the text; the text after it is prefixed again.
        assert_eq!(
            t.encode("ab\n\nab", false, false).unwrap(),
            vec![263, 264, 263]
        );
        // Control tokens only with special parsing.
        assert_eq!(t.encode("<s>ab", false, true).unwrap(), vec![1, 263]);
        let no_prefix = tiny_spm(false);
        assert_eq!(
            no_prefix.encode("ab ab", false, false).unwrap(),
            vec![262, 263]
        );
        assert_eq!(
            t.decode(&[263, 3 + 0xC3, 3 + 0xA9, 264]),
            " abé\n\n".as_bytes()
        );
    }

    #[test]
    fn sentencepiece_scores_must_be_finite_and_complete() {
        let mut parts_scores = vec![0.0f32; 3];
        parts_scores[1] = f32::NAN;
        let err = Tokenizer::build(TokenizerParts {
            tokens: vec!["a".into(), "b".into(), "ab".into()],
            merges: vec![],
            pre: PreTokenizer::new(&[]).unwrap(),
            special_ids: vec![],
            user_ids: vec![],
            bos: None,
            eos: None,
            add_bos: false,
            chat_template: None,
            spm: Some(SpmParts {
                scores: parts_scores,
                types: vec![token_type::NORMAL; 3],
                add_space_prefix: false,
            }),
        })
        .err()
        .expect("a NaN score is refused");
        assert!(err.to_string().contains("non-finite score"), "{err}");
    }
}
