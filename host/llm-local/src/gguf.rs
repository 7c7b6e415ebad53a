//! GGUF reader: header, metadata and tensor infos, borrowed from the mapped file.
//!
//! Follows ggml's `docs/gguf.md` (versions 2 and 3; little-endian files only): magic
//! `GGUF`, version, tensor count, metadata count, then typed key/value pairs, then one
//! info per tensor (name, dims, ggml type, offset), then the tensor data, aligned to
//! `general.alignment` (32 by default). Nothing here copies tensor data or knows the
//! model; the `model` module picks tensors by name and [`GgmlType`] says how big they are.
//! Every read is bounds-checked: a cut file is [`ReadError::Truncated`], never a panic.

use std::collections::HashMap;

/// Why a file could not be read as GGUF.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The magic or the version is wrong, or a value is malformed.
    NotGguf(String),
    /// The header ends before its last field.
    Truncated(String),
}

/// A ggml tensor type, by its GGUF id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: Self = Self(0);
    pub const F16: Self = Self(1);
    pub const Q4_1: Self = Self(3);
    pub const Q8_0: Self = Self(8);

    /// ggml's name of the type (`type_traits[].type_name`), or "type N" if unknown.
    pub fn name(self) -> String {
        const NAMES: &[&str] = &[
            "f32", "f16", "q4_0", "q4_1", "q4_2", "q4_3", "q5_0", "q5_1", "q8_0", "q8_1", "q2_K",
            "q3_K", "q4_K", "q5_K", "q6_K", "q8_K", "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s",
            "iq4_nl", "iq3_s", "iq2_s", "iq4_xs", "i8", "i16", "i32", "i64", "f64", "iq1_m",
            "bf16",
        ];
        match NAMES.get(self.0 as usize) {
            Some(n) if !matches!(self.0, 4 | 5) => (*n).to_string(),
            _ => format!("type {}", self.0),
        }
    }

    /// (elements per block, bytes per block) of the types whose layout we know.
    pub fn block(self) -> Option<(u64, u64)> {
        Some(match self.0 {
            0 => (1, 4),
            1 | 30 => (1, 2),
            2 => (32, 18),
            3 => (32, 20),
            6 => (32, 22),
            7 => (32, 24),
            8 => (32, 34),
            10 => (256, 84),
            11 => (256, 110),
            12 => (256, 144),
            13 => (256, 176),
            14 => (256, 210),
            _ => return None,
        })
    }
}

/// A metadata value; strings and arrays borrow from the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(&'a str),
    Array(Vec<Value<'a>>),
}

impl<'a> Value<'a> {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// ggml order: `dims[0]` is the row length (innermost).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Byte size, or `None` for a type of unknown layout or a partial block.
    pub fn bytes(&self) -> Option<u64> {
        let (per, size) = self.ty.block()?;
        let n = self.elements();
        n.is_multiple_of(per).then(|| n / per * size)
    }
}

/// The parsed header of a GGUF file.
#[derive(Debug)]
pub struct Gguf<'a> {
    pub version: u32,
    pub metadata: HashMap<&'a str, Value<'a>>,
    pub tensors: HashMap<&'a str, TensorInfo>,
    /// Tensor names in file order.
    pub tensor_order: Vec<&'a str>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], ReadError> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                ReadError::Truncated(format!(
                    "its header ends early (reading {what} at byte {})",
                    self.pos
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ReadError> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }
    fn u32(&mut self, what: &str) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn str(&mut self, what: &str) -> Result<&'a str, ReadError> {
        let n = self.u64(what)?;
        let bytes = self.take(n, what)?;
        std::str::from_utf8(bytes)
            .map_err(|e| ReadError::NotGguf(format!("{what} is not utf-8: {e}")))
    }
    /// A value of GGUF type `ty`; arrays nest at most `depth` levels.
    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<Value<'a>, ReadError> {
        Ok(match ty {
            0 => Value::U64(self.array::<1>(what)?[0] as u64),
            1 => Value::I64(self.array::<1>(what)?[0] as i8 as i64),
            2 => Value::U64(u16::from_le_bytes(self.array(what)?) as u64),
            3 => Value::I64(i16::from_le_bytes(self.array(what)?) as i64),
            4 => Value::U64(self.u32(what)? as u64),
            5 => Value::I64(i32::from_le_bytes(self.array(what)?) as i64),
            6 => Value::F64(f32::from_le_bytes(self.array(what)?) as f64),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(ReadError::NotGguf(format!("{what}: bool byte {b}"))),
            },
            8 => Value::Str(self.str(what)?),
            9 if depth > 0 => {
                let inner = self.u32(what)?;
                let n = self.u64(what)?;
                // Each element is at least one byte: a count past the file is a cut file.
                if n > (self.buf.len() - self.pos) as u64 {
                    return Err(ReadError::Truncated(format!(
                        "its header ends early ({what} claims {n} elements)"
                    )));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(inner, what, depth - 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            t => {
                return Err(ReadError::NotGguf(format!(
                    "{what} has unknown value type {t}"
                )))
            }
        })
    }
}

