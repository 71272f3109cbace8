//! NVIDIA RADIO: "AM-RADIO: Agglomerative Vision Foundation Model" (Ranzinger
//! et al., CVPR 2024) and its C-RADIO v2/v3/v4 releases
//! (<https://github.com/NVlabs/RADIO>), reproducing `transformers.RadioModel`.
//!
//! ```text
//! pixels [0,1] ──(x−mean)/std, fp32──▶ patches ──embedder (no bias)──▶ + CPE(h, w)
//!   ──▶ [cls × ncls | registers × nreg | patches] ──▶ blocks ──▶ (no final norm)
//!   summary  = cls[summary_idxs] concatenated,  features = patch tokens
//! ```
//!
//! CPE: the stored `R×R` position table is resized bilinearly, in fp32, to the
//! square `max(h, w)²` and the top-left `h × w` window is kept (not a per-axis
//! stretch). `align_corners` is false since NVlabs' 2025-06-28 change; older
//! checkpoints used true (`cpe_align_corners` in the config).

use vitrine_core::{Backend, DType, Error, ResizeMode, ResizeSpec, Result, TensorInfo};

use crate::models::vit::{Linear, Trunk, TrunkSpec};
use crate::models::{unpack, Embedded, GridCache, ImageOutputs};
use crate::weights::{Source, Weights};

/// Canonical name of the patch projection.
pub const EMBEDDER: &str = "model.patch_generator.embedder.weight";
/// Canonical name of the stored position table `[1, R·R, D]`.
pub const POS_EMBED: &str = "model.patch_generator.pos_embed";
/// Canonical name of the cls + register tokens `[ncls + nreg, D]`.
pub const CLS_TOKEN: &str = "model.patch_generator.cls_token.token";
/// Canonical prefix of the blocks.
pub const BLOCKS: &str = "model.blocks";

/// Where RADIO tensors live: NVlabs names under `radio_model.` (hub files and
/// what `save_pretrained` writes), bare, or transformers' module names.
pub const KEYS: fn(&str) -> Vec<Source> = keys;

fn keys(name: &str) -> Vec<Source> {
    let key = |s: String| Source::Key(s);
    let mut out = Vec::new();
    let stored = |n: &str| [format!("radio_model.{n}"), n.to_string()];
    if let Some(block) = name
        .strip_suffix(".ls1")
        .or_else(|| name.strip_suffix(".ls2"))
    {
        // timm's LayerScale parameter is `gamma` (renamed `grandma` by NVlabs);
        // transformers' `save_pretrained` writes `layer_scale{1,2}.lambda1`.
        let j = &name[name.len() - 1..];
        for suffix in [".gamma", ".grandma", ""] {
            out.extend(stored(&format!("{name}{suffix}")).map(key));
        }
        out.extend(stored(&format!("{block}.layer_scale{j}.lambda1")).map(key));
    } else {
        out.extend(stored(name).map(key));
    }
    if let Some(hf) = hf_name(name) {
        out.push(hf);
    }
    out
}

