//! Where leanlm may write an output the user named, so that an output never destroys
//! anything leanlm did not create.
//!
//! The rules:
//! - a path that does not exist is always fine;
//! - an existing path is replaced only with `force`, and only when it is an earlier leanlm
//!   output of the same kind: a Hugging Face folder carrying leanlm's marker file
//!   ([`MARKER`], a small JSON naming the kind), a GGUF file (it starts with the GGUF magic)
//!   or a teacher cache (its magic). A folder without the marker, `.`, or a file of another
//!   kind is refused;
//! - the input model is never the output (same file or folder, compared by device and
//!   inode, so `./m.gguf` and `m.gguf` or a symlink are caught);
//! - replacing a marked folder replaces only the files leanlm writes there ([`HF_FILES`]),
//!   one rename each; any other file in it (a user's notes, an input model) stays;
//! - what a killed write leaves next to the output (`OUT.partial`, `OUT.data.partial`) is
//!   removed by the next write of that output, before it loads anything: only those two
//!   names, and a `.partial` folder only file by file, for the files leanlm writes there.

use std::io::Read;
use std::path::Path;

use serde_json::json;

use super::spill::with_suffix;
use crate::error::{Error, Result};

/// The file leanlm writes into every folder it creates, so that it can later recognise
/// the folder as its own.
pub const MARKER: &str = ".leanlm-output";

/// Every file leanlm writes into a Hugging Face folder (the marker included): the only
/// files it ever replaces or removes there.
pub const HF_FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    MARKER,
];

/// Temporaries inside a folder being assembled (the safetensors file is spilled).
const HF_PARTIALS: [&str; 2] = [
    "model.safetensors.partial",
    "model.safetensors.data.partial",
];

/// What an output is, as far as replacing it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A Hugging Face folder (config.json, model.safetensors, tokenizer files).
    HfFolder,
    /// A single GGUF file.
    Gguf,
    /// A `distill cache-teacher` file.
    TeacherCache,
    /// A `leanlm run` folder (continued, never replaced).
    RunFolder,
}

impl OutputKind {
    /// The name in the marker file.
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::HfFolder => "hf-model",
            OutputKind::Gguf => "gguf",
            OutputKind::TeacherCache => "teacher-cache",
            OutputKind::RunFolder => "run",
        }
    }

    /// The magic a file of this kind starts with (folders have none).
    fn magic(self) -> Option<&'static [u8]> {
        match self {
            OutputKind::Gguf => Some(super::gguf::MAGIC),
            OutputKind::TeacherCache => Some(crate::distill::CACHE_MAGIC),
            OutputKind::HfFolder | OutputKind::RunFolder => None,
        }
    }
}

/// Write the marker of `kind` into `dir`.
pub fn write_marker(dir: &Path, kind: OutputKind) -> Result<()> {
    let path = dir.join(MARKER);
    let text = json!({"leanlm_output": kind.name(), "version": env!("CARGO_PKG_VERSION")});
    std::fs::write(&path, format!("{text}\n")).map_err(|e| Error::write(&path, e))
}

/// Whether `dir` carries a marker of `kind`.
pub fn is_marked(dir: &Path, kind: OutputKind) -> bool {
    let path = dir.join(MARKER);
    // A marker is a line of JSON: never read more than a little of whatever is there.
    let Ok(meta) = std::fs::metadata(&path) else {
        return false;
    };
    if !meta.is_file() || meta.len() > 4096 {
        return false;
    }
    std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["leanlm_output"].as_str() == Some(kind.name()))
}

/// Whether `a` and `b` are the same existing file or folder.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (ma.dev(), ma.ino()) == (mb.dev(), mb.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = (ma, mb);
        matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    }
}

