//! OpenGVLab InternViT: "InternVL: Scaling up Vision Foundation Models and
//! Aligning for Generic Visual-Linguistic Tasks" (Chen et al., CVPR 2024),
//! <https://github.com/OpenGVLab/InternVL>, reproducing
//! `transformers.InternVLVisionModel`.
//!
//! ```text
//! pixels (ImageNet-normalised outside) ──conv p×p (bias)──▶ [cls | patches]
//!   + [pos_cls | bicubic(pos_grid → h×w)] ──▶ blocks ──▶ last_hidden_state
//! ```
//!
//! 300M: LayerNorm, qkv bias. 6B: RMSNorm, RMS qk-norm over the full width
//! before the head split, no qkv bias. Both carry learned LayerScale `ls1`/`ls2`.
//! The position grid is resized bicubically (A = -0.75, align_corners false)
//! in the storage dtype, as HF does; the cls entry is never resized.

use vitrine_core::{Backend, ResizeMode, ResizeSpec, Result};

use crate::models::radio::image_grid;
use crate::models::vit::{Linear, Trunk, TrunkSpec};
use crate::models::{unpack, Embedded, GridCache, ImageOutputs};
use crate::weights::{Source, Weights};

/// Canonical name of the class embedding `[1, 1, D]`.
pub const CLASS_EMBEDDING: &str = "embeddings.class_embedding";
/// Canonical name of the patch convolution (weight `[D, 3, p, p]`, bias).
pub const PATCH_EMBEDDING: &str = "embeddings.patch_embedding";
/// Canonical name of the position table `[1, 1 + G², D]`.
pub const POSITION_EMBEDDING: &str = "embeddings.position_embedding";
/// Canonical prefix of the blocks.
pub const BLOCKS: &str = "encoder.layers";

/// Where InternViT tensors live: OpenGVLab names, or transformers' names
/// (with separate q/k/v projections fused back into `attn.qkv`).
pub const KEYS: fn(&str) -> Vec<Source> = keys;

fn keys(name: &str) -> Vec<Source> {
    let mut out = vec![Source::Key(name.to_string())];
    if let Some(hf) = hf_name(name) {
        out.push(hf);
    }
    out
}

fn hf_name(name: &str) -> Option<Source> {
    let key = |s: String| Some(Source::Key(s));
    match name {
        CLASS_EMBEDDING => return key("embeddings.cls_token".into()),
        POSITION_EMBEDDING => return key("embeddings.position_embeddings".into()),
        _ => {}
    }
    if let Some(w) = name.strip_prefix("embeddings.patch_embedding.") {
        return key(format!("embeddings.patch_embeddings.projection.{w}"));
    }
    let rest = name.strip_prefix("encoder.layers.")?;
    let (idx, part) = rest.split_once('.')?;
    let layer = format!("encoder.layer.{idx}");
    if let Some(which) = part.strip_prefix("attn.qkv.") {
        let parts =
            ["q_proj", "k_proj", "v_proj"].map(|p| format!("{layer}.attention.{p}.{which}"));
        return Some(Source::Rows(parts.to_vec()));
    }
    let mapped = match part {
        "ls1" => "lambda_1".to_string(),
        "ls2" => "lambda_2".to_string(),
        p => {
            if let Some(w) = p.strip_prefix("norm1.") {
                format!("layernorm_before.{w}")
            } else if let Some(w) = p.strip_prefix("norm2.") {
                format!("layernorm_after.{w}")
            } else if let Some(w) = p.strip_prefix("attn.proj.") {
                format!("attention.projection_layer.{w}")
            } else if let Some(w) = p.strip_prefix("attn.") {
                format!("attention.{w}")
            } else {
                p.to_string()
            }
        }
    };
    key(format!("{layer}.{mapped}"))
}

/// Resolved InternViT hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct InternVitSpec {
    /// The transformer trunk.
    pub trunk: TrunkSpec,
    /// Patch size in pixels.
    pub patch: usize,
    /// Side of the stored position grid, in patches (448 / 14 = 32).
    pub grid: usize,
}

/// An InternViT model on backend `B`.
pub struct InternVit<B: Backend> {
    spec: InternVitSpec,
    class_embedding: B::Tensor,
    patch_embedding: Linear<B>,
    /// `[1, D]`, the cls entry of the position table.
    position_cls: B::Tensor,
    /// `[G·G, D]`, channels-last grid.
    position_grid: B::Tensor,
    layers: Trunk<B>,
    position_cache: GridCache<B::Tensor>,
}

impl<B: Backend> InternVit<B> {
    /// Loads the weights for `spec`.
    pub fn load(w: &Weights<B>, spec: InternVitSpec) -> Result<Self> {
        let (d, p, g) = (spec.trunk.hidden, spec.patch, spec.grid);
        let be = w.backend();
        let conv = w.host(
            &format!("{PATCH_EMBEDDING}.weight"),
            &[d, 3, p, p],
            &[d, 3 * p * p],
        )?;
        let table = be.upload(
            &w.host(POSITION_EMBEDDING, &[1, 1 + g * g, d], &[1 + g * g, d])?,
            w.dtype(),
        )?;
        Ok(Self {
            class_embedding: be
                .upload(&w.host(CLASS_EMBEDDING, &[1, 1, d], &[1, d])?, w.dtype())?,
            patch_embedding: Linear::from_parts(
                be.upload(&conv, w.dtype())?,
                Some(w.get(&format!("{PATCH_EMBEDDING}.bias"), &[d])?),
            ),
            position_cls: be.slice_rows(&table, 0, 1)?,
            position_grid: be.slice_rows(&table, 1, g * g)?,
            layers: Trunk::load(w, BLOCKS, &spec.trunk)?,
            position_cache: GridCache::new(),
            spec,
        })
    }

    /// The resolved spec.
    pub fn spec(&self) -> &InternVitSpec {
        &self.spec
    }

    fn position_patches(&self, be: &B, h: usize, w: usize) -> Result<B::Tensor> {
        let g = self.spec.grid;
        // At the stored size the bicubic resize is the identity, bit for bit.
        if (h, w) == (g, g) {
            return Ok(self.position_grid.clone());
        }
        let spec = ResizeSpec::full(ResizeMode::Bicubic, false, (g, g), (h, w));
        be.resize(&self.position_grid, &spec)
    }

    /// Embeds groups of same-size images `[b, 3, H, W]` (already normalised).
    pub fn embed(&self, be: &B, groups: &[B::Tensor]) -> Result<Embedded<B>> {
        let p = self.spec.patch;
        let cls = be.residual(&self.class_embedding, &self.position_cls, None)?;
        let mut embedded = Vec::with_capacity(groups.len());
        for pixels in groups {
            let (b, h, w) = image_grid(pixels, p)?;
            let tokens = self
                .patch_embedding
                .forward(be, &be.patchify(pixels, p, None)?)?;
            let pos = self
                .position_cache
                .get_or_try((h, w), || self.position_patches(be, h, w))?;
            let tokens = be.residual(&tokens, &be.concat_rows(&vec![&pos; b])?, None)?;
            embedded.push((tokens, b, (h, w)));
        }
        Embedded::pack(be, &cls, &embedded)
    }

    /// Full forward pass; `keep` lists blocks whose outputs to return too.
    pub fn forward(
        &self,
        be: &B,
        groups: &[B::Tensor],
        keep: &[usize],
    ) -> Result<Vec<ImageOutputs<B>>> {
        let Embedded { x, seqs, grids } = self.embed(be, groups)?;
        let (x, kept) = self.layers.forward(be, x, &seqs, keep)?;
        unpack(be, &seqs, &grids, &x, &kept)
    }
}
