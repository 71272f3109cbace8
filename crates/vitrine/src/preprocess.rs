//! From an RGB image to the pixel tensor a model takes, reproducing the
//! Hugging Face image processors (the analogue of timm's `pretrained_cfg`).
//!
//! | family | size policy | resample | values |
//! |---|---|---|---|
//! | RADIO | keep the aspect ratio, long side = the resolution (default: the model's preferred one), each side rounded to the nearest multiple of the patch (ties to even, as Python's `round`), at least one patch | bicubic, antialiased | RGB in [0, 1] (`x / 255`); the model normalises inside (CLIP mean/std) |
//! | InternViT | `image_size` × `image_size` (448 for the released models), aspect ratio not kept | bicubic, antialiased | `(x / 255 − mean) / std`, ImageNet mean/std |
//!
//! The resampler is an integer, separable, antialiased filter (Keys cubic with
//! a = −0.5 stretched by the downscaling factor; plain when upsampling) on 8-bit
//! pixels, rounded to 8 bits after each pass. Two reference implementations
//! of it exist and vitrine reproduces both, bit for bit on the committed test
//! images ([`ResizeBackend`]):
//!
//! * [`ResizeBackend::Torchvision`] (default): transformers 5's default
//!   processors (`CLIPImageProcessor`, `GotOcr2ImageProcessor`), which resize
//!   uint8 tensors with torch's antialiased bicubic (int16 weights, precision
//!   chosen per axis);
//! * [`ResizeBackend::Pil`]: the `…ImageProcessorPil` classes and the original
//!   InternVL / RADIO pipelines, i.e. PIL's `Image.resize(BICUBIC)` (22-bit
//!   weights).
//!
//! The two differ by at most one 8-bit level on some pixels.
//!
//! ```
//! use vitrine::images::RgbImage;
//! use vitrine::preprocess::PreprocessConfig;
//!
//! // RADIO-style: long side 32, sides multiples of the patch 4.
//! let cfg = PreprocessConfig::radio(32, 4, 2048);
//! assert_eq!(cfg.target_size(48, 64), (24, 32));
//! let img = RgbImage::new(64, 48, vec![128; 64 * 48 * 3])?;
//! let px = cfg.apply(&img)?;
//! assert_eq!(px.shape(), &[3, 24, 32]);
//! # Ok::<(), vitrine::Error>(())
//! ```

use std::fmt;
use std::path::Path;

use serde_json::Value;
use vitrine_core::{Error, HostTensor, Result};

use crate::config::ModelSpec;
use crate::images::RgbImage;

/// ImageNet mean (InternViT's normalisation).
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation.
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];
/// RADIO resolution used when a checkpoint names none (C-RADIOv3/v4's preferred one).
pub const RADIO_DEFAULT_RESOLUTION: usize = 512;

/// Resampling filter (PIL's names; both antialiased when downscaling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// Triangle filter (`PIL.Image.BILINEAR`, resample = 2).
    Bilinear,
    /// Keys cubic, a = −0.5 (`PIL.Image.BICUBIC`, resample = 3).
    Bicubic,
}

/// Which reference resampler's integer arithmetic to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeBackend {
    /// torch's antialiased uint8 resize, as transformers 5's default
    /// (torchvision) processors run it.
    Torchvision,
    /// PIL's `Image.resize`, as the `…Pil` processors run it.
    Pil,
}

impl std::str::FromStr for ResizeBackend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "torchvision" | "torch" | "tv" => Ok(Self::Torchvision),
            "pil" | "pillow" => Ok(Self::Pil),
            _ => Err(Error::InvalidArgument(format!(
                "unknown resize backend `{s}` (expected torchvision or pil)"
            ))),
        }
    }
}

/// How the input size is chosen from the image size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputSize {
    /// Keep the aspect ratio: the long side becomes this many pixels, then
    /// each side is rounded to the nearest multiple of
    /// [`PreprocessConfig::patch_multiple`] (ties to even), at least one.
    LongSide(usize),
    /// A fixed size, whatever the image's aspect ratio.
    Fixed {
        /// Output height.
        height: usize,
        /// Output width.
        width: usize,
    },
}

/// `(x · rescale − mean) / std` per channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    /// Per-channel mean (RGB).
    pub mean: [f64; 3],
    /// Per-channel standard deviation (RGB).
    pub std: [f64; 3],
}

