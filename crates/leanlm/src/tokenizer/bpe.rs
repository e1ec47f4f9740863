//! The BPE merge loop and the tokenizer value.

use std::collections::HashMap;
use std::sync::Mutex;

use super::byte_level;
use super::pretokenize::PreTokenizer;
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
    /// What it was built from, kept so that writers can store the tokenizer again.
    source: SourceParts,
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
        let pieces = parts
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| match is_special[i] {
                true => t.as_bytes().to_vec(),
                false => byte_level::decode(t).unwrap_or_else(|| t.as_bytes().to_vec()),
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
            *slot = by_spelling
                .get(&byte_level::byte_char(b as u8).to_string())
                .copied();
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
        specials.sort_by_key(|s| std::cmp::Reverse(s.text.len()));
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
            source: SourceParts {
                tokens: parts.tokens,
                merges: parts.merges,
                special_ids: parts.special_ids,
                user_ids: parts.user_ids,
            },
        })
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
        let mut rest = text;
        while let Some((pos, tok, id)) = self.next_special(rest, parse_special) {
            self.encode_plain(&rest[..pos], &mut ids)?;
            ids.push(id);
            rest = &rest[pos + tok.len()..];
        }
        self.encode_plain(rest, &mut ids)?;
        Ok(ids)
    }

    fn next_special<'a>(
        &'a self,
        text: &str,
        parse_special: bool,
    ) -> Option<(usize, &'a str, u32)> {
        self.specials
            .iter()
            .filter(|s| parse_special || s.always)
            .filter_map(|s| {
                text.find(s.text.as_str())
                    .map(|p| (p, s.text.as_str(), s.id))
            })
            .min_by_key(|&(p, s, _)| (p, std::cmp::Reverse(s.len())))
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

    pub fn is_special(&self, id: u32) -> bool {
        self.specials.iter().any(|s| s.id == id)
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

    /// GGUF token type of each id: 1 normal, 3 control, 4 user-defined.
    pub fn token_types(&self) -> Vec<i32> {
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
}
