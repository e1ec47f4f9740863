//! GPT-2's reversible map from bytes to printable characters: vocabulary entries are
//! written in this alphabet, so every byte sequence has a spelling.

use std::sync::OnceLock;

fn tables() -> &'static ([char; 256], std::collections::HashMap<char, u8>) {
    static T: OnceLock<([char; 256], std::collections::HashMap<char, u8>)> = OnceLock::new();
    T.get_or_init(|| {
        let mut fwd = ['\0'; 256];
        let mut next = 256u32;
        for b in 0..=255u8 {
            let printable = matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
            fwd[b as usize] = if printable {
                b as char
            } else {
                let c = char::from_u32(next).expect("valid code point");
                next += 1;
                c
            };
        }
        let inv = fwd.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        (fwd, inv)
    })
}

/// The character that spells byte `b`.
pub fn byte_char(b: u8) -> char {
    tables().0[b as usize]
}

/// Bytes spelled by `s`, or `None` if `s` uses a character outside the alphabet.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let inv = &tables().1;
    s.chars().map(|c| inv.get(&c).copied()).collect()
}

#[cfg(test)]
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_char(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_letters() {
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(byte_char(b'a'), 'a');
    }

    #[test]
    fn all_bytes_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }
}