/// Everything that turns an image into model input; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessConfig {
    /// Size policy.
    pub input_size: InputSize,
    /// Every output side is a multiple of this (the patch size).
    pub patch_multiple: usize,
    /// Supported long sides for [`InputSize::LongSide`], inclusive.
    pub resolution_range: (usize, usize),
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Which reference arithmetic to reproduce.
    pub backend: ResizeBackend,
    /// Pixel scale, `1/255`.
    pub rescale_factor: f64,
    /// Normalisation after rescaling (`None` for RADIO, which normalises inside).
    pub normalize: Option<Normalize>,
}

impl PreprocessConfig {
    /// RADIO: long side `resolution`, sides multiples of `patch`, values in
    /// [0, 1]. Resolutions from one patch to `max_resolution` are accepted.
    pub fn radio(resolution: usize, patch: usize, max_resolution: usize) -> Self {
        Self {
            input_size: InputSize::LongSide(resolution),
            patch_multiple: patch.max(1),
            resolution_range: (patch.max(1), max_resolution.max(patch.max(1))),
            interpolation: Interpolation::Bicubic,
            backend: ResizeBackend::Torchvision,
            rescale_factor: 1.0 / 255.0,
            normalize: None,
        }
    }

    /// InternViT: `size × size`, ImageNet-normalised.
    pub fn internvit(size: usize, patch: usize) -> Self {
        Self {
            input_size: InputSize::Fixed {
                height: size,
                width: size,
            },
            patch_multiple: patch.max(1),
            resolution_range: (size, size),
            interpolation: Interpolation::Bicubic,
            backend: ResizeBackend::Torchvision,
            rescale_factor: 1.0 / 255.0,
            normalize: Some(Normalize {
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
            }),
        }
    }

    /// The configuration for a model directory: RADIO's resolution is
    /// `preferred_resolution` from `config.json` (NVlabs layout), else
    /// `image_size` (transformers layout), else [`RADIO_DEFAULT_RESOLUTION`],
    /// clamped to what the position table supports; InternViT's size is
    /// its `image_size`.
    pub fn for_model(dir: &Path, spec: &ModelSpec) -> Result<Self> {
        match spec {
            ModelSpec::Radio(s) => {
                let max = s.grid * s.patch;
                let preferred = read_preferred_resolution(dir)?
                    .unwrap_or(RADIO_DEFAULT_RESOLUTION)
                    .clamp(s.patch, max.max(s.patch));
                Ok(Self::radio(preferred, s.patch, max))
            }
            ModelSpec::InternVit(s) => Ok(Self::internvit(s.grid * s.patch, s.patch)),
        }
    }

    /// The same configuration with another long side (RADIO only: InternViT
    /// takes a fixed size). Fails outside [`Self::resolution_range`].
    pub fn with_resolution(mut self, resolution: usize) -> Result<Self> {
        match self.input_size {
            InputSize::LongSide(_) => {
                let (lo, hi) = self.resolution_range;
                if resolution < lo || resolution > hi {
                    return Err(Error::InvalidArgument(format!(
                        "resolution {resolution} is outside this model's supported range {lo}..={hi}"
                    )));
                }
                self.input_size = InputSize::LongSide(resolution);
                Ok(self)
            }
            InputSize::Fixed { height, width } => {
                if (height, width) == (resolution, resolution) {
                    Ok(self)
                } else {
                    Err(Error::InvalidArgument(format!(
                        "this model takes a fixed {height}x{width} input; --resolution applies to RADIO models"
                    )))
                }
            }
        }
    }

    /// The same configuration reproducing another reference resampler.
    pub fn with_backend(mut self, backend: ResizeBackend) -> Self {
        self.backend = backend;
        self
    }

    /// Output `(height, width)` for an image of `height × width` pixels.
    pub fn target_size(&self, height: usize, width: usize) -> (usize, usize) {
        match self.input_size {
            InputSize::Fixed { height, width } => (height, width),
            InputSize::LongSide(long) => {
                let p = self.patch_multiple as u128;
                // Nearest multiple of p to num/den, ties to even, at least p.
                let snap = |num: u128, den: u128| -> usize {
                    let d = den * p;
                    let (q, r) = (num / d, num % d);
                    let n = if 2 * r > d || (2 * r == d && q % 2 == 1) {
                        q + 1
                    } else {
                        q
                    };
                    (n.max(1) * p) as usize
                };
                let (h, w, l) = (height as u128, width as u128, long as u128);
                if h >= w {
                    (snap(l, 1), snap(w * l, h.max(1)))
                } else {
                    (snap(h * l, w.max(1)), snap(l, 1))
                }
            }
        }
    }

