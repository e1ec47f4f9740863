//! Bounds-checked GGUF reader over a memory map.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use memmap2::Mmap;

use super::{Array, TensorInfo, Value, DEFAULT_ALIGNMENT, MAGIC};
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
    /// Tensor name → index in `tensors` (names are unique: duplicates are refused).
    by_name: HashMap<String, usize>,
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
        // A tensor entry takes at least 32 bytes (name length, one dimension, rank, type,
        // offset) and a metadata entry 13, so larger counts are lies; checking them first
        // bounds the tables allocated below by the file's size.
        let rest = (mmap.len() - cur.pos) as u64;
        if n_tensors > rest / 32 || n_kv > rest / 13 {
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
            // llama.cpp refuses these: which copy would win is a guess.
            if metadata.contains_key(&key) {
                return Err(bad(format!("duplicate metadata key '{key}'")));
            }
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut by_name = HashMap::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = cur.string().map_err(&bad)?;
            let tbad = |reason: String| Error::BadTensor {
                path: path.clone(),
                tensor: name.clone(),
                reason,
            };
            if by_name.contains_key(&name) {
                return Err(tbad("appears twice in the tensor table".into()));
            }
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
            if dims[0] % dtype.block_len() != 0 {
                return Err(tbad(format!(
                    "row length {} is not a multiple of the {} block size {}",
                    dims[0],
                    dtype,
                    dtype.block_len()
                )));
            }
            // Checked all the way: a shape like [2^62] must not wrap to a small size.
            let size = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .and_then(|n| (n / dtype.block_len()).checked_mul(dtype.block_bytes()))
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    tbad(format!(
                        "shape {dims:?} of {dtype} is too large (its byte size overflows)"
                    ))
                })?;
            by_name.insert(name.clone(), tensors.len());
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
        let file_len = mmap.len() as u64;
        let data_offset = (cur.pos as u64)
            .div_ceil(alignment)
            .checked_mul(alignment)
            .ok_or_else(|| bad(format!("alignment {alignment} is too large")))?;
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
            by_name,
            data_offset: data_offset as usize,
            mmap: Arc::new(mmap),
        })
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
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
        match self.get(key) {
            None => Err(Error::MissingKey(key.to_string())),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.wrong_type(key, v, "a string")),
        }
    }

    /// A non-negative integer of any integer type; a value of another type is an error
    /// naming the key, not treated as absent.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?
            .ok_or_else(|| Error::MissingKey(key.to_string()))
    }

    /// A number (float or integer type).
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?
            .ok_or_else(|| Error::MissingKey(key.to_string()))
    }

    /// Like [`GgufFile::get_u64`], with `None` when the key is absent.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| self.wrong_type(key, v, "a non-negative integer"))
            })
            .transpose()
    }

    /// Like [`GgufFile::get_f64`], with `None` when the key is absent.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.wrong_type(key, v, "a number"))
            })
            .transpose()
    }

    /// The error for a key present with the wrong type or value.
    pub fn wrong_type(&self, key: &str, found: &Value, expected: &str) -> Error {
        Error::BadGguf {
            path: self.path.clone(),
            reason: format!(
                "metadata '{key}' is {} {}, expected {expected}",
                found.type_description(),
                found.summary()
            ),
        }
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
                Value::Array(self.array_of(elem_ty, n, depth)?)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(format!("unknown value type {other}")),
        })
    }

    /// `n` elements of type `ty`, stored compactly. The count is checked against the
    /// bytes left before anything is allocated.
    fn array_of(&mut self, ty: u32, n: u64, depth: usize) -> std::result::Result<Array, String> {
        // The fewest bytes one element can take in the file.
        let min_bytes: u64 = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            other => return Err(format!("array of unknown value type {other}")),
        };
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining / min_bytes {
            return Err(format!(
                "array of {n} {} values is longer than the file",
                super::type_name(ty)
            ));
        }
        let n = n as usize;
        fn read<T>(
            n: usize,
            mut f: impl FnMut() -> std::result::Result<T, String>,
        ) -> std::result::Result<Vec<T>, String> {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(f()?);
            }
            Ok(v)
        }
        Ok(match ty {
            0 => Array::U8(self.bytes(n)?.to_vec()),
            1 => Array::I8(self.bytes(n)?.iter().map(|&b| b as i8).collect()),
            2 => Array::U16(read(n, || Ok(u16::from_le_bytes(self.array()?)))?),
            3 => Array::I16(read(n, || Ok(i16::from_le_bytes(self.array()?)))?),
            4 => Array::U32(read(n, || self.u32())?),
            5 => Array::I32(read(n, || Ok(i32::from_le_bytes(self.array()?)))?),
            6 => Array::F32(read(n, || Ok(f32::from_le_bytes(self.array()?)))?),
            7 => Array::Bool(read(n, || match self.array::<1>()?[0] {
                0 => Ok(false),
                1 => Ok(true),
                b => Err(format!("bool byte {b} is neither 0 nor 1")),
            })?),
            8 => Array::String(read(n, || self.string())?),
            9 => {
                if depth + 1 >= MAX_ARRAY_DEPTH {
                    return Err("arrays nested too deeply".into());
                }
                Array::Array(read(n, || {
                    let ty = self.u32()?;
                    let len = self.u64()?;
                    self.array_of(ty, len, depth + 1)
                })?)
            }
            10 => Array::U64(read(n, || self.u64())?),
            11 => Array::I64(read(n, || Ok(i64::from_le_bytes(self.array()?)))?),
            12 => Array::F64(read(n, || Ok(f64::from_le_bytes(self.array()?)))?),
            other => return Err(format!("array of unknown value type {other}")),
        })
    }
}
