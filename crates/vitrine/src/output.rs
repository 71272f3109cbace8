//! Embedding files: safetensors, `.npy`, `.npz` and JSON Lines.
//!
//! An [`OutputSet`] holds one row per embedded image (input order) and one
//! or more named outputs. Image-level outputs (`summary`) are `[N, D]`.
//! Token-level outputs (`features`, `last_hidden_state`, `intermediate_<k>`)
//! have one `[T_i, D]` matrix per image, and `T_i` differs when image sizes
//! differ, so they are laid out as:
//!
//! * **stacked** `[N, T, D]` when every image has the same token count;
//! * **packed** `[ΣT_i, D]` otherwise, with `<name>_offsets` (int64 `[N + 1]`):
//!   image `i` owns rows `offsets[i] .. offsets[i + 1]`.
//!
//! The file says which (`token_layout`). `grid` (int64 `[N, 2]`, patch rows and
//! columns) is always written, so features reshape to `[h, w, D]`.
//!
//! | format | tensors | image paths | other metadata |
//! |---|---|---|---|
//! | `.safetensors` | as above | `__metadata__["paths"]` (JSON list) | `__metadata__` strings |
//! | `.npz` (zip of `.npy`, uncompressed) | as above, one `.npy` each | `paths.npy` (unicode array) | `metadata.npy` (JSON string) |
//! | `.npy` | exactly one output (stacked or `[N, D]`) | sidecar `<stem>.paths.txt`, one per line | – |
//! | `.jsonl` | one JSON object per image: `path`, `grid`, then each output as a list (or list of lists) | `path` | – |
//!
//! Files are written to a temporary name and renamed, so a failure never
//! leaves a truncated output behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use vitrine_core::{Error, Result};

/// File formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// safetensors (default).
    Safetensors,
    /// One NumPy array.
    Npy,
    /// A zip of NumPy arrays.
    Npz,
    /// JSON Lines.
    Jsonl,
}

impl OutputFormat {
    /// The format an output path's extension names (`None` if unknown).
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        ext.parse().ok()
    }
}

impl std::str::FromStr for OutputFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "safetensors" | "st" => Ok(Self::Safetensors),
            "npy" => Ok(Self::Npy),
            "npz" => Ok(Self::Npz),
            "jsonl" | "ndjson" | "json-lines" => Ok(Self::Jsonl),
            _ => Err(Error::InvalidArgument(format!(
                "unknown output format `{s}` (expected safetensors, npy, npz or jsonl)"
            ))),
        }
    }
}

/// A row-major `[rows, cols]` f32 matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    /// Row count.
    pub rows: usize,
    /// Row width.
    pub cols: usize,
    /// `rows · cols` values.
    pub data: Vec<f32>,
}

impl Matrix {
    /// Wraps data, checking the size.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::shape(
                "Matrix",
                format!(
                    "{rows}x{cols} needs {} values, got {}",
                    rows * cols,
                    data.len()
                ),
            ));
        }
        Ok(Self { rows, cols, data })
    }

    /// Scales every row to unit L2 norm (rows of zeros stay zero).
    pub fn l2_normalize_rows(&mut self) {
        if self.cols == 0 {
            return;
        }
        for row in self.data.chunks_exact_mut(self.cols) {
            let n = row
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt();
            if n > 0.0 {
                row.iter_mut().for_each(|x| *x = (f64::from(*x) / n) as f32);
            }
        }
    }
}

/// One named output over all images.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedOutput {
    /// Tensor name (`summary`, `features`, `last_hidden_state`, `intermediate_8`).
    pub name: String,
    /// `true` for one vector per image (`[N, D]`), `false` for tokens.
    pub per_image_vector: bool,
    /// One matrix per image (a vector is a `1 × D` matrix).
    pub values: Vec<Matrix>,
}

/// Everything written to one output file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputSet {
    /// Image paths (labels), one per row.
    pub paths: Vec<String>,
    /// Patch grid `(h, w)` per image.
    pub grids: Vec<(usize, usize)>,
    /// The outputs, in the order asked for.
    pub outputs: Vec<NamedOutput>,
    /// Extra string metadata (model, dtype, device...).
    pub metadata: BTreeMap<String, String>,
}