    /// Resizes to [`Self::target_size`] and converts to a `[3, H, W]` f32 tensor.
    pub fn apply(&self, image: &RgbImage) -> Result<HostTensor> {
        let (h, w) = self.target_size(image.height(), image.width());
        let resized = self.resize(image, h, w)?;
        self.to_tensor(&resized)
    }

    /// Resamples to `height × width` (8-bit, as both references do).
    pub fn resize(&self, image: &RgbImage, height: usize, width: usize) -> Result<RgbImage> {
        if height == 0 || width == 0 {
            return Err(Error::InvalidArgument(format!(
                "cannot resize to {height}x{width}"
            )));
        }
        resample(image, height, width, self.interpolation, self.backend)
    }

    /// Rescales (and normalises) 8-bit pixels into a `[3, H, W]` f32 tensor,
    /// with the reference's order of float operations.
    pub fn to_tensor(&self, image: &RgbImage) -> Result<HostTensor> {
        let (h, w) = (image.height(), image.width());
        let n = h * w;
        let mut out = vec![0f32; 3 * n];
        let px = image.as_raw();
        for c in 0..3 {
            // The value for each 8-bit level, computed once.
            let lut: Vec<f32> = (0..256u32).map(|v| self.level(v as u8, c)).collect();
            let plane = &mut out[c * n..(c + 1) * n];
            for (o, p) in plane.iter_mut().zip(px.chunks_exact(3)) {
                *o = lut[p[c] as usize];
            }
        }
        HostTensor::from_f32(vec![3, h, w], out)
    }

    fn level(&self, v: u8, c: usize) -> f32 {
        let x = f32::from(v);
        match (self.backend, self.normalize) {
            // torchvision backend: `uint8 * scale` in f32; with normalisation the
            // scale is folded into mean and std: (x − mean/scale) / (std/scale).
            (ResizeBackend::Torchvision, None) => x * self.rescale_factor as f32,
            (ResizeBackend::Torchvision, Some(nm)) => {
                let inv = (1.0 / self.rescale_factor) as f32;
                (x - nm.mean[c] as f32 * inv) / (nm.std[c] as f32 * inv)
            }
            // PIL backend (numpy): rescale in f64, cast to f32, normalise in f32.
            (ResizeBackend::Pil, None) => (f64::from(v) * self.rescale_factor) as f32,
            (ResizeBackend::Pil, Some(nm)) => {
                let r = (f64::from(v) * self.rescale_factor) as f32;
                (r - nm.mean[c] as f32) / nm.std[c] as f32
            }
        }
    }
}

impl fmt::Display for PreprocessConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.input_size {
            InputSize::LongSide(l) => write!(
                f,
                "long side {l}, sides rounded to multiples of {}",
                self.patch_multiple
            )?,
            InputSize::Fixed { height, width } => write!(f, "{height}x{width}")?,
        }
        let filter = match self.interpolation {
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        };
        let backend = match self.backend {
            ResizeBackend::Torchvision => "torchvision",
            ResizeBackend::Pil => "pil",
        };
        write!(f, ", antialiased {filter} ({backend})")?;
        match self.normalize {
            None => write!(f, ", values in [0, 1]"),
            Some(nm) => write!(f, ", normalised mean {:?} std {:?}", nm.mean, nm.std),
        }
    }
}

/// `preferred_resolution` (`[h, w]` or a number; the larger side) from `config.json`,
/// else a transformers-layout `image_size`.
fn read_preferred_resolution(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| Error::checkpoint(&path, format!("config.json is not valid JSON: {e}")))?;
    let side = |v: &Value| -> Option<usize> {
        match v {
            Value::Number(n) => n.as_u64().map(|x| x as usize),
            Value::Array(a) => a.iter().filter_map(Value::as_u64).max().map(|x| x as usize),
            _ => None,
        }
    };
    let found = cfg
        .get("preferred_resolution")
        .and_then(side)
        .or_else(|| {
            cfg.get("args")
                .and_then(|a| a.get("preferred_resolution"))
                .and_then(side)
        })
        .or_else(|| {
            (cfg.get("model_type").and_then(Value::as_str) == Some("radio"))
                .then(|| cfg.get("image_size").and_then(side))
                .flatten()
        });
    Ok(found.filter(|&s| s > 0))
}

