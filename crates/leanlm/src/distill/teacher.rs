//! The teacher: a frozen model run by the fast inference kernels on its own (quantized)
//! weights, or its top-k log-probs read back from a cache file written once.
//!
//! Cache layout: magic `LLMTCH01`, a u64 header length, a JSON header ([`CacheHeader`]),
//! then one fixed-size record per data window: (seq·k) u32 ids, (seq·k) f32 log-probs,
//! (seq) f32 log remaining mass, little-endian. Fixed records let training seek to any
//! window, and let an interrupted `cache-teacher` continue after its last whole record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::data::Dataset;
use super::loss::TeacherTopK;
use crate::error::{Error, Result};
use crate::model::{Hooks, KvCache, Logits, Model, Pass};

/// The first bytes of a teacher cache file.
pub const MAGIC: &[u8; 8] = b"LLMTCH01";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheHeader {
    pub k: usize,
    pub temperature: f32,
    pub seq: usize,
    pub n_windows: usize,
    pub vocab: usize,
    /// FNV-1a of the packed data tokens and the window length.
    pub data_fingerprint: u64,
}

impl CacheHeader {
    fn record_bytes(&self) -> u64 {
        (self.seq * self.k * 8 + self.seq * 4) as u64
    }
}

/// The teacher's view of a batch of windows.
pub struct TeacherBatch {
    pub topk: TeacherTopK,
    /// Hidden state after `k` blocks, row-major (b·t, d_model), for each `k` asked for.
    pub hidden: Vec<(usize, Vec<f32>)>,
}

pub enum Teacher<'a> {
    Live {
        model: &'a Model,
        k: usize,
        tau: f32,
    },
    Cached {
        file: File,
        header: CacheHeader,
        path: PathBuf,
    },
}

impl<'a> Teacher<'a> {
    /// Top-k (and hidden states after the given block counts, live teacher only) for
    /// data windows `windows`.
    pub fn batch(
        &mut self,
        data: &Dataset,
        windows: &[usize],
        hidden_after: &[usize],
    ) -> Result<TeacherBatch> {
        match self {
            Teacher::Live { model, k, tau } => {
                let seqs: Vec<&[u32]> = windows.iter().map(|&w| data.window(w)).collect();
                run_live(model, &seqs, *k, *tau, hidden_after)
            }
            Teacher::Cached { file, header, path } => {
                if !hidden_after.is_empty() {
                    return Err(Error::InvalidInput(
                        "hidden-state matching needs the live teacher, not a cache".into(),
                    ));
                }
                let parts = windows
                    .iter()
                    .map(|&w| read_record(file, header, w).map_err(|e| Error::io(path.clone(), e)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(TeacherBatch {
                    topk: TeacherTopK::concat(&parts),
                    hidden: Vec::new(),
                })
            }
        }
    }

    /// Open a cache and check that it was written for this data, k and temperature.
    pub fn open_cache(path: &Path, data: &Dataset, vocab: usize, tau: f32) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let header = read_header(&mut file)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
        let want = data_fingerprint(data);
        let bad = |what: String| Err(Error::InvalidInput(format!("{}: {what}", path.display())));
        if header.data_fingerprint != want
            || header.seq != data.seq
            || header.n_windows != data.n_windows
        {
            return bad("teacher cache was written for other data or another --seq".into());
        }
        if header.vocab != vocab {
            return bad(format!(
                "teacher cache vocabulary {} differs from the student's {vocab}",
                header.vocab
            ));
        }
        if (header.temperature - tau).abs() > 1e-6 {
            return bad(format!(
                "teacher cache holds temperature {} but the run asks for {tau}",
                header.temperature
            ));
        }
        let expect = header_len(&header)? + header.record_bytes() * header.n_windows as u64;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len != expect {
            return bad(format!(
                "teacher cache is {len} bytes, expected {expect} (unfinished?)"
            ));
        }
        Ok(Teacher::Cached {
            file,
            header,
            path: path.to_path_buf(),
        })
    }
}

struct Capture<'a> {
    after: &'a [usize],
    out: Vec<(usize, Vec<f32>)>,
}

