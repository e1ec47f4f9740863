//! GGUF writer. Output goes to a temporary file that is renamed into place only when
//! complete, so an interrupted write never leaves a half-written model behind.

use std::io::{BufWriter, Write};
use std::path::Path;

use super::{Value, DEFAULT_ALIGNMENT, MAGIC};
use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// A tensor to write: GGUF-order dims (innermost first) and its encoded bytes.
pub struct TensorData {
    pub name: String,
    pub dims: Vec<usize>,
    pub dtype: GgmlType,
    pub bytes: Vec<u8>,
}

#[derive(Default)]
pub struct GgufWriter {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorData>,
}

impl GgufWriter {
    pub fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    pub fn add_tensor(&mut self, tensor: TensorData) -> Result<()> {
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
        self.tensors.push(tensor);
        Ok(())
    }

    /// Serialise everything into `path` (atomically: temp file + rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("gguf.partial");
        let result = self.write_to(&tmp);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    fn write_to(&self, path: &Path) -> Result<()> {
        let io = |e| Error::io(path, e);
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = BufWriter::new(file);
        let mut head: Vec<u8> = Vec::new();
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_string(&mut head, k);
            head.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut head, v);
        }
        let align = DEFAULT_ALIGNMENT as usize;
        let mut offset = 0usize;
        for t in &self.tensors {
            put_string(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for &d in &t.dims {
                head.extend_from_slice(&(d as u64).to_le_bytes());
            }
            head.extend_from_slice(&t.dtype.id().to_le_bytes());
            head.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = (offset + t.bytes.len()).div_ceil(align) * align;
        }
        head.resize(head.len().div_ceil(align) * align, 0);
        w.write_all(&head).map_err(io)?;
        for t in &self.tensors {
            w.write_all(&t.bytes).map_err(io)?;
            let pad = t.bytes.len().div_ceil(align) * align - t.bytes.len();
            w.write_all(&vec![0u8; pad]).map_err(io)?;
        }
        w.flush().map_err(io)?;
        w.get_ref().sync_all().map_err(io)
    }
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
        Value::Array(items) => {
            // An empty array still needs an element type; strings are the common case.
            let elem = items.first().map(Value::type_id).unwrap_or(8);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                put_value(out, it);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
