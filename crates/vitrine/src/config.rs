//! Reads `config.json` in the four layouts vitrine loads and resolves it,
//! together with the checkpoint's tensor shapes, into a model spec.
//!
//! | layout | recognised by | dims come from |
//! |---|---|---|
//! | HF RADIO (`save_pretrained`) | `model_type: "radio"` | config, MLP width from `fc1` |
//! | NVlabs RADIO hub | `args` object with `model` / `teachers` | tensor shapes + `args` |
//! | HF InternViT | `model_type: "internvl_vision"` | config, MLP width from `fc1` |
//! | OpenGVLab InternViT hub | `model_type: "intern_vit_6b"` | config (no `norm_type` = RMSNorm) |

use std::path::Path;

use serde_json::Value;
use vitrine_core::{Error, Result};

use crate::checkpoint::Checkpoint;
use crate::models::internvit::{self, InternVitSpec};
use crate::models::radio::{self, RadioSpec};
use crate::models::vit::{NormKind, TrunkSpec};
use crate::weights::{stored_shape, KeyMap};

/// OpenAI CLIP pixel mean, RADIO's default input conditioner. The digits are
/// the reference config's, kept as written so they can be compared by eye.
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP pixel std.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// A resolved model description.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSpec {
    /// NVIDIA RADIO (C-RADIOv2/v3/v4).
    Radio(RadioSpec),
    /// OpenGVLab InternViT (300M / 6B).
    InternVit(InternVitSpec),
}

/// Reads and resolves `dir/config.json` against the checkpoint.
pub fn resolve(dir: &Path, ckpt: &Checkpoint) -> Result<ModelSpec> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| Error::checkpoint(&path, format!("config.json is not valid JSON: {e}")))?;
    let c = Cfg {
        v: &cfg,
        path: &path,
    };
    let model_type = cfg.get("model_type").and_then(Value::as_str);
    match model_type {
        Some("radio") => radio_native(&c, ckpt).map(ModelSpec::Radio),
        Some("internvl_vision") => internvit_native(&c, ckpt).map(ModelSpec::InternVit),
        Some("intern_vit_6b") => internvit_hub(&c, ckpt).map(ModelSpec::InternVit),
        _ if cfg.get("args").is_some_and(Value::is_object) => radio_hub(&c, ckpt).map(ModelSpec::Radio),
        Some(other) => Err(Error::UnsupportedModel(format!(
            "model_type `{other}` in {} (supported: radio, internvl_vision, intern_vit_6b, or an NVlabs RADIO config with `args`)",
            path.display()
        ))),
        None => Err(Error::UnsupportedModel(format!(
            "{} has neither `model_type` nor RADIO `args`",
            path.display()
        ))),
    }
}

/// A config object with typed, error-reporting accessors.
struct Cfg<'a> {
    v: &'a Value,
    path: &'a Path,
}

impl<'a> Cfg<'a> {
    fn sub(&self, key: &str) -> Result<Cfg<'a>> {
        match self.v.get(key) {
            Some(v) if v.is_object() => Ok(Cfg { v, path: self.path }),
            _ => Err(self.err(format!("`{key}` must be an object"))),
        }
    }

    fn err(&self, detail: impl Into<String>) -> Error {
        Error::checkpoint(self.path, detail)
    }

    fn present(&self, key: &str) -> Option<&'a Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.present(key) {
            None => Ok(None),
            // Sizes may be written as `[h, w]`; only square ones are supported.
            Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] => {
                self.as_usize(key, &a[0]).map(Some)
            }
            Some(v) => self.as_usize(key, v).map(Some),
        }
    }

    fn as_usize(&self, key: &str, v: &Value) -> Result<usize> {
        let n = v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                self.err(format!(
                    "`{key}` must be a non-negative integer (or a square [h, w]), got {v}"
                ))
            })?;
        if n > CONFIG_INT_MAX {
            return Err(self.err(format!(
                "`{key}` = {n} is out of range (at most {CONFIG_INT_MAX})"
            )));
        }
        Ok(n)
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| self.err(format!("missing `{key}`")))
    }

    fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| self.err(format!("`{key}` must be a number, got {v}"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("`{key}` must be true or false, got {v}"))),
        }
    }

    fn str_opt(&self, key: &str) -> Option<&'a str> {
        self.present(key).and_then(Value::as_str)
    }

    fn triple_or(&self, key: &str, default: [f32; 3]) -> Result<[f32; 3]> {
        match self.present(key) {
            None => Ok(default),
            Some(Value::Array(a)) if a.len() == 3 => {
                let mut out = [0.0; 3];
                for (o, x) in out.iter_mut().zip(a) {
                    *o = x
                        .as_f64()
                        .ok_or_else(|| self.err(format!("`{key}` must hold numbers")))?
                        as f32;
                }
                Ok(out)
            }
            Some(v) => Err(self.err(format!("`{key}` must be three numbers, got {v}"))),
        }
    }

    fn expect_gelu(&self) -> Result<()> {
        match self.str_opt("hidden_act") {
            None | Some("gelu") => Ok(()),
            Some(other) => Err(Error::UnsupportedModel(format!(
                "hidden_act `{other}` in {} (only exact-erf `gelu` is implemented)",
                self.path.display()
            ))),
        }
    }
}