impl Hooks for Capture<'_> {
    fn block_input(&mut self, layer: usize, x: &[f32], _rows: usize) {
        if layer == 0 && self.after.contains(&0) {
            self.out.push((0, x.to_vec()));
        }
    }
    fn block_output(&mut self, layer: usize, x: &[f32], _rows: usize) {
        if self.after.contains(&(layer + 1)) {
            self.out.push((layer + 1, x.to_vec()));
        }
    }
}

fn run_live(
    model: &Model,
    seqs: &[&[u32]],
    k: usize,
    tau: f32,
    hidden_after: &[usize],
) -> Result<TeacherBatch> {
    let mut caches: Vec<KvCache> = seqs.iter().map(|_| model.new_cache()).collect();
    let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
    let mut capture = Capture {
        after: hidden_after,
        out: Vec::new(),
    };
    let logits = model.forward_batch(
        seqs,
        &mut refs,
        Pass {
            logits: Logits::All,
            exit_after: None,
            exit_when: None,
            hooks: &mut capture,
        },
    )?;
    Ok(TeacherBatch {
        topk: TeacherTopK::from_logits(&logits, model.vocab_size(), k, tau),
        hidden: capture.out,
    })
}

/// FNV-1a over the window length and every packed token.
pub fn data_fingerprint(data: &Dataset) -> u64 {
    let mut h = crate::numerics::Fnv1a::default();
    h.eat(data.seq as u64);
    for w in 0..data.n_windows {
        for &t in data.window(w) {
            h.eat(t as u64);
        }
    }
    h.0
}

fn header_len(h: &CacheHeader) -> Result<u64> {
    let json = serde_json::to_vec(h).map_err(|e| Error::InvalidInput(e.to_string()))?;
    Ok(8 + 8 + json.len() as u64)
}

fn read_header(f: &mut File) -> std::io::Result<CacheHeader> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)
        .map_err(|_| bad("not a teacher cache (too short)"))?;
    if &magic != MAGIC {
        return Err(bad("not a teacher cache (bad magic)"));
    }
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > 1 << 20 {
        return Err(bad("teacher cache header is implausibly long"));
    }
    let mut json = vec![0u8; len as usize];
    f.read_exact(&mut json)?;
    serde_json::from_slice(&json).map_err(|e| bad(&format!("bad teacher cache header: {e}")))
}

fn read_record(f: &mut File, h: &CacheHeader, w: usize) -> std::io::Result<TeacherTopK> {
    let json_len = serde_json::to_vec(h).map(|v| v.len() as u64).unwrap_or(0);
    f.seek(SeekFrom::Start(16 + json_len + h.record_bytes() * w as u64))?;
    let mut buf = vec![0u8; h.record_bytes() as usize];
    f.read_exact(&mut buf)?;
    let n = h.seq * h.k;
    let ids: Vec<u32> = u32s(&buf[..4 * n]).collect();
    let logp: Vec<f32> = u32s(&buf[4 * n..8 * n]).map(f32::from_bits).collect();
    let rest: Vec<f32> = u32s(&buf[8 * n..]).map(f32::from_bits).collect();
    if ids.iter().any(|&i| i as usize >= h.vocab) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("record {w} holds a token id outside the vocabulary"),
        ));
    }
    Ok(TeacherTopK {
        k: h.k,
        ids,
        logp,
        rest,
    })
}

