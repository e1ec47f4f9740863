//! Content keys: a stage's output is reused when its inputs, data and settings hash the same.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Hex SHA-256 of a JSON value's canonical text (serde_json sorts object keys).
pub fn of_json(v: &serde_json::Value) -> String {
    hex(&Sha256::digest(v.to_string().as_bytes()))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first 16 hex digits, for file names.
pub fn short(key: &str) -> &str {
    &key[..16.min(key.len())]
}

/// Hashes of files' contents, each file read once per run.
#[derive(Default)]
pub struct FileKeys(HashMap<PathBuf, String>);

impl FileKeys {
    /// SHA-256 of a file, or of a folder's files (names and contents, sorted by name).
    pub fn of(&mut self, path: &Path) -> Result<String> {
        if let Some(k) = self.0.get(path) {
            return Ok(k.clone());
        }
        let mut h = Sha256::new();
        let mut files = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        for f in files.drain(..) {
            h.update(f.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
            let file =
                std::fs::File::open(&f).with_context(|| format!("reading {}", f.display()))?;
            // Only a regular file's bytes, and never more than its size said: a device or a
            // FIFO (or a file growing under us) cannot make hashing run for ever.
            let meta = file
                .metadata()
                .with_context(|| format!("reading {}", f.display()))?;
            if !meta.is_file() {
                anyhow::bail!("{} is not a regular file", f.display());
            }
            let mut file = file.take(meta.len());
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file
                    .read(&mut buf)
                    .with_context(|| format!("reading {}", f.display()))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        let k = hex(&h.finalize());
        self.0.insert(path.to_path_buf(), k.clone());
        Ok(k)
    }
}
