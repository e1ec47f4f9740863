//! What the fuzz targets share: a scratch file or folder per process (the readers under
//! test take paths, as users give them), and a bounded use of whatever loaded, so that a
//! file the readers accept is also one the model can run without a panic.

use std::path::PathBuf;

use leanlm::model::{Loaded, Logits};

/// A path private to this process under the system's temp folder.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("leanlm-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the fuzz scratch folder");
    dir.join(name)
}

/// Write `bytes` to the scratch file `name` and return its path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch(name);
    std::fs::write(&path, bytes).expect("writing the fuzz scratch file");
    path
}

/// Split `data` into `N` parts, each led by a little-endian u32 length (clamped to what is
/// left), the last part taking the rest: a multi-file input that mutations can reshape.
pub fn split<const N: usize>(mut data: &[u8]) -> [&[u8]; N] {
    let mut parts = [&[][..]; N];
    for part in parts.iter_mut().take(N - 1) {
        let Some((len, rest)) = data.split_first_chunk::<4>() else {
            return parts;
        };
        let n = (u32::from_le_bytes(*len) as usize).min(rest.len());
        *part = &rest[..n];
        data = &rest[n..];
    }
    parts[N - 1] = data;
    parts
}

/// Join parts in the layout [`split`] reads.
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(p);
    }
    out
}

/// Use a model that loaded: tokenize, run a few positions, decode. Only small models
/// (those a seed can mutate into) are run, so that an execution stays short; errors are
/// fine, panics are what the fuzzer looks for.
pub fn exercise(loaded: &Loaded) {
    let m = &loaded.model;
    let _ = m.n_params();
    let _ = m.flops_per_token(16);
    let Ok(ids) = loaded.tokenizer.encode("Hello, world! 12345", true, true) else {
        return;
    };
    let _ = loaded.tokenizer.decode(&ids);
    let small = m.config.n_layers <= 8 && m.config.d_model <= 256 && m.vocab_size() <= 8192;
    if small {
        let ids: Vec<u32> = ids.into_iter().take(4).collect();
        let _ = m.forward(&ids, &mut m.new_cache(), Logits::Last);
    }
}