// ---------------------------------------------------------------------------
// The resampler.

/// Per-output taps of one axis: first input index, tap count, fixed-point weights.
struct Axis {
    start: Vec<usize>,
    len: Vec<usize>,
    ksize: usize,
    weights: Vec<i32>,
    precision: u32,
}

fn filter(interp: Interpolation, backend: ResizeBackend, x: f64) -> f64 {
    let x = x.abs();
    match interp {
        Interpolation::Bilinear => {
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        }
        Interpolation::Bicubic => {
            const A: f64 = -0.5;
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                // Same polynomial, each reference's own operation order.
                match backend {
                    ResizeBackend::Pil => (((x - 5.0) * x + 8.0) * x - 4.0) * A,
                    ResizeBackend::Torchvision => ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A,
                }
            } else {
                0.0
            }
        }
    }
}

fn plan_axis(input: usize, output: usize, interp: Interpolation, backend: ResizeBackend) -> Axis {
    let scale = input as f64 / output as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let base = match interp {
        Interpolation::Bilinear => 1.0,
        Interpolation::Bicubic => 2.0,
    };
    let support = base * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv = 1.0 / filterscale;
    let mut real = vec![0f64; output * ksize];
    let mut start = vec![0usize; output];
    let mut len = vec![0usize; output];
    let mut wmax = 0f64;
    for i in 0..output {
        let center = (i as f64 + 0.5) * scale;
        // C casts truncate toward zero; so does `as`.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(input as i64);
        let size = (xmax - xmin).clamp(0, ksize as i64) as usize;
        let row = &mut real[i * ksize..(i + 1) * ksize];
        let mut total = 0f64;
        for (j, w) in row.iter_mut().enumerate().take(size) {
            let v = filter(
                interp,
                backend,
                ((j as i64 + xmin) as f64 - center + 0.5) * inv,
            );
            *w = v;
            total += v;
        }
        if total != 0.0 {
            for w in row.iter_mut().take(size) {
                *w /= total;
                wmax = wmax.max(*w);
            }
        }
        start[i] = xmin as usize;
        len[i] = size;
    }
    let precision = match backend {
        // PIL: PRECISION_BITS = 32 − 8 − 2.
        ResizeBackend::Pil => 22,
        // torch: the largest precision whose largest weight still fits in int16.
        ResizeBackend::Torchvision => {
            let mut p = 0u32;
            while p < 22 {
                let next = (0.5 + wmax * f64::from(1u32 << (p + 1))) as i32;
                if next >= 1 << 15 {
                    break;
                }
                p += 1;
            }
            p
        }
    };
    let one = f64::from(1u32 << precision);
    let weights = real
        .iter()
        .map(|&w| {
            let v = w * one;
            if v < 0.0 {
                (-0.5 + v) as i32
            } else {
                (0.5 + v) as i32
            }
        })
        .collect();
    Axis {
        start,
        len,
        ksize,
        weights,
        precision,
    }
}

/// Both references accumulate in 32-bit ints: 255 · Σ|w| stays below 2³¹
/// for their weight precisions (at most 22 bits), so i32 never overflows.
#[inline]
fn round_shift(acc: i32, precision: u32) -> u8 {
    (acc >> precision).clamp(0, 255) as u8
}