fn hf_name(name: &str) -> Option<Source> {
    let fixed = match name {
        EMBEDDER => Some("embeddings.patch_projection.weight"),
        POS_EMBED => Some("embeddings.position_embedding"),
        CLS_TOKEN => Some("embeddings.cls_register_token"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(Source::Key(f.to_string()));
    }
    let rest = name.strip_prefix("model.blocks.")?;
    let (idx, part) = rest.split_once('.')?;
    let layer = format!("encoder.layer.{idx}");
    if let Some(which) = part.strip_prefix("attn.qkv.") {
        let parts =
            ["query", "key", "value"].map(|p| format!("{layer}.attention.attention.{p}.{which}"));
        return Some(Source::Rows(parts.to_vec()));
    }
    let mapped = match part {
        "ls1" => "layer_scale1.lambda1".to_string(),
        "ls2" => "layer_scale2.lambda1".to_string(),
        p => match p.strip_prefix("attn.proj.") {
            Some(w) => format!("attention.output.dense.{w}"),
            None => p.to_string(),
        },
    };
    Some(Source::Key(format!("{layer}.{mapped}")))
}

/// Resolved RADIO hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct RadioSpec {
    /// The transformer trunk.
    pub trunk: TrunkSpec,
    /// Patch size in pixels.
    pub patch: usize,
    /// Side of the stored square position table, in patches.
    pub grid: usize,
    /// Number of cls tokens (one per teacher).
    pub num_cls: usize,
    /// Number of register tokens after the cls tokens.
    pub num_registers: usize,
    /// Which cls tokens make up `summary`, in order.
    pub summary_idxs: Vec<usize>,
    /// `align_corners` of the CPE resize (true for pre-2025-06-28 checkpoints).
    pub cpe_align_corners: bool,
    /// Input conditioner mean (applied inside the forward pass, in fp32).
    pub norm_mean: [f32; 3],
    /// Input conditioner std.
    pub norm_std: [f32; 3],
}

impl RadioSpec {
    /// Number of tokens before the patch tokens.
    pub fn num_prefix(&self) -> usize {
        self.num_cls + self.num_registers
    }
}

/// A RADIO model on backend `B`.
pub struct Radio<B: Backend> {
    spec: RadioSpec,
    embedder: Linear<B>,
    /// `[R·R, D]`, channels-last grid in the storage dtype.
    pos_embed: B::Tensor,
    /// `[ncls + nreg, D]`.
    cls_token: B::Tensor,
    blocks: Trunk<B>,
    cpe_cache: GridCache<B::Tensor>,
    norm_mean: [f32; 3],
    norm_std: [f32; 3],
}

