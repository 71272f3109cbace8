//! Typed access to checkpoint tensors by canonical name.
//!
//! Model files ask for tensors by the names of the original checkpoints
//! (NVlabs RADIO, OpenGVLab InternViT). A [`KeyMap`] says where each canonical
//! name lives in the layout at hand (for example HF's split q/k/v projections,
//! which are fused back into one `qkv` here), and every tensor's shape is
//! checked against what the config implies before it reaches a device.

use std::path::{Path, PathBuf};

use vitrine_core::{Backend, DType, Error, HostTensor, Result};

use crate::checkpoint::Checkpoint;

/// Where a canonical tensor is stored in one on-disk layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Stored under this name.
    Key(String),
    /// Stored as several tensors stacked along the first axis (HF's separate
    /// `q_proj`/`k_proj`/`v_proj` for a fused `qkv`).
    Rows(Vec<String>),
}

/// Maps canonical names to their [`Source`]s, most likely first.
pub type KeyMap = fn(&str) -> Vec<Source>;

/// The identity map: canonical names are the stored names.
pub fn same_names(name: &str) -> Vec<Source> {
    vec![Source::Key(name.to_string())]
}

/// The stored shape of canonical tensor `name` under `map`, if present.
pub fn stored_shape(ckpt: &Checkpoint, map: KeyMap, name: &str) -> Option<Vec<usize>> {
    for source in map(name) {
        match source {
            Source::Key(k) => {
                if let Some(s) = ckpt.shape(&k) {
                    return Some(s);
                }
            }
            Source::Rows(keys) => {
                let shapes: Option<Vec<Vec<usize>>> = keys.iter().map(|k| ckpt.shape(k)).collect();
                if let Some(mut shapes) = shapes.filter(|s| !s.is_empty()) {
                    let rows: usize = shapes.iter().map(|x| x.first().copied().unwrap_or(0)).sum();
                    let mut s = shapes.swap_remove(0);
                    if let Some(first) = s.first_mut() {
                        *first = rows;
                    }
                    return Some(s);
                }
            }
        }
    }
    None
}

/// Reads tensors for one model and uploads them to a backend.
pub struct Weights<'a, B: Backend> {
    ckpt: &'a Checkpoint,
    dir: PathBuf,
    map: KeyMap,
    backend: &'a B,
    dtype: DType,
}

impl<'a, B: Backend> Weights<'a, B> {
    /// Wraps a checkpoint read from `dir` for upload in `dtype`.
    pub fn new(
        ckpt: &'a Checkpoint,
        dir: &Path,
        map: KeyMap,
        backend: &'a B,
        dtype: DType,
    ) -> Self {
        Self {
            ckpt,
            dir: dir.to_path_buf(),
            map,
            backend,
            dtype,
        }
    }