/// The largest integer a config may hold, far above any real size (widths,
/// depths, image sides, token counts), so that the products the loader
/// forms from them (3·p², grid², cls + registers) cannot overflow.
const CONFIG_INT_MAX: usize = 1 << 24;

fn need_shape(ckpt: &Checkpoint, map: KeyMap, name: &str, path: &Path) -> Result<Vec<usize>> {
    stored_shape(ckpt, map, name)
        .ok_or_else(|| Error::checkpoint(path, format!("missing tensor `{name}`")))
}

/// `num_hidden_layers`, at least 1. A checkpoint with more blocks than that
/// loads the first ones and reports the rest as unused, as the reference
/// does; with fewer, loading fails on the first missing tensor.
fn depth(c: &Cfg) -> Result<usize> {
    match c.usize("num_hidden_layers")? {
        0 => Err(c.err("`num_hidden_layers` is 0: the model needs at least one block")),
        n => Ok(n),
    }
}

fn count_blocks(ckpt: &Checkpoint, map: KeyMap, prefix: &str) -> usize {
    (0..)
        .take_while(|i| stored_shape(ckpt, map, &format!("{prefix}.{i}.norm1.weight")).is_some())
        .count()
}

fn mlp_hidden(ckpt: &Checkpoint, map: KeyMap, prefix: &str, path: &Path) -> Result<usize> {
    let name = format!("{prefix}.0.mlp.fc1.weight");
    match need_shape(ckpt, map, &name, path)?.as_slice() {
        [hidden, _] => Ok(*hidden),
        other => Err(Error::checkpoint(
            path,
            format!("`{name}` has shape {other:?}, expected a matrix [hidden, width]"),
        )),
    }
}

fn check_heads(hidden: usize, heads: usize, path: &Path) -> Result<()> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(Error::checkpoint(
            path,
            format!("hidden size {hidden} is not divisible by {heads} heads"),
        ));
    }
    Ok(())
}

fn radio_native(c: &Cfg, ckpt: &Checkpoint) -> Result<RadioSpec> {
    c.expect_gelu()?;
    if c.bool_or("use_swiglu_ffn", false)? {
        return Err(Error::UnsupportedModel(
            "RADIO with use_swiglu_ffn=true".into(),
        ));
    }
    let hidden = c.usize("hidden_size")?;
    let heads = c.usize("num_attention_heads")?;
    check_heads(hidden, heads, c.path)?;
    let patch = c.usize("patch_size")?;
    if patch == 0 {
        return Err(c.err("`patch_size` must be at least 1"));
    }
    let num_cls = c.usize_opt("num_cls_tokens")?.unwrap_or(3);
    let summary_idxs = match c.present("summary_idxs") {
        None => vec![0, 1],
        Some(v) => indices(c, "summary_idxs", v)?,
    };
    let map = radio::KEYS;
    Ok(RadioSpec {
        trunk: TrunkSpec {
            hidden,
            depth: depth(c)?,
            heads,
            mlp_hidden: mlp_hidden(ckpt, map, radio::BLOCKS, c.path)?,
            norm: NormKind::LayerNorm,
            eps: c.f32_or("layer_norm_eps", 1e-6)?,
            qkv_bias: c.bool_or("qkv_bias", true)?,
            qk_norm: false,
        },
        patch,
        grid: c.usize_opt("max_img_size")?.unwrap_or(2048) / patch,
        num_cls,
        num_registers: c.usize_opt("num_registers")?.unwrap_or(7),
        summary_idxs,
        cpe_align_corners: c.bool_or("cpe_align_corners", false)?,
        norm_mean: c.triple_or("norm_mean", CLIP_MEAN)?,
        norm_std: c.triple_or("norm_std", CLIP_STD)?,
    })
}

