//! The pre-norm ViT trunk shared by RADIO and InternViT.
//!
//! Both families run the same block (Dosovitskiy et al. 2021, with LayerScale
//! from Touvron et al. 2021 "CaiT"):
//!
//! ```text
//! x = x + ls1 ⊙ proj(attn(qkv(norm1(x))))
//! x = x + ls2 ⊙ fc2(gelu(fc1(norm2(x))))
//! ```
//!
//! and differ only in the norm (LayerNorm or RMSNorm), whether q and k are
//! RMS-normalised over the full width before the head split (InternViT-6B),
//! and which tensors exist. Sub-structs are named after the checkpoint keys
//! of the original releases (`norm1`, `attn.qkv`, `attn.proj`, `mlp.fc1`, `ls1`).
//!
//! LayerScale is folded into the projection in front of it at load,
//! `ls ⊙ (h·Wᵀ + b) = h·(ls ⊙ W)ᵀ + ls ⊙ b`, so every sub-block ends in one
//! linear layer joined to the residual stream, which a GPU backend runs as a
//! single GEMM with the residual in its epilogue (cuBLASLt has no per-row
//! scale for f16 there). The cost is one rounding of each scaled weight to the
//! storage type in place of two roundings of every activation (`proj` output,
//! then its scaled copy); docs/performance.md gives the measured parity.

use vitrine_core::{Backend, Result, SeqLayout};

use crate::weights::Weights;

/// Which normalisation the blocks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// LayerNorm with weight and bias.
    LayerNorm,
    /// RMSNorm with weight only.
    RmsNorm,
}

/// Shape and options of a trunk, resolved from config and checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct TrunkSpec {
    /// Model width D.
    pub hidden: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Attention heads (D must divide evenly).
    pub heads: usize,
    /// Hidden width of the MLP, read from the checkpoint's `fc1`.
    pub mlp_hidden: usize,
    /// Norm type of `norm1`/`norm2`.
    pub norm: NormKind,
    /// Epsilon of every norm.
    pub eps: f32,
    /// Whether `attn.qkv` has a bias.
    pub qkv_bias: bool,
    /// Whether q and k pass through RMSNorm over the full width.
    pub qk_norm: bool,
}