    /// The storage type weights are uploaded in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The backend weights go to.
    pub fn backend(&self) -> &'a B {
        self.backend
    }

    /// The stored shape of a canonical tensor, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        stored_shape(self.ckpt, self.map, name)
    }

    /// True when the canonical tensor is present.
    pub fn contains(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }

    fn read(&self, name: &str) -> Result<Option<HostTensor>> {
        for source in (self.map)(name) {
            match source {
                Source::Key(k) => {
                    if let Some(t) = self.ckpt.tensor(&k)? {
                        return Ok(Some(t));
                    }
                }
                Source::Rows(keys) => {
                    if !keys.iter().all(|k| self.ckpt.contains(k)) {
                        continue;
                    }
                    let mut values = Vec::new();
                    let mut shape: Option<Vec<usize>> = None;
                    for k in &keys {
                        let part = self.ckpt.tensor(k)?.ok_or_else(|| {
                            Error::checkpoint(&self.dir, format!("missing `{k}`"))
                        })?;
                        // Stacked along rows: each part needs a row axis.
                        if part.shape().is_empty() {
                            return Err(Error::checkpoint(
                                &self.dir,
                                format!("cannot stack `{k}`: it is a scalar, not rows"),
                            ));
                        }
                        shape = Some(match shape {
                            None => part.shape().to_vec(),
                            Some(mut s) => {
                                if s[1..] != part.shape()[1..] {
                                    return Err(Error::checkpoint(
                                        &self.dir,
                                        format!(
                                            "cannot stack `{k}` {:?} under {:?}",
                                            part.shape(),
                                            s
                                        ),
                                    ));
                                }
                                s[0] += part.shape()[0];
                                s
                            }
                        });
                        values.extend(part.to_f32_vec());
                    }
                    let stacked = HostTensor::from_f32(shape.unwrap_or_default(), values)?;
                    return Ok(Some(stacked));
                }
            }
        }
        Ok(None)
    }

    /// Reads a tensor on the host, checking its shape. `stored` is the shape
    /// on disk; the result is reshaped to `shape` (same element count), e.g. a
    /// conv kernel `[d, c, p, p]` read as a matrix `[d, c·p·p]`.
    pub fn host_opt(
        &self,
        name: &str,
        stored: &[usize],
        shape: &[usize],
    ) -> Result<Option<HostTensor>> {
        let Some(t) = self.read(name)? else {
            return Ok(None);
        };
        if t.shape() != stored {
            return Err(Error::checkpoint(
                &self.dir,
                format!(
                    "tensor `{name}` has shape {:?}, the config implies {stored:?}",
                    t.shape()
                ),
            ));
        }
        t.reshape(shape.to_vec()).map(Some)
    }

    /// Like [`Self::host_opt`], but the tensor must exist.
    pub fn host(&self, name: &str, stored: &[usize], shape: &[usize]) -> Result<HostTensor> {
        self.host_opt(name, stored, shape)?.ok_or_else(|| {
            Error::checkpoint(
                &self.dir,
                format!("missing tensor `{name}` (expected shape {stored:?})"),
            )
        })
    }

    /// Uploads a tensor that must exist, with its stored shape.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<B::Tensor> {
        self.backend
            .upload(&self.host(name, shape, shape)?, self.dtype)
    }

    /// Uploads a tensor that may be absent.
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<B::Tensor>> {
        match self.host_opt(name, shape, shape)? {
            Some(t) => self.backend.upload(&t, self.dtype).map(Some),
            None => Ok(None),
        }
    }

    /// A LayerScale vector γ that may be absent, in fp32 on the host. One of
    /// all ones is dropped (multiplying by 1 is exact), so a checkpoint that
    /// stores identity scales (HF's RADIO layout) loads exactly like one that
    /// has none.
    pub fn layer_scale(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        Ok(self
            .host_opt(name, &[len], &[len])?
            .map(|t| t.to_f32_vec())
            .filter(|g| g.iter().any(|&v| v != 1.0)))
    }

    /// Uploads a tensor that must exist with row `i` multiplied by
    /// `gamma[i]` (when given), in fp32 before the one rounding to the
    /// storage type. The product of two fp16 or bf16 values is exact in fp32,
    /// so the only new error is that rounding.
    pub fn get_scaled_rows(
        &self,
        name: &str,
        shape: &[usize],
        gamma: Option<&[f32]>,
    ) -> Result<B::Tensor> {
        let t = self.host(name, shape, shape)?;
        let Some(gamma) = gamma else {
            return self.backend.upload(&t, self.dtype);
        };
        let rows = shape.first().copied().unwrap_or(0);
        if gamma.len() != rows {
            return Err(self.error(format!(
                "cannot scale the {rows} rows of `{name}` by {} values",
                gamma.len()
            )));
        }
        let mut values = t.to_f32_vec();
        // Elements per row (1 for a bias); at least 1 so `chunks_mut` is
        // valid even for a zero-width tensor.
        let cols = shape.iter().skip(1).product::<usize>().max(1);
        for (row, &g) in values.chunks_mut(cols).zip(gamma) {
            row.iter_mut().for_each(|v| *v *= g);
        }
        self.backend
            .upload(&HostTensor::from_f32(shape.to_vec(), values)?, self.dtype)
    }

    /// Integer tensor (RADIO's `summary_idxs` buffer).
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        for source in (self.map)(name) {
            if let Source::Key(k) = source {
                if let Some(v) = self.ckpt.int_tensor(&k)? {
                    return Ok(Some(v));
                }
            }
        }
        Ok(None)
    }

    /// A checkpoint error about this directory.
    pub fn error(&self, detail: impl Into<String>) -> Error {
        Error::checkpoint(&self.dir, detail)
    }
}