fn indices(c: &Cfg, key: &str, v: &Value) -> Result<Vec<usize>> {
    v.as_array()
        .ok_or_else(|| c.err(format!("`{key}` must be a list")))?
        .iter()
        .map(|x| c.as_usize(key, x))
        .collect()
}

/// Heads of the timm ViT names RADIO checkpoints use; width and depth are
/// read from the tensors and checked against this table.
fn timm_vit(name: &str) -> Option<(usize, usize, usize)> {
    let size = name.strip_prefix("vit_")?.split('_').next()?;
    Some(match size {
        "tiny" => (192, 12, 3),
        "small" => (384, 12, 6),
        "base" => (768, 12, 12),
        "large" => (1024, 24, 16),
        "huge" => (1280, 32, 16),
        "giant" => (1536, 40, 24),
        "so400m" => (1152, 27, 16),
        _ => return None,
    })
}

fn radio_hub(c: &Cfg, ckpt: &Checkpoint) -> Result<RadioSpec> {
    let args = c.sub("args")?;
    if args.bool_or("model_norm", false)? {
        return Err(Error::UnsupportedModel(
            "RADIO with a final norm (args.model_norm=true)".into(),
        ));
    }
    let name = args
        .str_opt("model")
        .ok_or_else(|| c.err("missing `args.model`"))?;
    let map = radio::KEYS;
    let embedder = need_shape(ckpt, map, radio::EMBEDDER, c.path)?;
    let [hidden, patch_feat] = embedder[..] else {
        return Err(c.err(format!(
            "`{}` must be 2-D, got {embedder:?}",
            radio::EMBEDDER
        )));
    };
    let patch = (1..=64).find(|p| 3 * p * p == patch_feat).ok_or_else(|| {
        c.err(format!(
            "patch embedder input width {patch_feat} is not 3·p² for any patch size p"
        ))
    })?;
    let depth = count_blocks(ckpt, map, radio::BLOCKS);
    let heads = match (args.usize_opt("num_heads")?, timm_vit(name)) {
        (Some(h), _) => h,
        (None, Some((d, l, h))) => {
            if (d, l) != (hidden, depth) {
                return Err(c.err(format!(
                    "`{name}` is a {d}-wide, {l}-block ViT but the checkpoint has {hidden} × {depth}"
                )));
            }
            h
        }
        (None, None) => {
            return Err(Error::UnsupportedModel(format!(
                "cannot tell the head count of model `{name}`; add `args.num_heads`"
            )))
        }
    };
    check_heads(hidden, heads, c.path)?;

    // Prefix tokens, after NVlabs' ClsToken: one cls token per unique teacher
    // (or one), then registers up to a multiple of `register_multiple`.
    let teachers = args
        .present("teachers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let teacher_name = |t: &Value| t.get("name").and_then(Value::as_str).map(str::to_string);
    let mut unique: Vec<String> = teachers.iter().filter_map(teacher_name).collect();
    unique.sort();
    unique.dedup();
    let num_cls = if args.bool_or("cls_token_per_teacher", false)? {
        unique.len().max(1)
    } else {
        1
    };
    let num_registers = match (
        args.usize_opt("cpe_num_registers")?,
        args.usize_opt("register_multiple")?,
    ) {
        (Some(n), _) if n > 0 => n,
        (_, Some(m)) if m > 0 => m - num_cls % m,
        _ => 0,
    };
    let prefix = need_shape(ckpt, map, radio::CLS_TOKEN, c.path)?;
    if prefix != [num_cls + num_registers, hidden] {
        return Err(c.err(format!(
            "`args` imply {num_cls} cls + {num_registers} register tokens, but `{}` is {prefix:?}",
            radio::CLS_TOKEN
        )));
    }
    let summary_idxs: Vec<usize> = teachers
        .iter()
        .enumerate()
        .filter(|(_, t)| t.get("use_summary").and_then(Value::as_bool) != Some(false))
        .map(|(i, _)| i)
        .collect();
    if let Some(idx) = summary_idxs.iter().find(|&&i| i >= num_cls) {
        return Err(c.err(format!(
            "summary index {idx} is not a cls token (only {num_cls})"
        )));
    }
    let pos = need_shape(ckpt, map, radio::POS_EMBED, c.path)?;
    let cells = pos.iter().rev().nth(1).copied().unwrap_or(0);
    let grid = (cells as f64).sqrt().round() as usize;
    if grid * grid != cells {
        return Err(c.err(format!(
            "`{}` {pos:?} is not a square grid",
            radio::POS_EMBED
        )));
    }
    Ok(RadioSpec {
        trunk: TrunkSpec {
            hidden,
            depth,
            heads,
            mlp_hidden: mlp_hidden(ckpt, map, radio::BLOCKS, c.path)?,
            norm: NormKind::LayerNorm,
            eps: 1e-6,
            qkv_bias: stored_shape(ckpt, map, &format!("{}.0.attn.qkv.bias", radio::BLOCKS))
                .is_some(),
            qk_norm: false,
        },
        patch,
        grid,
        num_cls,
        num_registers,
        summary_idxs,
        cpe_align_corners: args
            .bool_or("cpe_align_corners", c.bool_or("cpe_align_corners", false)?)?,
        norm_mean: CLIP_MEAN,
        norm_std: CLIP_STD,
    })
}

fn internvit_common(
    c: &Cfg,
    ckpt: &Checkpoint,
    norm: NormKind,
    qkv_bias: bool,
    qk_norm: bool,
) -> Result<InternVitSpec> {
    c.expect_gelu()?;
    let hidden = c.usize("hidden_size")?;
    let heads = c.usize("num_attention_heads")?;
    check_heads(hidden, heads, c.path)?;
    let patch = c.usize("patch_size")?;
    let image = c.usize("image_size")?;
    if patch == 0 || !image.is_multiple_of(patch) {
        return Err(c.err(format!(
            "image_size {image} is not a multiple of patch_size {patch}"
        )));
    }
    let map = internvit::KEYS;
    Ok(InternVitSpec {
        trunk: TrunkSpec {
            hidden,
            depth: depth(c)?,
            heads,
            mlp_hidden: mlp_hidden(ckpt, map, internvit::BLOCKS, c.path)?,
            norm,
            eps: c.f32_or("layer_norm_eps", 1e-6)?,
            qkv_bias,
            qk_norm,
        },
        patch,
        grid: image / patch,
    })
}

fn norm_kind(c: &Cfg, default: &str) -> Result<NormKind> {
    match c.str_opt("norm_type").unwrap_or(default) {
        "layer_norm" => Ok(NormKind::LayerNorm),
        "rms_norm" => Ok(NormKind::RmsNorm),
        other => Err(c.err(format!(
            "unknown norm_type `{other}` (expected layer_norm or rms_norm)"
        ))),
    }
}

fn internvit_native(c: &Cfg, ckpt: &Checkpoint) -> Result<InternVitSpec> {
    if !c.bool_or("use_absolute_position_embeddings", true)? {
        return Err(Error::UnsupportedModel(
            "InternViT without absolute position embeddings".into(),
        ));
    }
    if !c.bool_or("use_mean_pooling", true)? {
        return Err(Error::UnsupportedModel(
            "InternViT with a final LayerNorm (use_mean_pooling=false)".into(),
        ));
    }
    let norm = norm_kind(c, "layer_norm")?;
    internvit_common(
        c,
        ckpt,
        norm,
        c.bool_or("attention_bias", false)?,
        c.bool_or("use_qk_norm", false)?,
    )
}

fn internvit_hub(c: &Cfg, ckpt: &Checkpoint) -> Result<InternVitSpec> {
    // OpenGVLab's config class defaults to the 6B settings: a config that
    // omits `norm_type` means RMSNorm.
    let norm = norm_kind(c, "rms_norm")?;
    internvit_common(
        c,
        ckpt,
        norm,
        c.bool_or("qkv_bias", false)?,
        c.bool_or("qk_normalization", true)?,
    )
}