/// Refuse `out` unless writing it can only create a new output or (with `force`) replace
/// an earlier leanlm output of the same `kind`, and it is none of `inputs`.
pub fn check(out: &Path, kind: OutputKind, inputs: &[&Path], force: bool) -> Result<()> {
    let refuse = |reason: String| {
        Err(Error::Output {
            path: out.to_path_buf(),
            reason,
        })
    };
    if inputs.iter().any(|i| same_file(out, i)) {
        return refuse("the output is an input of this command; write to another path".into());
    }
    // Not there (or not reachable: under a file, say): nothing to replace. Where it
    // cannot be written either, the write reports that.
    let Ok(meta) = std::fs::metadata(out) else {
        return Ok(());
    };
    let ours = match kind.magic() {
        None => meta.is_dir() && is_marked(out, kind),
        Some(magic) => meta.is_file() && starts_with(out, magic),
    };
    if !ours {
        let what = match kind {
            OutputKind::HfFolder | OutputKind::RunFolder => format!(
                "exists and is not a folder leanlm wrote (no {MARKER} marker of a {}): \
                 leanlm never replaces what it did not create; choose a new path",
                kind.name()
            ),
            OutputKind::Gguf => "exists and is not a GGUF file: leanlm replaces only a GGUF \
                                 file (with --force); choose a new path"
                .into(),
            OutputKind::TeacherCache => "exists and is not a teacher cache: leanlm replaces \
                                         only a cache it wrote (with --force); choose a new path"
                .into(),
        };
        return refuse(what);
    }
    if !force && kind != OutputKind::RunFolder {
        return refuse("already exists: add --force to replace it".into());
    }
    Ok(())
}

/// [`check`], then remove what an interrupted earlier write of `out` left behind.
pub fn prepare(out: &Path, kind: OutputKind, inputs: &[&Path], force: bool) -> Result<()> {
    check(out, kind, inputs, force)?;
    remove_stale_partials(out)
}

/// Remove `out.partial` and `out.data.partial` where they are recognisably leanlm's: a
/// regular file of that name, or a folder of that name holding leanlm's marker, emptied
/// file by file of what leanlm writes there. Anything else is an error, never deleted.
pub fn remove_stale_partials(out: &Path) -> Result<()> {
    for p in [
        with_suffix(out, ".partial"),
        with_suffix(out, ".data.partial"),
    ] {
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if meta.is_file() {
            std::fs::remove_file(&p).map_err(|e| Error::write(&p, e))?;
        } else if meta.is_dir() && is_marked(&p, OutputKind::HfFolder) {
            for name in HF_FILES.iter().chain(&HF_PARTIALS) {
                let f = p.join(name);
                if std::fs::symlink_metadata(&f).is_ok_and(|m| m.is_file()) {
                    std::fs::remove_file(&f).map_err(|e| Error::write(&f, e))?;
                }
            }
            std::fs::remove_dir(&p).map_err(|_| Error::Output {
                path: p.clone(),
                reason: "left by an interrupted write, but holds files leanlm did not write: \
                         move them out and remove it"
                    .into(),
            })?;
        } else {
            // An empty folder is what a write killed right after creating it leaves.
            std::fs::remove_dir(&p).map_err(|_| Error::Output {
                path: p.clone(),
                reason: "is in the way of the output's temporary name and was not written by \
                         leanlm: move it"
                    .into(),
            })?;
        }
    }
    Ok(())
}

/// Move the finished folder `tmp` into place at `dir`: a rename when `dir` is new;
/// otherwise `dir` must be a marked leanlm folder, and each of leanlm's files in it is
/// replaced by its new version (one rename each), leaving every other file alone.
pub fn install_folder(tmp: &Path, dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return std::fs::rename(tmp, dir).map_err(|e| Error::write(dir, e));
    }
    if !is_marked(dir, OutputKind::HfFolder) {
        return Err(Error::Output {
            path: dir.to_path_buf(),
            reason: format!("exists and is not a folder leanlm wrote (no {MARKER} marker)"),
        });
    }
    // Files of ours the new folder does not have (none today) would be stale: remove them.
    for name in HF_FILES {
        let (new, old) = (tmp.join(name), dir.join(name));
        if !new.exists() && std::fs::symlink_metadata(&old).is_ok_and(|m| m.is_file()) {
            std::fs::remove_file(&old).map_err(|e| Error::write(&old, e))?;
        }
    }
    for name in HF_FILES {
        let (new, old) = (tmp.join(name), dir.join(name));
        if new.exists() {
            std::fs::rename(&new, &old).map_err(|e| Error::write(&old, e))?;
        }
    }
    std::fs::remove_dir(tmp).map_err(|e| Error::write(tmp, e))
}