fn u32s(b: &[u8]) -> impl Iterator<Item = u32> + '_ {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// Run `model` over every window of `data` and write its top-k log-probs to `path`.
/// Records go to `path.partial`, which a re-run with the same settings continues; the
/// finished file is renamed into place. `progress(done, total)` after each window.
pub fn write_cache(
    model: &Model,
    data: &Dataset,
    k: usize,
    tau: f32,
    path: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<()> {
    let header = CacheHeader {
        k: k.min(model.vocab_size()),
        temperature: tau,
        seq: data.seq,
        n_windows: data.n_windows,
        vocab: model.vocab_size(),
        data_fingerprint: data_fingerprint(data),
    };
    let partial = super::checkpoint::partial_path(path);
    let json = serde_json::to_vec(&header).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let start_len = 16 + json.len() as u64;
    // Continue a partial file written with the same header.
    let mut done = 0usize;
    if let Ok(mut f) = File::open(&partial) {
        if read_header(&mut f).ok().as_ref() == Some(&header) {
            let len = f.metadata().map_err(|e| Error::io(&partial, e))?.len();
            done = ((len.saturating_sub(start_len)) / header.record_bytes()) as usize;
        }
    }
    let mut f = if done > 0 {
        let f = OpenOptions::new()
            .write(true)
            .open(&partial)
            .map_err(|e| Error::write(&partial, e))?;
        f.set_len(start_len + header.record_bytes() * done as u64)
            .map_err(|e| Error::write(&partial, e))?;
        f
    } else {
        let mut f = File::create(&partial).map_err(|e| Error::write(&partial, e))?;
        let mut head = MAGIC.to_vec();
        head.extend((json.len() as u64).to_le_bytes());
        head.extend(&json);
        f.write_all(&head).map_err(|e| Error::write(&partial, e))?;
        f
    };
    f.seek(SeekFrom::End(0))
        .map_err(|e| Error::write(&partial, e))?;
    progress(done, data.n_windows);
    for w in done..data.n_windows {
        let b = run_live(model, &[data.window(w)], header.k, tau, &[])?;
        let t = &b.topk;
        let mut buf = Vec::with_capacity(header.record_bytes() as usize);
        t.ids.iter().for_each(|i| buf.extend(i.to_le_bytes()));
        t.logp.iter().for_each(|v| buf.extend(v.to_le_bytes()));
        t.rest.iter().for_each(|v| buf.extend(v.to_le_bytes()));
        f.write_all(&buf).map_err(|e| Error::write(&partial, e))?;
        progress(w + 1, data.n_windows);
    }
    f.sync_all().map_err(|e| Error::write(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| Error::write(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::{random_model, RandomSpec};

    fn data() -> Dataset {
        let mut r = crate::numerics::SplitMix64(11);
        let tokens = (0..200).map(|_| (r.next_u64() % 64) as u32).collect();
        Dataset::from_tokens(tokens, 16, 0.2, 0).unwrap()
    }

    #[test]
    fn the_cache_returns_what_the_live_teacher_computes() {
        let m = random_model(RandomSpec::default(), 3).unwrap();
        let data = data();
        let dir = std::env::temp_dir().join(format!("leanlm-tcache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.cache");
        write_cache(&m, &data, 8, 1.5, &path, |_, _| {}).unwrap();
        let mut cached = Teacher::open_cache(&path, &data, 64, 1.5).unwrap();
        let mut live = Teacher::Live {
            model: &m,
            k: 8,
            tau: 1.5,
        };
        let windows = [3, 0, 11];
        let a = cached.batch(&data, &windows, &[]).unwrap().topk;
        let b = live.batch(&data, &windows, &[]).unwrap().topk;
        // Same tokens; log-probs up to the rounding of batched vs one-at-a-time products.
        assert_eq!((a.k, &a.ids), (b.k, &b.ids));
        for (x, y) in a
            .logp
            .iter()
            .chain(&a.rest)
            .zip(b.logp.iter().chain(&b.rest))
        {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        // Written for other settings: refused with the reason.
        let e = Teacher::open_cache(&path, &data, 64, 1.0).err().unwrap();
        assert!(e.to_string().contains("temperature"), "{e}");
        let other = Dataset::from_tokens((0..200).map(|i| i % 64).collect(), 16, 0.2, 0).unwrap();
        let e = Teacher::open_cache(&path, &other, 64, 1.5).err().unwrap();
        assert!(e.to_string().contains("other data"), "{e}");
        // A truncated cache is caught before use.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let e = Teacher::open_cache(&path, &data, 64, 1.5).err().unwrap();
        assert!(e.to_string().contains("unfinished"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
