//! Stop strings matched in the generated text, across token boundaries, and never emitted.
//!
//! Text arrives token by token. Whatever could still be the start of a stop string is held
//! back until the next token decides it: released if the text goes elsewhere, dropped with
//! everything after it if a stop string completes.

use crate::error::{Error, Result};

/// OpenAI's API allows up to four stop strings; llama.cpp's `-r` any number.
pub const MAX_STOP_STRINGS: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

/// What one piece of text gives: the text that is safe to show, and whether a stop
/// string ended the generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub text: String,
    pub stopped: bool,
}

impl StopStrings {
    pub fn new(stops: &[String]) -> Result<Self> {
        if stops.len() > MAX_STOP_STRINGS {
            return Err(Error::InvalidInput(format!(
                "{} stop strings given; at most {MAX_STOP_STRINGS}",
                stops.len()
            )));
        }
        if stops.iter().any(String::is_empty) {
            return Err(Error::InvalidInput(
                "a stop string is empty: it would stop before the first token".into(),
            ));
        }
        Ok(Self {
            stops: stops.to_vec(),
            held: String::new(),
            stopped: false,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Feed the next piece of text.
    pub fn push(&mut self, text: &str) -> Released {
        if self.stopped {
            return Released {
                text: String::new(),
                stopped: true,
            };
        }
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.stopped = true;
            let text = self.held[..at].to_string();
            self.held.clear();
            return Released {
                text,
                stopped: true,
            };
        }
        // Hold the longest tail that begins some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .map_or(0, |i| self.held.len() - i);
        let cut = self.held.len() - keep;
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        Released {
            text,
            stopped: false,
        }
    }

    /// The generation ended another way: what was held is text after all.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> StopStrings {
        StopStrings::new(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>()).unwrap()
    }

    /// Feed pieces; the text shown and whether it stopped.
    fn run(s: &mut StopStrings, pieces: &[&str]) -> (String, bool) {
        let mut out = String::new();
        for p in pieces {
            let r = s.push(p);
            out.push_str(&r.text);
            if r.stopped {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn a_stop_split_across_pieces_is_never_shown() {
        let mut s = stops(&["User:"]);
        assert_eq!(
            run(&mut s, &["Hello", " Us", "er", ": more"]),
            ("Hello ".into(), true)
        );
    }

    #[test]
    fn a_false_start_is_released() {
        let mut s = stops(&["User:"]);
        let r = s.push("a Us");
        assert_eq!(r.text, "a ");
        let r = s.push("ually");
        assert_eq!(r.text, "Usually");
        assert!(!r.stopped);
        assert_eq!(
            run(&mut stops(&["</s>"]), &["x<", "/"]),
            ("x</".into(), false)
        );
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_multibyte_text_is_kept_whole() {
        let mut s = stops(&["ZZ", "é!"]);
        assert_eq!(run(&mut s, &["caf", "é", "!", "ZZ"]), ("caf".into(), true));
        let mut s = stops(&["b", "abc"]);
        assert_eq!(run(&mut s, &["xab"]), ("xa".into(), true));
    }

    #[test]
    fn bad_stop_lists_are_errors() {
        assert!(StopStrings::new(&["".into()]).is_err());
        assert!(StopStrings::new(&vec!["x".to_string(); MAX_STOP_STRINGS + 1]).is_err());
    }
}