fn starts_with(path: &Path, magic: &[u8]) -> bool {
    let mut head = vec![0u8; magic.len()];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == magic
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("leanlm-dest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn new_paths_pass_and_existing_ones_need_to_be_ours_and_forced() {
        let d = scratch("rules");
        let gguf = d.join("m.gguf");
        check(&gguf, OutputKind::Gguf, &[], false).unwrap();
        std::fs::write(&gguf, b"GGUF rest").unwrap();
        let e = check(&gguf, OutputKind::Gguf, &[], false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        check(&gguf, OutputKind::Gguf, &[], true).unwrap();
        let text = d.join("notes.gguf");
        std::fs::write(&text, b"my notes").unwrap();
        let e = check(&text, OutputKind::Gguf, &[], true).unwrap_err();
        assert!(e.to_string().contains("not a GGUF"), "{e}");

        let folder = d.join("hf");
        std::fs::create_dir(&folder).unwrap();
        let e = check(&folder, OutputKind::HfFolder, &[], true).unwrap_err();
        assert!(e.to_string().contains(MARKER), "{e}");
        write_marker(&folder, OutputKind::RunFolder).unwrap();
        assert!(
            check(&folder, OutputKind::HfFolder, &[], true).is_err(),
            "another kind"
        );
        write_marker(&folder, OutputKind::HfFolder).unwrap();
        assert!(check(&folder, OutputKind::HfFolder, &[], false).is_err());
        check(&folder, OutputKind::HfFolder, &[], true).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_input_is_never_the_output() {
        let d = scratch("input");
        let m = d.join("m.gguf");
        std::fs::write(&m, b"GGUF").unwrap();
        let other = d.join(".").join("m.gguf");
        let e = check(&other, OutputKind::Gguf, &[&m], true).unwrap_err();
        assert!(e.to_string().contains("is an input"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn installing_over_a_marked_folder_keeps_other_files() {
        let d = scratch("install");
        let (tmp, dir) = (d.join("out.partial"), d.join("out"));
        std::fs::create_dir(&dir).unwrap();
        write_marker(&dir, OutputKind::HfFolder).unwrap();
        std::fs::write(dir.join("config.json"), b"old").unwrap();
        std::fs::write(dir.join("mine.txt"), b"user").unwrap();
        std::fs::create_dir(&tmp).unwrap();
        write_marker(&tmp, OutputKind::HfFolder).unwrap();
        std::fs::write(tmp.join("config.json"), b"new").unwrap();
        install_folder(&tmp, &dir).unwrap();
        assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), b"new");
        assert_eq!(std::fs::read(dir.join("mine.txt")).unwrap(), b"user");
        assert!(!tmp.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_partials_are_removed_only_when_ours() {
        let d = scratch("stale");
        let out = d.join("out");
        let tmp = with_suffix(&out, ".partial");
        std::fs::create_dir(&tmp).unwrap();
        write_marker(&tmp, OutputKind::HfFolder).unwrap();
        std::fs::write(tmp.join("model.safetensors.data.partial"), b"x").unwrap();
        std::fs::write(with_suffix(&out, ".data.partial"), b"x").unwrap();
        remove_stale_partials(&out).unwrap();
        assert!(!tmp.exists() && !with_suffix(&out, ".data.partial").exists());

        // A folder of that name that leanlm did not write is an error, and survives.
        std::fs::create_dir(&tmp).unwrap();
        std::fs::write(tmp.join("precious.txt"), b"keep").unwrap();
        assert!(remove_stale_partials(&out).is_err());
        assert_eq!(std::fs::read(tmp.join("precious.txt")).unwrap(), b"keep");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