/// A tensor on its way to a file.
enum Array {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    I64 { shape: Vec<usize>, data: Vec<i64> },
}

impl Array {
    fn shape(&self) -> &[usize] {
        match self {
            Array::F32 { shape, .. } | Array::I64 { shape, .. } => shape,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Array::F32 { data, .. } => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Array::I64 { data, .. } => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

impl OutputSet {
    /// `stacked` if every token output has one token count across images, else `packed`.
    pub fn token_layout(&self) -> &'static str {
        let mixed = self
            .outputs
            .iter()
            .any(|o| !o.per_image_vector && o.values.windows(2).any(|w| w[0].rows != w[1].rows));
        if mixed {
            "packed"
        } else {
            "stacked"
        }
    }

    fn check(&self) -> Result<()> {
        let n = self.paths.len();
        if self.grids.len() != n {
            return Err(Error::shape(
                "OutputSet",
                format!("{n} paths, {} grids", self.grids.len()),
            ));
        }
        for o in &self.outputs {
            if o.values.len() != n {
                return Err(Error::shape(
                    "OutputSet",
                    format!("{n} paths, {} values of `{}`", o.values.len(), o.name),
                ));
            }
            if o.values.windows(2).any(|w| w[0].cols != w[1].cols) {
                return Err(Error::shape(
                    "OutputSet",
                    format!("`{}` widths differ", o.name),
                ));
            }
        }
        Ok(())
    }

    /// The tensors in file order: each output (and its offsets when packed), then `grid`.
    fn arrays(&self) -> Result<Vec<(String, Array)>> {
        self.check()?;
        let n = self.paths.len();
        let packed = self.token_layout() == "packed";
        let mut out = Vec::new();
        for o in &self.outputs {
            let d = o.values.first().map_or(0, |m| m.cols);
            let data: Vec<f32> = o
                .values
                .iter()
                .flat_map(|m| m.data.iter().copied())
                .collect();
            if o.per_image_vector {
                out.push((
                    o.name.clone(),
                    Array::F32 {
                        shape: vec![n, d],
                        data,
                    },
                ));
            } else if packed {
                let total: usize = o.values.iter().map(|m| m.rows).sum();
                let mut offsets = vec![0i64];
                for m in &o.values {
                    offsets.push(offsets.last().copied().unwrap_or(0) + m.rows as i64);
                }
                out.push((
                    o.name.clone(),
                    Array::F32 {
                        shape: vec![total, d],
                        data,
                    },
                ));
                out.push((
                    format!("{}_offsets", o.name),
                    Array::I64 {
                        shape: vec![n + 1],
                        data: offsets,
                    },
                ));
            } else {
                let t = o.values.first().map_or(0, |m| m.rows);
                out.push((
                    o.name.clone(),
                    Array::F32 {
                        shape: vec![n, t, d],
                        data,
                    },
                ));
            }
        }
        let grid = self
            .grids
            .iter()
            .flat_map(|&(h, w)| [h as i64, w as i64])
            .collect();
        out.push((
            "grid".into(),
            Array::I64 {
                shape: vec![n, 2],
                data: grid,
            },
        ));
        Ok(out)
    }

    fn full_metadata(&self) -> BTreeMap<String, String> {
        let mut m = self.metadata.clone();
        m.insert("format".into(), "vitrine-embeddings/1".into());
        m.insert(
            "paths".into(),
            serde_json::to_string(&self.paths).unwrap_or_else(|_| "[]".into()),
        );
        m.insert("token_layout".into(), self.token_layout().into());
        m.insert(
            "outputs".into(),
            self.outputs
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        m
    }

    /// Writes `path` in `format`; returns the files written.
    pub fn write(&self, path: &Path, format: OutputFormat) -> Result<Vec<PathBuf>> {
        match format {
            OutputFormat::Safetensors => self.write_safetensors(path).map(|()| vec![path.into()]),
            OutputFormat::Npz => self.write_npz(path).map(|()| vec![path.into()]),
            OutputFormat::Npy => self.write_npy(path),
            OutputFormat::Jsonl => self.write_jsonl(path).map(|()| vec![path.into()]),
        }
    }

    fn write_safetensors(&self, path: &Path) -> Result<()> {
        use safetensors::tensor::{Dtype, TensorView};
        let arrays = self.arrays()?;
        let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = arrays
            .iter()
            .map(|(name, a)| {
                let dt = match a {
                    Array::F32 { .. } => Dtype::F32,
                    Array::I64 { .. } => Dtype::I64,
                };
                (name.clone(), dt, a.shape().to_vec(), a.bytes())
            })
            .collect();
        let views = encoded
            .iter()
            .map(|(n, dt, shape, bytes)| {
                TensorView::new(*dt, shape.clone(), bytes)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::InvalidArgument(format!("tensor `{n}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta: std::collections::HashMap<String, String> =
            self.full_metadata().into_iter().collect();
        let bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::InvalidArgument(format!("serialising safetensors: {e}")))?;
        write_atomic(path, &bytes)
    }

    fn write_npz(&self, path: &Path) -> Result<()> {
        let mut entries: Vec<(String, Vec<u8>)> = self
            .arrays()?
            .iter()
            .map(|(name, a)| (format!("{name}.npy"), npy_bytes(a)))
            .collect();
        entries.push(("paths.npy".into(), npy_unicode(&self.paths)));
        let meta = serde_json::to_string(&self.full_metadata())
            .map_err(|e| Error::InvalidArgument(format!("metadata: {e}")))?;
        entries.push(("metadata.npy".into(), npy_unicode_scalar(&meta)));
        write_atomic(path, &zip_stored(&entries)?)
    }

    fn write_npy(&self, path: &Path) -> Result<Vec<PathBuf>> {
        if self.outputs.len() != 1 {
            return Err(Error::InvalidArgument(format!(
                ".npy holds one array but {} outputs were asked for ({}); use .npz or .safetensors",
                self.outputs.len(),
                self.outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if self.token_layout() == "packed" {
            return Err(Error::InvalidArgument(format!(
                "`{}` has a different token count per image (mixed sizes); .npy needs one \
                 [N, T, D] array: use .npz or .safetensors (packed with offsets)",
                self.outputs[0].name
            )));
        }
        let arrays = self.arrays()?;
        write_atomic(path, &npy_bytes(&arrays[0].1))?;
        let sidecar = path.with_extension("paths.txt");
        let mut text = String::new();
        for p in &self.paths {
            text.push_str(&p.replace('\n', " "));
            text.push('\n');
        }
        write_atomic(&sidecar, text.as_bytes())?;
        Ok(vec![path.to_path_buf(), sidecar])
    }

    fn write_jsonl(&self, path: &Path) -> Result<()> {
        use serde_json::{json, Map, Value};
        self.check()?;
        let num = |x: f32| -> Value {
            serde_json::Number::from_f64(f64::from(x)).map_or(Value::Null, Value::Number)
        };
        let mut buf = Vec::new();
        for (i, p) in self.paths.iter().enumerate() {
            let mut obj = Map::new();
            obj.insert("path".into(), json!(p));
            obj.insert("grid".into(), json!([self.grids[i].0, self.grids[i].1]));
            for o in &self.outputs {
                let m = &o.values[i];
                let v = if o.per_image_vector {
                    Value::Array(m.data.iter().map(|&x| num(x)).collect())
                } else {
                    Value::Array(
                        m.data
                            .chunks(m.cols.max(1))
                            .map(|r| Value::Array(r.iter().map(|&x| num(x)).collect()))
                            .collect(),
                    )
                };
                obj.insert(o.name.clone(), v);
            }
            serde_json::to_writer(&mut buf, &Value::Object(obj))
                .map_err(|e| Error::InvalidArgument(format!("JSON: {e}")))?;
            buf.push(b'\n');
        }
        write_atomic(path, &buf)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |p: &Path, e| Error::Io {
        path: p.to_path_buf(),
        source: e,
    };
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    let tmp = path.with_file_name(name);
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(&tmp, e)
        })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path, e)
    })
}

// ---------------------------------------------------------------------------
// NumPy .npy (format 1.0) and an uncompressed zip for .npz.

fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape.len() {
        0 => String::new(),
        1 => format!("{},", shape[0]),
        _ => shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    // Magic (6) + version (2) + header length (2) + dict + padding + '\n', a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let mut h = Vec::with_capacity(unpadded + pad);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&((dict.len() + pad + 1) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    h
}

fn npy_bytes(a: &Array) -> Vec<u8> {
    let descr = match a {
        Array::F32 { .. } => "<f4",
        Array::I64 { .. } => "<i8",
    };
    let mut out = npy_header(descr, a.shape());
    out.extend(a.bytes());
    out
}

/// A 1-D array of fixed-width UTF-32 strings (`<U{n}`), what NumPy makes of a list of str.
fn npy_unicode(items: &[String]) -> Vec<u8> {
    let width = items
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = npy_header(&format!("<U{width}"), &[items.len()]);
    for s in items {
        let mut n = 0;
        for c in s.chars() {
            out.extend_from_slice(&(c as u32).to_le_bytes());
            n += 1;
        }
        out.extend(std::iter::repeat_n(0u8, 4 * (width - n)));
    }
    out
}

fn npy_unicode_scalar(s: &str) -> Vec<u8> {
    let width = s.chars().count().max(1);
    let mut out = npy_header(&format!("<U{width}"), &[]);
    for c in s.chars() {
        out.extend_from_slice(&(c as u32).to_le_bytes());
    }
    out.extend(std::iter::repeat_n(0u8, 4 * (width - s.chars().count())));
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut crc = !0u32;
    for &b in bytes {
        crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// A zip archive with stored (uncompressed) entries, as `numpy.savez` writes.
/// Uses ZIP64 extra fields when an entry or offset passes 4 GiB.
fn zip_stored(entries: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u64;
        let size = data.len() as u64;
        let crc = crc32(data);
        let big = size >= 0xFFFF_FFFF || offset >= 0xFFFF_FFFF;
        let (size32, off32) = if big {
            (0xFFFF_FFFFu32, 0xFFFF_FFFFu32)
        } else {
            (size as u32, offset as u32)
        };
        let version: u16 = if big { 45 } else { 20 };
        // Local header.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // flags
        out.extend_from_slice(&0u16.to_le_bytes()); // stored
        out.extend_from_slice(&0u16.to_le_bytes()); // time
        out.extend_from_slice(&0x21u16.to_le_bytes()); // date 1980-01-01
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size32.to_le_bytes());
        out.extend_from_slice(&size32.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        let local_extra: Vec<u8> = if big {
            let mut e = vec![0x01, 0x00, 16, 0];
            e.extend_from_slice(&size.to_le_bytes());
            e.extend_from_slice(&size.to_le_bytes());
            e
        } else {
            Vec::new()
        };
        out.extend_from_slice(&(local_extra.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&local_extra);
        out.extend_from_slice(data);
        // Central directory entry.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&version.to_le_bytes()); // made by
        central.extend_from_slice(&version.to_le_bytes()); // needed
        central.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // flags, method, time
        central.extend_from_slice(&0x21u16.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size32.to_le_bytes());
        central.extend_from_slice(&size32.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        let central_extra: Vec<u8> = if big {
            let mut e = vec![0x01, 0x00, 24, 0];
            e.extend_from_slice(&size.to_le_bytes());
            e.extend_from_slice(&size.to_le_bytes());
            e.extend_from_slice(&offset.to_le_bytes());
            e
        } else {
            Vec::new()
        };
        central.extend_from_slice(&(central_extra.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 10]); // comment length, disk, internal and external attributes
        central.extend_from_slice(&off32.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        central.extend_from_slice(&central_extra);
    }
    let cd_offset = out.len() as u64;
    let cd_size = central.len() as u64;
    out.extend_from_slice(&central);
    let n = entries.len();
    if n >= 0xFFFF || cd_offset >= 0xFFFF_FFFF {
        return Err(Error::InvalidArgument(
            "the .npz would pass 4 GiB before its directory; write .safetensors instead".into(),
        ));
    }
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // disk numbers
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&(cd_size as u32).to_le_bytes());
    out.extend_from_slice(&(cd_offset as u32).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn npy_headers_are_64_byte_aligned() {
        for shape in [vec![], vec![3], vec![2, 3], vec![10, 300, 1280]] {
            let h = npy_header("<f4", &shape);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
        }
        assert!(String::from_utf8_lossy(&npy_header("<f4", &[3])).contains("'shape': (3,)"));
    }
}