impl<'a> Gguf<'a> {
    /// Parses the header of `file` (the whole file, so offsets can be checked).
    pub fn read(file: &'a [u8]) -> Result<Self, ReadError> {
        if file.len() < 4 || &file[..4] != b"GGUF" {
            let head: Vec<u8> = file.iter().take(4).copied().collect();
            return Err(ReadError::NotGguf(format!(
                "it starts with bytes {head:02x?}, not the magic \"GGUF\""
            )));
        }
        let mut r = Reader { buf: file, pos: 4 };
        let version = r.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(ReadError::NotGguf(format!(
                "gguf version {version} (versions 2 and 3 are supported)"
            )));
        }
        let n_tensors = r.u64("the tensor count")?;
        let n_kv = r.u64("the metadata count")?;
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = r.str("a metadata key")?;
            let ty = r.u32(key)?;
            let v = r.value(ty, key, 2)?;
            metadata.insert(key, v);
        }
        let mut tensors = HashMap::new();
        let mut tensor_order = Vec::new();
        for _ in 0..n_tensors {
            let name = r.str("a tensor name")?;
            let n_dims = r.u32(name)?;
            if n_dims > 4 {
                return Err(ReadError::NotGguf(format!(
                    "tensor {name} has {n_dims} dimensions (ggml has at most 4)"
                )));
            }
            let dims = (0..n_dims)
                .map(|_| r.u64(name))
                .collect::<Result<Vec<_>, _>>()?;
            if dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .is_none()
            {
                return Err(ReadError::NotGguf(format!(
                    "tensor {name} has dims {dims:?}"
                )));
            }
            let ty = GgmlType(r.u32(name)?);
            let offset = r.u64(name)?;
            if tensors
                .insert(name, TensorInfo { dims, ty, offset })
                .is_some()
            {
                return Err(ReadError::NotGguf(format!("tensor {name} appears twice")));
            }
            tensor_order.push(name);
        }
        let align = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| ReadError::NotGguf(format!("general.alignment is {v:?}")))?,
        };
        let data_offset = (r.pos as u64).div_ceil(align) * align;
        Ok(Gguf {
            version,
            metadata,
            tensors,
            tensor_order,
            data_offset,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.metadata.get(key)
    }

    pub fn str(&self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(Value::as_str)
    }

    /// Absolute byte range of a tensor, unchecked against the file size.
    pub fn range(&self, info: &TensorInfo) -> Option<std::ops::Range<u64>> {
        let start = self.data_offset.checked_add(info.offset)?;
        Some(start..start.checked_add(info.bytes()?)?)
    }
}

/// Writes a GGUF file (version 3): for tests, which build small files of their own.
#[cfg(test)]
pub mod write {
    /// A metadata value to write.
    pub enum W<'a> {
        U32(u32),
        F32(f32),
        Bool(bool),
        Str(&'a str),
        StrArray(&'a [&'a str]),
        I32Array(&'a [i32]),
    }