fn resample(
    image: &RgbImage,
    out_h: usize,
    out_w: usize,
    interp: Interpolation,
    backend: ResizeBackend,
) -> Result<RgbImage> {
    let (in_h, in_w) = (image.height(), image.width());
    let mut cur = image.as_raw().to_vec();
    let mut cur_w = in_w;
    // Horizontal pass first, then vertical: the order both references use.
    if out_w != in_w {
        let ax = plan_axis(in_w, out_w, interp, backend);
        let half = 1i32 << (ax.precision - 1);
        let mut next = vec![0u8; in_h * out_w * 3];
        for y in 0..in_h {
            let src = &cur[y * in_w * 3..(y + 1) * in_w * 3];
            let dst = &mut next[y * out_w * 3..(y + 1) * out_w * 3];
            for x in 0..out_w {
                let k = &ax.weights[x * ax.ksize..x * ax.ksize + ax.len[x]];
                let s0 = ax.start[x];
                let mut acc = [half; 3];
                let taps = &src[s0 * 3..(s0 + k.len()) * 3];
                for (p, &kw) in taps.chunks_exact(3).zip(k) {
                    acc[0] += i32::from(p[0]) * kw;
                    acc[1] += i32::from(p[1]) * kw;
                    acc[2] += i32::from(p[2]) * kw;
                }
                for c in 0..3 {
                    dst[x * 3 + c] = round_shift(acc[c], ax.precision);
                }
            }
        }
        cur = next;
        cur_w = out_w;
    }
    if out_h != in_h {
        let ax = plan_axis(in_h, out_h, interp, backend);
        let half = 1i32 << (ax.precision - 1);
        let row = cur_w * 3;
        let mut next = vec![0u8; out_h * row];
        let mut acc = vec![0i32; row];
        for y in 0..out_h {
            let k = &ax.weights[y * ax.ksize..y * ax.ksize + ax.len[y]];
            let s0 = ax.start[y];
            acc.iter_mut().for_each(|a| *a = half);
            for (j, &kw) in k.iter().enumerate() {
                let src = &cur[(s0 + j) * row..(s0 + j + 1) * row];
                for (a, &p) in acc.iter_mut().zip(src) {
                    *a += i32::from(p) * kw;
                }
            }
            for (d, &a) in next[y * row..(y + 1) * row].iter_mut().zip(&acc) {
                *d = round_shift(a, ax.precision);
            }
        }
        cur = next;
    }
    RgbImage::new(out_w, out_h, cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radio_sizes_round_to_the_patch_with_ties_to_even() {
        let cfg = PreprocessConfig::radio(32, 4, 64);
        assert_eq!(cfg.target_size(48, 64), (24, 32));
        assert_eq!(cfg.target_size(40, 60), (20, 32)); // 21.33 → 20
        assert_eq!(cfg.target_size(5, 7), (24, 32)); // 22.86 → 24
        assert_eq!(cfg.target_size(1, 1000), (4, 32)); // at least one patch
                                                       // 10 · 32 / 64 = 5 = 1.25 patches → 4; 18 · 32 / 64 = 9 → 2.25 → 8;
                                                       // a tie: 20 · 32 / 64 = 10 = 2.5 patches → 2 (even) → 8; 28 → 14 = 3.5 → 4 → 16.
        assert_eq!(cfg.target_size(20, 64).0, 8);
        assert_eq!(cfg.target_size(28, 64).0, 16);
        let fixed = PreprocessConfig::internvit(448, 14);
        assert_eq!(fixed.target_size(10, 1000), (448, 448));
    }

    #[test]
    fn resolution_outside_the_range_is_an_error() {
        let cfg = PreprocessConfig::radio(512, 16, 2048);
        assert!(cfg.clone().with_resolution(8).is_err());
        assert!(cfg.clone().with_resolution(4096).is_err());
        assert_eq!(
            cfg.with_resolution(768).unwrap().input_size,
            InputSize::LongSide(768)
        );
        assert!(PreprocessConfig::internvit(448, 14)
            .with_resolution(224)
            .is_err());
    }

    #[test]
    fn same_size_is_identity_and_constant_images_stay_constant() {
        let img = RgbImage::new(5, 3, (0..45).map(|v| v as u8 * 5).collect()).unwrap();
        for backend in [ResizeBackend::Pil, ResizeBackend::Torchvision] {
            let cfg = PreprocessConfig::radio(5, 1, 64).with_backend(backend);
            assert_eq!(cfg.resize(&img, 3, 5).unwrap(), img);
            let flat = RgbImage::new(7, 9, vec![77; 7 * 9 * 3]).unwrap();
            for (h, w) in [(3, 2), (20, 31), (9, 4)] {
                let r = cfg.resize(&flat, h, w).unwrap();
                assert!(r.as_raw().iter().all(|&v| v == 77), "{backend:?} {h}x{w}");
            }
        }
    }
}
