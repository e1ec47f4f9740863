//! GGUF, the file format of llama.cpp: a header of typed key/value metadata, a table of
//! tensors (name, shape, type, offset) and an aligned data section.
//!
//! The reader memory-maps the file and validates every length and offset against the
//! file size before anything is sliced, so a truncated or hostile file is an error,
//! never a panic or an out-of-bounds read.

mod reader;
mod writer;

pub use reader::GgufFile;
pub use writer::{GgufWriter, TensorData};

use crate::quant::GgmlType;

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array, stored by element type: a file's array of a million `u8` takes a
/// megabyte in memory, not the 32 MB a list of [`Value`]s would, so that the memory a
/// header needs stays a small multiple of the bytes it occupies in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

/// Apply the same expression to the vector inside any [`Array`] variant.
macro_rules! each {
    ($a:expr, $v:ident => $e:expr) => {
        match $a {
            Array::U8($v) => $e,
            Array::I8($v) => $e,
            Array::U16($v) => $e,
            Array::I16($v) => $e,
            Array::U32($v) => $e,
            Array::I32($v) => $e,
            Array::F32($v) => $e,
            Array::Bool($v) => $e,
            Array::String($v) => $e,
            Array::Array($v) => $e,
            Array::U64($v) => $e,
            Array::I64($v) => $e,
            Array::F64($v) => $e,
        }
    };
}

impl Array {
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn truncate(&mut self, n: usize) {
        each!(self, v => v.truncate(n))
    }

    /// The GGUF type id of the elements.
    pub fn elem_type_id(&self) -> u32 {
        match self {
            Array::U8(_) => 0,
            Array::I8(_) => 1,
            Array::U16(_) => 2,
            Array::I16(_) => 3,
            Array::U32(_) => 4,
            Array::I32(_) => 5,
            Array::F32(_) => 6,
            Array::Bool(_) => 7,
            Array::String(_) => 8,
            Array::Array(_) => 9,
            Array::U64(_) => 10,
            Array::I64(_) => 11,
            Array::F64(_) => 12,
        }
    }

    /// Element `i` as a value (strings and nested arrays are cloned).
    pub fn get(&self, i: usize) -> Option<Value> {
        Some(match self {
            Array::U8(v) => Value::U8(*v.get(i)?),
            Array::I8(v) => Value::I8(*v.get(i)?),
            Array::U16(v) => Value::U16(*v.get(i)?),
            Array::I16(v) => Value::I16(*v.get(i)?),
            Array::U32(v) => Value::U32(*v.get(i)?),
            Array::I32(v) => Value::I32(*v.get(i)?),
            Array::F32(v) => Value::F32(*v.get(i)?),
            Array::Bool(v) => Value::Bool(*v.get(i)?),
            Array::String(v) => Value::String(v.get(i)?.clone()),
            Array::Array(v) => Value::Array(v.get(i)?.clone()),
            Array::U64(v) => Value::U64(*v.get(i)?),
            Array::I64(v) => Value::I64(*v.get(i)?),
            Array::F64(v) => Value::F64(*v.get(i)?),
        })
    }

    /// The elements as values, in order.
    pub fn iter(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// The strings of an array of strings.
    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            Array::String(v) => Some(v),
            _ => None,
        }
    }
}

/// GGUF's name of a value type id, for error messages.
pub fn type_name(id: u32) -> &'static str {
    match id {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "unknown",
    }
}

impl Value {
    /// Any integer type as u64 (negative values are rejected).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The GGUF type id of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// The type as an error message names it ("string", "array of u32").
    pub fn type_description(&self) -> String {
        match self {
            Value::Array(a) => format!("array of {}", type_name(a.elem_type_id())),
            v => type_name(v.type_id()).to_string(),
        }
    }

