//! GGUF writer, tensor by tensor. Output goes to a temporary file that is renamed into
//! place only when complete, so an interrupted write never leaves a half-written model.

use std::path::Path;

use super::{Value, DEFAULT_ALIGNMENT, MAGIC};
use crate::error::{Error, Result};
use crate::model::spill::SpilledFile;
use crate::quant::GgmlType;

/// A tensor to write: GGUF-order dims (innermost first) and its encoded bytes.
pub struct TensorData {
    pub name: String,
    pub dims: Vec<usize>,
    pub dtype: GgmlType,
    pub bytes: Vec<u8>,
}

/// A GGUF written tensor by tensor, so that a model need never be in memory at once (a
/// pruned model leaves the pruner one block at a time). The header, whose metadata may
/// depend on what was added, is written by `finish`; until then `path` is untouched.
pub struct GgufWriter {
    file: SpilledFile,
    metadata: Vec<(String, Value)>,
    infos: Vec<TensorInfo>,
}

impl GgufWriter {
    pub fn create(path: &Path) -> Result<Self> {
        Ok(Self {
            file: SpilledFile::create(path)?,
            metadata: Vec::new(),
            infos: Vec::new(),
        })
    }

    pub fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    pub fn add_tensor(&mut self, tensor: TensorData) -> Result<()> {
        check_size(&tensor)?;
        if self.infos.iter().any(|t| t.name == tensor.name) {
            return Err(Error::InvalidInput(format!(
                "tensor '{}' written twice",
                tensor.name
            )));
        }
        self.file.write(&tensor.bytes)?;
        self.file.write(&vec![0u8; padding(tensor.bytes.len())])?;
        self.infos.push(TensorInfo::of(&tensor));
        Ok(())
    }

    /// Header, then the tensor data, into `path` (temp file + rename).
    pub fn finish(self) -> Result<()> {
        self.file.finish(&header(&self.metadata, &self.infos))
    }
}

/// What the header says of a tensor.
struct TensorInfo {
    name: String,
    dims: Vec<usize>,
    dtype: GgmlType,
    len: usize,
}

impl TensorInfo {
    fn of(t: &TensorData) -> Self {
        Self {
            name: t.name.clone(),
            dims: t.dims.clone(),
            dtype: t.dtype,
            len: t.bytes.len(),
        }
    }
}

fn check_size(tensor: &TensorData) -> Result<()> {
    let elements: usize = tensor.dims.iter().product();
    let expected = tensor
        .dtype
        .row_bytes(tensor.dims[0])
        .map(|r| r * elements / tensor.dims[0].max(1));
    if expected != Some(tensor.bytes.len()) {
        return Err(Error::InvalidInput(format!(
            "tensor '{}': {} bytes do not fit shape {:?} of type {}",
            tensor.name,
            tensor.bytes.len(),
            tensor.dims,
            tensor.dtype
        )));
    }
    Ok(())
}

/// Zero bytes after `len` bytes of data so that the next tensor starts aligned.
fn padding(len: usize) -> usize {
    let align = DEFAULT_ALIGNMENT as usize;
    len.div_ceil(align) * align - len
}

/// Magic, version, counts, metadata and tensor infos (data laid out in the given order),
/// padded to the data alignment.
fn header(metadata: &[(String, Value)], tensors: &[TensorInfo]) -> Vec<u8> {
    let mut head: Vec<u8> = Vec::new();
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_string(&mut head, k);
        head.extend_from_slice(&v.type_id().to_le_bytes());
        put_value(&mut head, v);
    }
    let mut offset = 0usize;
    for t in tensors {
        put_string(&mut head, &t.name);
        head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for &d in &t.dims {
            head.extend_from_slice(&(d as u64).to_le_bytes());
        }
        head.extend_from_slice(&t.dtype.id().to_le_bytes());
        head.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += t.len + padding(t.len);
    }
    head.resize(head.len() + padding(head.len()), 0);
    head
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_string(out, s),
        Value::Array(a) => {
            out.extend_from_slice(&a.elem_type_id().to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for it in a.iter() {
                put_value(out, &it);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
