//! Safetensors checkpoints: one file or a sharded set with an index.
//!
//! Headers are parsed and validated once (offsets contiguous and in bounds,
//! sizes without overflow: the safetensors crate's own checks). Tensor bytes
//! are read through a memory map and copied out one tensor at a time, so
//! loading never holds more than the checkpoint's largest tensor twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;
use vitrine_core::{Error, HostData, HostTensor, Result};

/// File name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of the index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

struct Shard {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    meta: Metadata,
}

/// The tensors of a checkpoint directory, with a record of which were used so
/// that unexpected extra tensors can be reported after loading.
pub struct Checkpoint {
    shards: Vec<Shard>,
    location: HashMap<String, usize>,
    used: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field(
                "files",
                &self.shards.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.location.len())
            .finish()
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn open_shard(path: &Path) -> Result<Shard> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    // SAFETY: the mapping is read-only and lives only while the model loads;
    // tensors are copied out. A file truncated by another process during that
    // window can fault; that is the documented cost of not reading gigabytes
    // into memory twice.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| io_err(path, e))?;
    let (header_len, meta) = SafeTensors::read_metadata(&map)
        .map_err(|e| Error::checkpoint(path, format!("invalid safetensors file: {e}")))?;
    Ok(Shard {
        path: path.to_path_buf(),
        map,
        data_start: 8 + header_len,
        meta,
    })
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Opens `dir/model.safetensors`, or the shards listed by
    /// `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        let files: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| io_err(&index, e))?;
            let parsed: ShardIndex = serde_json::from_str(&text)
                .map_err(|e| Error::checkpoint(&index, format!("invalid index: {e}")))?;
            let mut names: Vec<&String> = parsed.weight_map.values().collect();
            names.sort();
            names.dedup();
            let mut files = Vec::new();
            for name in names {
                let p = Path::new(name);
                if p.is_absolute() || p.components().count() != 1 {
                    return Err(Error::checkpoint(
                        &index,
                        format!("shard name `{name}` must be a plain file name"),
                    ));
                }
                files.push(dir.join(p));
            }
            files
        } else {
            return Err(Error::checkpoint(
                dir,
                format!("neither {SINGLE_FILE} nor {INDEX_FILE} found"),
            ));
        };
        Self::from_files(&files)
    }

    /// Opens an explicit list of safetensors files as one checkpoint.
    pub fn from_files(files: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(files.len());
        let mut location = HashMap::new();
        for (i, path) in files.iter().enumerate() {
            let shard = open_shard(path)?;
            for name in shard.meta.tensors().keys() {
                if location.insert(name.clone(), i).is_some() {
                    return Err(Error::checkpoint(
                        path,
                        format!("tensor `{name}` appears in two shards"),
                    ));
                }
            }
            shards.push(shard);
        }
        Ok(Self {
            shards,
            location,
            used: Mutex::new(HashSet::new()),
        })
    }

    /// True if the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.location.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Shape of `name` without reading it.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let shard = &self.shards[*self.location.get(name)?];
        shard.meta.info(name).map(|i| i.shape.clone())
    }

    fn raw(&self, name: &str) -> Option<(&Shard, Dtype, Vec<usize>, &[u8])> {
        let shard = &self.shards[*self.location.get(name)?];
        let info = shard.meta.info(name)?;
        let (s, e) = info.data_offsets;
        let bytes = &shard.map[shard.data_start + s..shard.data_start + e];
        self.used
            .lock()
            .map(|mut u| u.insert(name.to_string()))
            .ok();
        Some((shard, info.dtype, info.shape.clone(), bytes))
    }

    /// Reads a floating-point tensor, keeping f16/bf16 storage as is and
    /// widening f64 to f32.
    pub fn tensor(&self, name: &str) -> Result<Option<HostTensor>> {
        let Some((shard, dtype, shape, bytes)) = self.raw(name) else {
            return Ok(None);
        };
        let data = match dtype {
            Dtype::F32 => HostData::F32(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            Dtype::F16 => HostData::F16(
                bytes
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
            Dtype::BF16 => HostData::BF16(
                bytes
                    .chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
            Dtype::F64 => HostData::F32(
                bytes
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                    .collect(),
            ),
            other => {
                return Err(Error::checkpoint(
                    &shard.path,
                    format!("tensor `{name}` has dtype {other:?}; expected a floating-point type"),
                ))
            }
        };
        HostTensor::new(shape, data).map(Some)
    }

    /// Reads an integer tensor (e.g. RADIO's `summary_idxs` buffer).
    pub fn int_tensor(&self, name: &str) -> Result<Option<Vec<i64>>> {
        let Some((shard, dtype, _, bytes)) = self.raw(name) else {
            return Ok(None);
        };
        let values = match dtype {
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                .collect(),
            other => {
                return Err(Error::checkpoint(
                    &shard.path,
                    format!("tensor `{name}` has dtype {other:?}; expected an integer type"),
                ))
            }
        };
        Ok(Some(values))
    }

    /// Names never read so far, sorted: after loading, the tensors the model
    /// does not use (adaptor heads, teacher summaries...), reported as warnings.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        let mut v: Vec<String> = self
            .location
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }
}