    /// A short rendering for `leanlm info` (long arrays are summarised).
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) if s.chars().count() > 60 => {
                format!("{:?}…", s.chars().take(60).collect::<String>())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Array(a) if a.len() > 8 => format!("[{} values]", a.len()),
            Value::Array(a) => {
                let items: Vec<String> = a.iter().map(|v| v.summary()).collect();
                format!("[{}]", items.join(", "))
            }
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            other => other.as_i64().map(|v| v.to_string()).unwrap_or_default(),
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<usize>,
    pub dtype: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Bytes of data, derived from dims and type.
    pub size: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }

    /// Shape in row-major order (outermost first), as PyTorch and candle write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&n_tensors.to_le_bytes());
        b.extend_from_slice(&n_kv.to_le_bytes());
        b
    }

    fn open_bytes(name: &str, bytes: &[u8]) -> String {
        let p = std::env::temp_dir().join(format!("leanlm-gguf-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        let r = GgufFile::open(&p).map(|_| ()).map_err(|e| e.to_string());
        std::fs::remove_file(&p).unwrap();
        r.err().unwrap_or_default()
    }

    #[test]
    fn hostile_headers_are_errors_not_panics() {
        assert!(open_bytes("empty", b"").contains("truncated"));
        assert!(open_bytes("magic", b"GGML\x03\0\0\0").contains("bad magic"));
        let mut v1 = header(0, 0);
        v1[4] = 1;
        assert!(open_bytes("v1", &v1).contains("version 1"));
        assert!(open_bytes("counts", &header(u64::MAX, 0)).contains("more than the file can hold"));
        // A key whose string length is absurd.
        let mut b = header(0, 1);
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        b.extend_from_slice(&[0; 16]); // enough bytes that the entry count is plausible
        assert!(open_bytes("strlen", &b).contains("truncated"));
        // An array that claims more elements than bytes remain.
        let mut b = header(0, 1);
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'k');
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(open_bytes("array", &b).contains("longer than the file"));
    }

    #[test]
    fn tensor_past_the_end_is_named() {
        let mut b = header(1, 0);
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'x');
        b.extend_from_slice(&1u32.to_le_bytes()); // one dim
        b.extend_from_slice(&32u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // F32
        b.extend_from_slice(&(1u64 << 40).to_le_bytes()); // offset far beyond the file
        let e = open_bytes("offset", &b);
        assert!(
            e.contains("tensor 'x'") && e.contains("past the end"),
            "{e}"
        );
    }

    /// One tensor-table entry.
    fn tensor_entry(name: &str, dims: &[u64], ty: u32, offset: u64) -> Vec<u8> {
        let mut b = (name.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b
    }

    /// One u32 metadata entry.
    fn kv_u32(key: &str, v: u32) -> Vec<u8> {
        let mut b = (key.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
        b
    }

    #[test]
    fn shapes_whose_byte_size_overflows_are_errors() {
        // [2^62] f32 is 2^64 bytes, which wrapped to 0; [2^63 + 576] f32 wrapped to the
        // 2,304 bytes of a plausible 576-wide norm.
        for (name, dims, ty) in [
            ("f32", vec![1u64 << 62], 0),
            ("f32+576", vec![(1u64 << 63) + 576], 0),
            ("2d", vec![32, 1 << 59], 0),
        ] {
            let mut b = header(1, 0);
            b.extend(tensor_entry("x", &dims, ty, 0));
            b.resize(b.len() + 64, 0);
            b.resize(b.len() + 2304, 0);
            let e = open_bytes(name, &b);
            assert!(
                e.contains("tensor 'x'") && e.contains("too large"),
                "{name}: {e}"
            );
        }
        // Without overflow, the same huge row is data past the end.
        let mut b = header(1, 0);
        b.extend(tensor_entry("x", &[(1u64 << 63) + 576], 3, 0));
        b.resize(b.len() + 64, 0);
        assert!(open_bytes("q4_1", &b).contains("past the end"));
    }

    #[test]
    fn duplicate_keys_and_tensors_are_refused() {
        let mut b = header(0, 2);
        b.extend(kv_u32("llama.block_count", 30));
        b.extend(kv_u32("llama.block_count", 1));
        let e = open_bytes("dupkey", &b);
        assert!(
            e.contains("duplicate metadata key 'llama.block_count'"),
            "{e}"
        );

        let mut b = header(2, 0);
        b.extend(tensor_entry("t", &[32], 0, 0));
        b.extend(tensor_entry("t", &[32], 0, 128));
        b.resize(b.len() + 512, 0);
        let e = open_bytes("duptensor", &b);
        assert!(e.contains("tensor 't' appears twice"), "{e}");
    }

    #[test]
    fn arrays_are_stored_by_element_type() {
        // A million u8 take a megabyte, not a million 32-byte values.
        let n = 1 << 20;
        let mut b = header(0, 1);
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'a');
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(n as u64).to_le_bytes());
        b.resize(b.len() + n, 7);
        let p = std::env::temp_dir().join(format!("leanlm-gguf-{}-u8array", std::process::id()));
        std::fs::write(&p, &b).unwrap();
        let f = GgufFile::open(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        match f.get("a") {
            Some(Value::Array(Array::U8(v))) => assert!(v.len() == n && v.iter().all(|&x| x == 7)),
            other => panic!("expected a u8 array, got {:?}", other.map(Value::summary)),
        }
        // One byte short: the count is checked against the bytes before allocating.
        b.pop();
        assert!(open_bytes("u8short", &b).contains("longer than the file"));
    }

    #[test]
    fn a_known_key_of_the_wrong_type_is_named() {
        let p = std::env::temp_dir().join(format!("leanlm-gguf-ty-{}.gguf", std::process::id()));
        let mut w = GgufWriter::create(&p).unwrap();
        w.set("llama.rope.freq_base", Value::String("100000".into()));
        w.set("llama.block_count", Value::F32(30.0));
        w.finish().unwrap();
        let f = GgufFile::open(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        let e = f.opt_f64("llama.rope.freq_base").unwrap_err().to_string();
        assert!(e.contains("'llama.rope.freq_base' is string"), "{e}");
        let e = f.get_u64("llama.block_count").unwrap_err().to_string();
        assert!(e.contains("'llama.block_count' is f32"), "{e}");
        assert!(f.opt_f64("absent").unwrap().is_none());
    }

    #[test]
    fn writer_output_reads_back() {
        let p = std::env::temp_dir().join(format!("leanlm-gguf-rt-{}.gguf", std::process::id()));
        let mut w = GgufWriter::create(&p).unwrap();
        w.set("general.architecture", Value::String("llama".into()));
        w.set("a.list", Value::Array(Array::I32(vec![-1, 2])));
        let bytes: Vec<u8> = (0..64u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        w.add_tensor(TensorData {
            name: "t".into(),
            dims: vec![32, 2],
            dtype: GgmlType::F32,
            bytes: bytes.clone(),
        })
        .unwrap();
        assert!(!p.exists(), "nothing at the final path before finish");
        w.finish().unwrap();
        assert!(!p.with_extension("gguf.data.partial").exists());
        let f = GgufFile::open(&p).unwrap();
        assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(
            f.get("a.list"),
            Some(&Value::Array(Array::I32(vec![-1, 2])))
        );
        let t = f.tensor_info("t").unwrap();
        assert_eq!(t.shape(), vec![2, 32]);
        assert_eq!(f.tensor_bytes(t), &bytes[..]);
        std::fs::remove_file(&p).unwrap();

        // An unfinished writer (an error or an interruption half-way) leaves nothing.
        let mut w = GgufWriter::create(&p).unwrap();
        w.add_tensor(TensorData {
            name: "t".into(),
            dims: vec![32, 2],
            dtype: GgmlType::F32,
            bytes,
        })
        .unwrap();
        drop(w);
        assert!(!p.exists() && !p.with_extension("gguf.data.partial").exists());
    }
}
