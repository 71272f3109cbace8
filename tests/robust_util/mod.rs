//! Helpers shared by the `robust_*` suites: fixture models copied into temp
//! directories and rewritten tensor by tensor, and byte-level PNG building.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/models").join(name)
}

/// A fresh, empty temp directory unique to this test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vitrine-robust-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One stored tensor: name, dtype string, shape, raw little-endian bytes.
#[derive(Clone, Debug)]
pub struct Raw {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Raw {
    pub fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.dtype, "F32");
        self.bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
    pub fn set_f32s(&mut self, v: &[f32]) {
        self.bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    }
}

/// The tensors of a single-file safetensors checkpoint, in offset order.
pub fn read_tensors(file: &Path) -> Vec<Raw> {
    let b = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let data = &b[8 + n..];
    let mut out: Vec<(usize, Raw)> = h
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = v["data_offsets"].as_array().unwrap();
            let (s, e) = (
                o[0].as_u64().unwrap() as usize,
                o[1].as_u64().unwrap() as usize,
            );
            (
                s,
                Raw {
                    name: k.clone(),
                    dtype: v["dtype"].as_str().unwrap().to_string(),
                    shape: v["shape"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() as usize)
                        .collect(),
                    bytes: data[s..e].to_vec(),
                },
            )
        })
        .collect();
    out.sort_by_key(|(s, _)| *s);
    out.into_iter().map(|(_, r)| r).collect()
}

/// A header (as JSON text) and data section for `tensors`, offsets contiguous.
pub fn layout(tensors: &[Raw]) -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for t in tensors {
        let s = data.len();
        data.extend_from_slice(&t.bytes);
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [s, data.len()]}),
        );
    }
    (header, data)
}

/// Serialises a header map and a data section into safetensors bytes.
pub fn encode(header: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_string(header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Copies fixture `name` into a temp dir, replacing its weights with `bytes`
/// (when given) and its config with `config` (when given).
pub fn model_dir(
    test: &str,
    name: &str,
    bytes: Option<Vec<u8>>,
    config: Option<String>,
) -> PathBuf {
    let d = temp_dir(test);
    let src = fixture(name);
    std::fs::copy(src.join("config.json"), d.join("config.json")).unwrap();
    std::fs::copy(src.join("model.safetensors"), d.join("model.safetensors")).unwrap();
    if let Some(b) = bytes {
        std::fs::write(d.join("model.safetensors"), b).unwrap();
    }
    if let Some(c) = config {
        std::fs::write(d.join("config.json"), c).unwrap();
    }
    d
}

/// Fixture `name` with its tensors passed through `edit`.
pub fn edited_model(test: &str, name: &str, edit: impl FnOnce(&mut Vec<Raw>)) -> PathBuf {
    let mut t = read_tensors(&fixture(name).join("model.safetensors"));
    edit(&mut t);
    let (h, d) = layout(&t);
    model_dir(test, name, Some(encode(&h, &d)), None)
}

/// Fixture `name` with its config passed through `edit`.
pub fn edited_config(
    test: &str,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> PathBuf {
    let text = std::fs::read_to_string(fixture(name).join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(v.as_object_mut().unwrap());
    model_dir(test, name, None, Some(v.to_string()))
}

// ---- PNG by hand: stored (uncompressed) deflate, so any header can be written.

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    let mut c = kind.to_vec();
    c.extend_from_slice(body);
    out.extend_from_slice(&c);
    out.extend_from_slice(&crc32(&c).to_be_bytes());
}

fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(65535).collect()
    };
    for (i, b) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let n = b.len() as u16;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// A PNG: `color` is the PNG colour type (0 gray, 2 RGB, 3 palette, 4 gray+alpha,
/// 6 RGBA), `depth` bits per sample; `rows` the unfiltered scanlines (a filter
/// byte 0 is prepended to each); `palette` RGB triples for type 3.
pub fn png(
    w: u32,
    h: u32,
    depth: u8,
    color: u8,
    rows: &[Vec<u8>],
    palette: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    if let Some(p) = palette {
        chunk(&mut out, b"PLTE", p);
    }
    let mut raw = Vec::new();
    for r in rows {
        raw.push(0);
        raw.extend_from_slice(r);
    }
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    out
}