    fn s(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// `tensors`: (name, dims, ggml type id, raw data).
    pub fn gguf(meta: &[(&str, W)], tensors: &[(&str, Vec<u64>, u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((meta.len() as u64).to_le_bytes());
        for (k, v) in meta {
            s(&mut out, k);
            match v {
                W::U32(x) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                W::F32(x) => {
                    out.extend(6u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                W::Bool(x) => {
                    out.extend(7u32.to_le_bytes());
                    out.push(*x as u8);
                }
                W::Str(x) => {
                    out.extend(8u32.to_le_bytes());
                    s(&mut out, x);
                }
                W::StrArray(xs) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(8u32.to_le_bytes());
                    out.extend((xs.len() as u64).to_le_bytes());
                    for x in *xs {
                        s(&mut out, x);
                    }
                }
                W::I32Array(xs) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(5u32.to_le_bytes());
                    out.extend((xs.len() as u64).to_le_bytes());
                    for x in *xs {
                        out.extend(x.to_le_bytes());
                    }
                }
            }
        }
        let mut offset = 0u64;
        for (name, dims, ty, data) in tensors {
            s(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        for (_, _, _, data) in tensors {
            out.resize(out.len().div_ceil(32) * 32, 0);
            out.extend(data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::write::{gguf, W};
    use super::*;

    fn sample() -> Vec<u8> {
        gguf(
            &[
                ("general.architecture", W::Str("llama")),
                ("llama.block_count", W::U32(2)),
                ("llama.rope.freq_base", W::F32(0.5)),
                ("tokenizer.ggml.add_bos_token", W::Bool(true)),
                ("tokenizer.ggml.tokens", W::StrArray(&["a", "bc"])),
                ("tokenizer.ggml.token_type", W::I32Array(&[1, 3])),
            ],
            &[
                (
                    "v",
                    vec![3],
                    0,
                    [1f32, 2.0, 3.0]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                ),
                ("m", vec![32, 2], 8, vec![7u8; 68]),
            ],
        )
    }

    #[test]
    fn reads_metadata_and_tensor_infos() {
        let file = sample();
        let g = Gguf::read(&file).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.str("general.architecture"), Some("llama"));
        assert_eq!(g.get("llama.block_count").and_then(Value::as_u64), Some(2));
        assert_eq!(
            g.get("llama.rope.freq_base").and_then(Value::as_f64),
            Some(0.5)
        );
        assert_eq!(
            g.get("tokenizer.ggml.add_bos_token")
                .and_then(Value::as_bool),
            Some(true)
        );
        let toks = g
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!(toks, &[Value::Str("a"), Value::Str("bc")]);
        let types = g
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!(types[1].as_i64(), Some(3));
        assert_eq!(g.tensor_order, vec!["v", "m"]);
        let m = &g.tensors["m"];
        assert_eq!(
            (m.dims.clone(), m.ty, m.bytes()),
            (vec![32, 2], GgmlType::Q8_0, Some(68))
        );
        let r = g.range(&g.tensors["v"]).unwrap();
        assert_eq!(g.data_offset % 32, 0);
        let v: Vec<f32> = file[r.start as usize..r.end as usize]
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(v, vec![1.0, 2.0, 3.0]);
        assert_eq!(g.range(m).unwrap().start, g.data_offset + 32);
    }

    #[test]
    fn every_cut_of_the_header_is_truncated() {
        let file = sample();
        let header_end = Gguf::read(&file).unwrap().data_offset as usize;
        for len in 4..header_end - 32 {
            match Gguf::read(&file[..len]) {
                Err(ReadError::Truncated(_)) => {}
                other => panic!("cut at {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_magic_version_and_values_are_not_gguf() {
        assert!(matches!(
            Gguf::read(b"lmgg\x01\0\0\0"),
            Err(ReadError::NotGguf(_))
        ));
        assert!(matches!(Gguf::read(b""), Err(ReadError::NotGguf(_))));
        let mut v1 = sample();
        v1[4] = 1;
        assert!(matches!(Gguf::read(&v1), Err(ReadError::NotGguf(m)) if m.contains("version 1")));
        let bad_type = gguf(&[("k", W::U32(1))], &[]);
        let mut bad = bad_type.clone();
        let at = 4 + 4 + 8 + 8 + 8 + 1;
        bad[at] = 77;
        assert!(
            matches!(Gguf::read(&bad), Err(ReadError::NotGguf(m)) if m.contains("value type 77"))
        );
    }

    #[test]
    fn type_names_and_sizes_follow_ggml() {
        assert_eq!(GgmlType::Q4_1.name(), "q4_1");
        assert_eq!(GgmlType(14).name(), "q6_K");
        assert_eq!(GgmlType(4).name(), "type 4");
        assert_eq!(GgmlType(99).name(), "type 99");
        assert_eq!(GgmlType::Q4_1.block(), Some((32, 20)));
        assert_eq!(GgmlType(14).block(), Some((256, 210)));
    }
}