impl<B: Backend> Radio<B> {
    /// Loads the weights for `spec`.
    pub fn load(w: &Weights<B>, spec: RadioSpec) -> Result<Self> {
        let d = spec.trunk.hidden;
        let (p, r) = (spec.patch, spec.grid);
        if let Some(bad) = spec.summary_idxs.iter().find(|&&i| i >= spec.num_cls) {
            return Err(w.error(format!(
                "summary index {bad} is not one of the {} cls tokens",
                spec.num_cls
            )));
        }
        // The conditioner buffers win over the config when the checkpoint has them.
        let triple = |name: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            Ok(match w.host_opt(name, &[3, 1, 1], &[3])? {
                Some(t) => {
                    let v = t.to_f32_vec();
                    [v[0], v[1], v[2]]
                }
                None => default,
            })
        };
        if let Some(stored) = w.ints("summary_idxs")? {
            let stored = stored
                .iter()
                .map(|&i| usize::try_from(i))
                .collect::<std::result::Result<Vec<usize>, _>>()
                .map_err(|_| {
                    w.error(format!(
                        "the checkpoint's summary_idxs {stored:?} hold a negative index"
                    ))
                })?;
            if stored != spec.summary_idxs {
                return Err(w.error(format!(
                    "the checkpoint's summary_idxs {stored:?} disagree with the config's {:?}",
                    spec.summary_idxs
                )));
            }
        }
        Ok(Self {
            embedder: Linear::from_parts(w.get(EMBEDDER, &[d, 3 * p * p])?, None),
            pos_embed: w
                .backend()
                .upload(&w.host(POS_EMBED, &[1, r * r, d], &[r * r, d])?, w.dtype())?,
            cls_token: w.get(CLS_TOKEN, &[spec.num_prefix(), d])?,
            blocks: Trunk::load(w, BLOCKS, &spec.trunk)?,
            cpe_cache: GridCache::new(),
            norm_mean: triple("input_conditioner.norm_mean", spec.norm_mean)?,
            norm_std: triple("input_conditioner.norm_std", spec.norm_std)?,
            spec,
        })
    }

    /// The resolved spec.
    pub fn spec(&self) -> &RadioSpec {
        &self.spec
    }

    /// CPE for an `h × w` patch grid: fp32 bilinear resize to `max(h, w)²`,
    /// top-left window, back to the storage dtype.
    fn cpe(&self, be: &B, h: usize, w: usize) -> Result<B::Tensor> {
        let r = self.spec.grid;
        if (h, w) == (r, r) {
            return Ok(self.pos_embed.clone());
        }
        let m = h.max(w);
        let spec = ResizeSpec {
            mode: ResizeMode::Bilinear,
            align_corners: self.spec.cpe_align_corners,
            in_h: r,
            in_w: r,
            out_h: m,
            out_w: m,
            window_h: h,
            window_w: w,
        };
        let table = be.cast(&self.pos_embed, DType::F32)?;
        let pos = be.resize(&table, &spec)?;
        be.cast(&pos, self.pos_embed.dtype())
    }

    /// Embeds groups of same-size images `[b, 3, H, W]` (RGB in [0, 1]) into
    /// one packed sequence batch.
    pub fn embed(&self, be: &B, groups: &[B::Tensor]) -> Result<Embedded<B>> {
        let p = self.spec.patch;
        let mut embedded = Vec::with_capacity(groups.len());
        for pixels in groups {
            let (b, h, w) = image_grid(pixels, p)?;
            let patches = be.patchify(pixels, p, Some((self.norm_mean, self.norm_std)))?;
            let tokens = self.embedder.forward(be, &patches)?;
            let pos = self.cpe_cache.get_or_try((h, w), || self.cpe(be, h, w))?;
            let tokens = be.residual(&tokens, &be.concat_rows(&vec![&pos; b])?, None)?;
            embedded.push((tokens, b, (h, w)));
        }
        Embedded::pack(be, &self.cls_token, &embedded)
    }

    /// Full forward pass; `keep` lists blocks whose outputs to return too.
    pub fn forward(
        &self,
        be: &B,
        groups: &[B::Tensor],
        keep: &[usize],
    ) -> Result<Vec<ImageOutputs<B>>> {
        let Embedded { x, seqs, grids } = self.embed(be, groups)?;
        let (x, kept) = self.blocks.forward(be, x, &seqs, keep)?;
        let prefix = self.spec.num_prefix();
        let mut out = unpack(be, &seqs, &grids, &x, &kept)?;
        for o in &mut out {
            let (h, w) = o.grid;
            // summary = the chosen cls tokens, concatenated in summary_idxs order.
            let cls: Vec<B::Tensor> = self
                .spec
                .summary_idxs
                .iter()
                .map(|&j| be.slice_rows(&o.last_hidden_state, j, 1))
                .collect::<Result<_>>()?;
            o.summary = Some(be.concat_rows(&cls.iter().collect::<Vec<_>>())?);
            o.features = Some(be.slice_rows(&o.last_hidden_state, prefix, h * w)?);
        }
        Ok(out)
    }
}

/// Checks `[b, 3, H, W]` against the patch size; returns `(b, H/p, W/p)`.
pub(crate) fn image_grid<T: TensorInfo>(pixels: &T, p: usize) -> Result<(usize, usize, usize)> {
    match pixels.dims()[..] {
        [b, 3, h, w] if h % p == 0 && w % p == 0 && h > 0 && w > 0 && b > 0 => {
            Ok((b, h / p, w / p))
        }
        [0, 3, _, _] => Err(Error::InvalidArgument(
            "a batch of 0 images: pixel values need at least one".into(),
        )),
        [_, 3, h, w] if h == 0 || w == 0 => Err(Error::InvalidArgument(format!(
            "image size {h}x{w} is empty"
        ))),
        [_, 3, h, w] => {
            let near = |v: usize| (((v as f64 / p as f64).round() as usize).max(1)) * p;
            Err(Error::InvalidArgument(format!(
                "image size {h}x{w} is not a multiple of the patch size {p} (nearest valid: {}x{})",
                near(h),
                near(w)
            )))
        }
        ref d => Err(Error::InvalidArgument(format!(
            "pixel values must be [batch, 3, height, width], got {d:?}"
        ))),
    }
}
