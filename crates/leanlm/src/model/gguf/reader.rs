//! Bounds-checked GGUF reader over a memory map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use memmap2::Mmap;

use super::{TensorInfo, Value, DEFAULT_ALIGNMENT, MAGIC};
use crate::error::{Error, Result};
use crate::quant::{Bytes, GgmlType};

/// Upper bounds that stop a hostile header from making us allocate absurd amounts.
const MAX_DIMS: usize = 4;
const MAX_ARRAY_DEPTH: usize = 4;

/// An opened GGUF file: parsed header plus the mapped bytes.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    data_offset: usize,
    mmap: Arc<Mmap>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is read-only; a file changed underneath us by another process is
        // outside what any mmap-based loader (llama.cpp included) can defend against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let bad = |reason: String| Error::BadGguf {
            path: path.clone(),
            reason,
        };
        let mut cur = Cursor { buf: &mmap, pos: 0 };
        let magic = cur.bytes(4).map_err(&bad)?;
        if magic != MAGIC {
            return Err(bad(format!("bad magic {magic:02x?}, expected \"GGUF\"")));
        }
        let version = cur.u32().map_err(&bad)?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!(
                "GGUF version {version} is not supported (2 or 3)"
            )));
        }
        let n_tensors = cur.u64().map_err(&bad)?;
        let n_kv = cur.u64().map_err(&bad)?;
        // Every entry takes at least 8 bytes, so counts beyond the file size are lies.
        let limit = mmap.len() as u64 / 8;
        if n_tensors > limit || n_kv > limit {
            return Err(bad(format!(
                "header claims {n_tensors} tensors and {n_kv} metadata entries, more than the file can hold"
            )));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = cur.string().map_err(&bad)?;
            let ty = cur.u32().map_err(&bad)?;
            let value = cur
                .value(ty, 0)
                .map_err(|e| bad(format!("metadata '{key}': {e}")))?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = cur.string().map_err(&bad)?;
            let tbad = |reason: String| Error::BadTensor {
                path: path.clone(),
                tensor: name.clone(),
                reason,
            };
            let n_dims = cur.u32().map_err(&tbad)? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(tbad(format!(
                    "has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                let d = cur.u64().map_err(&tbad)?;
                dims.push(
                    usize::try_from(d).map_err(|_| tbad(format!("dimension {d} too large")))?,
                );
            }
            let dtype =
                GgmlType::from_id(cur.u32().map_err(&tbad)?).map_err(|e| tbad(e.to_string()))?;
            let offset = cur.u64().map_err(&tbad)?;
            let elements = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| tbad(format!("shape {dims:?} overflows")))?;
            if dims[0] % dtype.block_len() != 0 {
                return Err(tbad(format!(
                    "row length {} is not a multiple of the {} block size {}",
                    dims[0],
                    dtype,
                    dtype.block_len()
                )));
            }
            let size = (elements / dtype.block_len()) as u64 * dtype.block_bytes() as u64;
            tensors.push(TensorInfo {
                name,
                dims,
                dtype,
                offset,
                size,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(bad(format!(
                        "general.alignment {v:?} is not a power of two"
                    )))
                }
            },
        };
        let data_offset = (cur.pos as u64).div_ceil(alignment) * alignment;
        let file_len = mmap.len() as u64;
        for t in &tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.size));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(Error::BadTensor {
                        path: path.clone(),
                        tensor: t.name.clone(),
                        reason: format!(
                            "data (offset {}, {} bytes) runs past the end of the file ({} bytes); the file is truncated or corrupt",
                            t.offset, t.size, file_len
                        ),
                    })
                }
            }
            if t.offset % alignment != 0 {
                return Err(Error::BadTensor {
                    path: path.clone(),
                    tensor: t.name.clone(),
                    reason: format!("offset {} is not aligned to {alignment}", t.offset),
                });
            }
        }
        Ok(Self {
            path,
            version,
            metadata,
            tensors,
            data_offset: data_offset as usize,
            mmap: Arc::new(mmap),
        })
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor (bounds were checked at open).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_offset + info.offset as usize;
        &self.mmap[start..start + info.size as usize]
    }

    /// The tensor's bytes as a shared window of the map (no copy).
    pub fn tensor_shared(&self, info: &TensorInfo) -> Bytes {
        Bytes::Mapped {
            map: self.mmap.clone(),
            start: self.data_offset + info.offset as usize,
            len: info.size as usize,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::MissingKey(key.to_string()))
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::MissingKey(key.to_string()))
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| Error::MissingKey(key.to_string()))
    }

    pub fn file_size(&self) -> u64 {
        self.mmap.len() as u64
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "unexpected end of file at byte {} (wanted {n} more bytes; the file is truncated)",
                self.pos
            )),
        }
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let b = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| format!("string length {len} too large"))?;
        let b = self.bytes(len)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| format!("string at byte {} is not UTF-8", self.pos - len))
    }

    fn value(&mut self, ty: u32, depth: usize) -> std::result::Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>()?[0]),
            1 => Value::I8(self.array::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("bool byte {b} is neither 0 nor 1")),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err("arrays nested too deeply".into());
                }
                let elem_ty = self.u32()?;
                let n = self.u64()?;
                let remaining = (self.buf.len() - self.pos) as u64;
                if n > remaining {
                    return Err(format!("array of {n} elements is longer than the file"));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem_ty, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(format!("unknown value type {other}")),
        })
    }
}