impl TrunkSpec {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// A linear layer `y = x·Wᵀ + b`.
pub struct Linear<B: Backend> {
    weight: B::Tensor,
    bias: Option<B::Tensor>,
}

impl<B: Backend> Linear<B> {
    /// Loads `{name}.weight` `[out, inp]` and, if `bias`, `{name}.bias`.
    pub fn load(w: &Weights<B>, name: &str, out: usize, inp: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&format!("{name}.weight"), &[out, inp])?;
        let bias = if bias {
            Some(w.get(&format!("{name}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// Wraps tensors that were loaded by other means.
    pub fn from_parts(weight: B::Tensor, bias: Option<B::Tensor>) -> Self {
        Self { weight, bias }
    }

    /// Loads the layer with LayerScale `gamma` folded in (see the module
    /// docs): rows of the weight and entries of the bias scaled by `gamma`.
    pub fn load_scaled(
        w: &Weights<B>,
        name: &str,
        out: usize,
        inp: usize,
        gamma: Option<&[f32]>,
    ) -> Result<Self> {
        let weight = w.get_scaled_rows(&format!("{name}.weight"), &[out, inp], gamma)?;
        let bias = w.get_scaled_rows(&format!("{name}.bias"), &[out], gamma)?;
        Ok(Self {
            weight,
            bias: Some(bias),
        })
    }

    /// Applies the layer to rows of `x`.
    pub fn forward(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        be.linear(x, &self.weight, self.bias.as_ref())
    }

    /// `r + layer(x)`: the layer's output added to the residual stream `r`.
    pub fn forward_residual(&self, be: &B, x: &B::Tensor, r: &B::Tensor) -> Result<B::Tensor> {
        be.linear_residual(x, &self.weight, self.bias.as_ref(), r, None)
    }
}

/// LayerNorm or RMSNorm over the last axis.
pub enum Norm<B: Backend> {
    /// LayerNorm.
    Layer {
        /// Scale.
        weight: B::Tensor,
        /// Shift.
        bias: B::Tensor,
        /// Epsilon.
        eps: f32,
    },
    /// RMSNorm.
    Rms {
        /// Scale.
        weight: B::Tensor,
        /// Epsilon.
        eps: f32,
    },
}

impl<B: Backend> Norm<B> {
    /// Loads `{name}.weight` (and `.bias` for LayerNorm).
    pub fn load(
        w: &Weights<B>,
        name: &str,
        kind: NormKind,
        width: usize,
        eps: f32,
    ) -> Result<Self> {
        let weight = w.get(&format!("{name}.weight"), &[width])?;
        Ok(match kind {
            NormKind::LayerNorm => Norm::Layer {
                weight,
                bias: w.get(&format!("{name}.bias"), &[width])?,
                eps,
            },
            NormKind::RmsNorm => Norm::Rms { weight, eps },
        })
    }

    /// Normalises each row.
    pub fn forward(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        match self {
            Norm::Layer { weight, bias, eps } => be.layer_norm(x, weight, bias, *eps),
            Norm::Rms { weight, eps } => be.rms_norm(x, weight, *eps),
        }
    }
}

/// Multi-head self-attention with a fused qkv projection.
pub struct Attention<B: Backend> {
    qkv: Linear<B>,
    q_norm: Option<Norm<B>>,
    k_norm: Option<Norm<B>>,
    proj: Linear<B>,
    hidden: usize,
    heads: usize,
}

impl<B: Backend> Attention<B> {
    /// Loads `{name}.*`, with LayerScale `ls` folded into `proj`.
    fn load(w: &Weights<B>, name: &str, spec: &TrunkSpec, ls: Option<&[f32]>) -> Result<Self> {
        let d = spec.hidden;
        let qk = |which: &str| -> Result<Option<Norm<B>>> {
            if spec.qk_norm {
                Norm::load(
                    w,
                    &format!("{name}.{which}"),
                    NormKind::RmsNorm,
                    d,
                    spec.eps,
                )
                .map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            qkv: Linear::load(w, &format!("{name}.qkv"), 3 * d, d, spec.qkv_bias)?,
            q_norm: qk("q_norm")?,
            k_norm: qk("k_norm")?,
            proj: Linear::load_scaled(w, &format!("{name}.proj"), d, d, ls)?,
            hidden: d,
            heads: spec.heads,
        })
    }

    /// `r + proj(attn(qkv(x)))` (LayerScale folded into `proj`): attention
    /// over the normalised rows `x`, added to the residual stream `r`.
    fn forward(&self, be: &B, x: &B::Tensor, seqs: &SeqLayout, r: &B::Tensor) -> Result<B::Tensor> {
        let d = self.hidden;
        let qkv = self.qkv.forward(be, x)?;
        // Equal thirds in q, k, v order; heads are contiguous inside each third.
        let mut q = be.slice_cols(&qkv, 0, d)?;
        let mut k = be.slice_cols(&qkv, d, d)?;
        let v = be.slice_cols(&qkv, 2 * d, d)?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(be, &q)?;
            k = kn.forward(be, &k)?;
        }
        let scale = ((d / self.heads) as f32).powf(-0.5);
        let o = be.attention(&q, &k, &v, seqs, self.heads, scale)?;
        self.proj.forward_residual(be, &o, r)
    }
}

/// The two-layer GELU MLP.
pub struct Mlp<B: Backend> {
    fc1: Linear<B>,
    fc2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// `r + fc2(gelu(fc1(x)))` (LayerScale folded into `fc2`).
    fn forward(&self, be: &B, x: &B::Tensor, r: &B::Tensor) -> Result<B::Tensor> {
        let h = self.fc1.forward(be, x)?;
        let h = be.gelu(&h)?;
        self.fc2.forward_residual(be, &h, r)
    }
}

/// One pre-norm transformer block.
pub struct Block<B: Backend> {
    norm1: Norm<B>,
    attn: Attention<B>,
    norm2: Norm<B>,
    mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    /// Loads block `name` (e.g. `model.blocks.3`). LayerScale vectors are
    /// optional: `ls1`/`ls2`, when the checkpoint has them, are folded into
    /// `attn.proj` and `mlp.fc2`.
    pub fn load(w: &Weights<B>, name: &str, spec: &TrunkSpec) -> Result<Self> {
        let d = spec.hidden;
        let ls1 = w.layer_scale(&format!("{name}.ls1"), d)?;
        let ls2 = w.layer_scale(&format!("{name}.ls2"), d)?;
        Ok(Self {
            norm1: Norm::load(w, &format!("{name}.norm1"), spec.norm, d, spec.eps)?,
            attn: Attention::load(w, &format!("{name}.attn"), spec, ls1.as_deref())?,
            norm2: Norm::load(w, &format!("{name}.norm2"), spec.norm, d, spec.eps)?,
            mlp: Mlp {
                fc1: Linear::load(w, &format!("{name}.mlp.fc1"), spec.mlp_hidden, d, true)?,
                fc2: Linear::load_scaled(
                    w,
                    &format!("{name}.mlp.fc2"),
                    d,
                    spec.mlp_hidden,
                    ls2.as_deref(),
                )?,
            },
        })
    }

    /// Runs the block on packed rows.
    pub fn forward(&self, be: &B, x: &B::Tensor, seqs: &SeqLayout) -> Result<B::Tensor> {
        let h = self.norm1.forward(be, x)?;
        let x = self.attn.forward(be, &h, seqs, x)?;
        let h = self.norm2.forward(be, &x)?;
        self.mlp.forward(be, &h, &x)
    }
}

/// The stack of blocks.
pub struct Trunk<B: Backend> {
    blocks: Vec<Block<B>>,
}

impl<B: Backend> Trunk<B> {
    /// Loads `{prefix}.{i}` for every block.
    pub fn load(w: &Weights<B>, prefix: &str, spec: &TrunkSpec) -> Result<Self> {
        let blocks = (0..spec.depth)
            .map(|i| Block::load(w, &format!("{prefix}.{i}"), spec))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { blocks })
    }

    /// Number of blocks.
    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// Runs every block; also returns the outputs of the blocks listed in
    /// `keep` (0-based, timm's `forward_intermediates` indices), in order.
    pub fn forward(
        &self,
        be: &B,
        mut x: B::Tensor,
        seqs: &SeqLayout,
        keep: &[usize],
    ) -> Result<(B::Tensor, Vec<B::Tensor>)> {
        let mut kept = Vec::with_capacity(keep.len());
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(be, &x, seqs)?;
            if keep.contains(&i) {
                kept.push(x.clone());
            }
        }
        Ok((x, kept))
    }
}
