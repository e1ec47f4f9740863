//! A model file whose header can only be written after its tensor data (GGUF's and
//! safetensors' headers list every tensor's shape and offset). Tensor bytes go to a side
//! file as they come; `finish` writes the header, appends the side file and renames the
//! result into place. Until then the destination is untouched, and dropping an unfinished
//! file removes the side file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub struct SpilledFile {
    path: PathBuf,
    spill_path: PathBuf,
    spill: BufWriter<File>,
    finished: bool,
}

impl SpilledFile {
    pub fn create(path: &Path) -> Result<Self> {
        let spill_path = with_suffix(path, ".data.partial");
        let file = File::create(&spill_path).map_err(|e| Error::write(&spill_path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            spill_path,
            spill: BufWriter::new(file),
            finished: false,
        })
    }

    /// Append tensor data.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.spill
            .write_all(bytes)
            .map_err(|e| Error::write(&self.spill_path, e))
    }

    /// `header`, then everything written, into the destination (temp file + rename).
    pub fn finish(mut self, header: &[u8]) -> Result<()> {
        let io = |e| Error::write(&self.spill_path, e);
        self.spill.flush().map_err(io)?;
        let tmp = with_suffix(&self.path, ".partial");
        let write = || -> Result<()> {
            let tio = |e| Error::write(&tmp, e);
            let mut out = BufWriter::new(File::create(&tmp).map_err(tio)?);
            out.write_all(header).map_err(tio)?;
            let mut spill =
                File::open(&self.spill_path).map_err(|e| Error::io(&self.spill_path, e))?;
            std::io::copy(&mut spill, &mut out).map_err(tio)?;
            out.flush().map_err(tio)?;
            out.get_ref().sync_all().map_err(tio)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| Error::write(&self.path, e))?;
        self.finished = true;
        let _ = std::fs::remove_file(&self.spill_path);
        Ok(())
    }
}

impl Drop for SpilledFile {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.spill_path);
        }
    }
}

/// Remove what an interrupted write to `path` left: `path.partial` (a file, or a folder
/// being assembled, emptied only of the files leanlm writes there) and
/// `path.data.partial`. For a signal handler: the process exits right after, so
/// destructors will not run.
pub fn remove_leftovers(path: &Path) {
    let _ = super::destination::remove_stale_partials(path);
}

/// `path` with `suffix` appended to its file name (`out.gguf` → `out.gguf.partial`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}
