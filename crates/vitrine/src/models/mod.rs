//! Model files, one per architecture, generic over the backend.

pub mod internvit;
pub mod radio;
pub mod vit;

use std::collections::HashMap;
use std::sync::Mutex;

use vitrine_core::{Backend, Result, SeqLayout, TensorInfo};

use crate::config::ModelSpec;
use crate::weights::Weights;

/// Embedded tokens of a batch, packed, before the first block.
pub struct Embedded<B: Backend> {
    /// `[total, D]`.
    pub x: B::Tensor,
    /// Where each image's sequence lies in `x`.
    pub seqs: SeqLayout,
    /// Patch grid `(h, w)` of each image.
    pub grids: Vec<(usize, usize)>,
}

impl<B: Backend> Embedded<B> {
    /// Packs image groups into one sequence batch. Each group is `b` images
    /// of grid `(h, w)` whose patch tokens are `tokens [b·h·w, D]`; every
    /// image's sequence is `prefix` (cls / register rows) then its tokens.
    pub(crate) fn pack(
        be: &B,
        prefix: &B::Tensor,
        groups: &[(B::Tensor, usize, (usize, usize))],
    ) -> Result<Self> {
        let prefix_len = prefix.dims().first().copied().unwrap_or(0);
        let mut parts = Vec::new();
        let mut grids = Vec::new();
        for (tokens, b, (h, w)) in groups {
            for i in 0..*b {
                parts.push(prefix.clone());
                parts.push(be.slice_rows(tokens, i * h * w, h * w)?);
                grids.push((*h, *w));
            }
        }
        let refs: Vec<&B::Tensor> = parts.iter().collect();
        let lengths: Vec<usize> = grids.iter().map(|(h, w)| prefix_len + h * w).collect();
        Ok(Embedded {
            x: be.concat_rows(&refs)?,
            seqs: SeqLayout::from_lengths(&lengths)?,
            grids,
        })
    }
}

/// Splits the trunk's packed outputs back into per-image outputs
/// (`summary` and `features` are left for the model to fill).
pub(crate) fn unpack<B: Backend>(
    be: &B,
    seqs: &SeqLayout,
    grids: &[(usize, usize)],
    x: &B::Tensor,
    kept: &[B::Tensor],
) -> Result<Vec<ImageOutputs<B>>> {
    grids
        .iter()
        .enumerate()
        .map(|(i, &grid)| {
            let range = seqs.range(i);
            Ok(ImageOutputs {
                last_hidden_state: be.slice_rows(x, range.start, range.len())?,
                summary: None,
                features: None,
                intermediates: kept
                    .iter()
                    .map(|t| be.slice_rows(t, range.start, range.len()))
                    .collect::<Result<_>>()?,
                grid,
            })
        })
        .collect()
}

/// Per-image device outputs of a forward pass.
pub struct ImageOutputs<B: Backend> {
    /// `[tokens, D]`: prefix tokens then patch tokens.
    pub last_hidden_state: B::Tensor,
    /// RADIO: `[len(summary_idxs), D]` cls tokens (flattened on download).
    pub summary: Option<B::Tensor>,
    /// RADIO: `[h·w, D]` patch tokens.
    pub features: Option<B::Tensor>,
    /// Outputs of the requested intermediate blocks, `[tokens, D]` each.
    pub intermediates: Vec<B::Tensor>,
    /// Patch grid `(h, w)`.
    pub grid: (usize, usize),
}

/// A loaded model of either family.
pub enum Model<B: Backend> {
    /// NVIDIA RADIO.
    Radio(radio::Radio<B>),
    /// OpenGVLab InternViT.
    InternVit(internvit::InternVit<B>),
}

impl<B: Backend> Model<B> {
    /// Loads the weights described by `spec`.
    pub fn load(w: &Weights<B>, spec: ModelSpec) -> Result<Self> {
        Ok(match spec {
            ModelSpec::Radio(s) => Model::Radio(radio::Radio::load(w, s)?),
            ModelSpec::InternVit(s) => Model::InternVit(internvit::InternVit::load(w, s)?),
        })
    }

    /// Runs groups of same-size images `[b, 3, H, W]` as one packed batch.
    pub fn forward(
        &self,
        be: &B,
        groups: &[B::Tensor],
        keep: &[usize],
    ) -> Result<Vec<ImageOutputs<B>>> {
        match self {
            Model::Radio(m) => m.forward(be, groups, keep),
            Model::InternVit(m) => m.forward(be, groups, keep),
        }
    }
}

/// Position embeddings already resized for a patch grid, so repeated image
/// sizes skip the resize (RADIO's full 128² table costs tens of ms per resize
/// on a CPU). The values are a pure function of the grid, so caching cannot
/// change results.
pub(crate) struct GridCache<T> {
    entries: Mutex<HashMap<(usize, usize), T>>,
}

impl<T: Clone> GridCache<T> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value for `grid`, computing it on a miss.
    pub(crate) fn get_or_try(
        &self,
        grid: (usize, usize),
        make: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if let Some(hit) = self.entries.lock().ok().and_then(|m| m.get(&grid).cloned()) {
            return Ok(hit);
        }
        let value = make()?;
        if let Ok(mut m) = self.entries.lock() {
            m.insert(grid, value.clone());
        }
        Ok(value)
    }
}
