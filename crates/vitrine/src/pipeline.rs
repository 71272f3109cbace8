//! Images in, embeddings out: decoding, preprocessing, batching.
//!
//! Batching has two modes ([`Batching`]); both give the same numbers for an
//! image whatever else is in its batch (up to float rounding in the matrix
//! products):
//!
//! * [`Batching::Packed`] (default): batches of `batch_size` images in input
//!   order; images of different sizes share one forward pass through the
//!   variable-length attention layout (no padding, no cross-image attention).
//! * [`Batching::GroupBySize`]: images are first bucketed by their input
//!   size (read from the file headers), then each bucket is cut into batches,
//!   so every forward pass is a plain same-size batch.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use vitrine_core::{Error, HostTensor, Result};

use crate::encoder::{copy_error, group_by_shape, Embedding, Encoder};
use crate::images::{self, DecodeLimits, RgbImage};

/// An image to encode: a file, or pixels already decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// A JPEG, PNG or WebP file.
    Path(PathBuf),
    /// Decoded RGB pixels.
    Image(RgbImage),
}

impl From<&str> for ImageSource {
    fn from(p: &str) -> Self {
        Self::Path(PathBuf::from(p))
    }
}
impl From<String> for ImageSource {
    fn from(p: String) -> Self {
        Self::Path(PathBuf::from(p))
    }
}
impl From<&Path> for ImageSource {
    fn from(p: &Path) -> Self {
        Self::Path(p.to_path_buf())
    }
}
impl From<PathBuf> for ImageSource {
    fn from(p: PathBuf) -> Self {
        Self::Path(p)
    }
}
impl From<&PathBuf> for ImageSource {
    fn from(p: &PathBuf) -> Self {
        Self::Path(p.clone())
    }
}
impl From<RgbImage> for ImageSource {
    fn from(i: RgbImage) -> Self {
        Self::Image(i)
    }
}

impl ImageSource {
    /// The pixels (decoded now for a file).
    pub fn load(&self, limits: &DecodeLimits) -> Result<Cow<'_, RgbImage>> {
        match self {
            Self::Path(p) => images::load_image(p, limits).map(Cow::Owned),
            Self::Image(i) => Ok(Cow::Borrowed(i)),
        }
    }

    /// `(width, height)` as decoded, without decoding pixels.
    pub fn dimensions(&self, limits: &DecodeLimits) -> Result<(usize, usize)> {
        match self {
            Self::Path(p) => images::read_dimensions(p, limits),
            Self::Image(i) => Ok((i.width(), i.height())),
        }
    }

    /// A name for messages and output metadata: the path, or `<image N>`.
    pub fn label(&self, index: usize) -> String {
        match self {
            Self::Path(p) => p.display().to_string(),
            Self::Image(_) => format!("<image {index}>"),
        }
    }
}

/// How images are grouped into forward passes (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Batching {
    /// Input order; mixed sizes packed into one pass.
    #[default]
    Packed,
    /// Same-size batches, bucketed by input size first.
    GroupBySize,
}

/// Options of [`Encoder::encode_images_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Images per forward pass (at least 1).
    pub batch_size: usize,
    /// Packing or grouping.
    pub batching: Batching,
    /// Blocks whose outputs to return too (0-based).
    pub intermediates: Vec<usize>,
    /// Decoding limits.
    pub limits: DecodeLimits,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            batch_size: 8,
            batching: Batching::Packed,
            intermediates: Vec::new(),
            limits: DecodeLimits::default(),
        }
    }
}

/// Which images go together, and which failed before any pixel was decoded.
#[derive(Debug, Default)]
pub struct BatchPlan {
    /// Indices into the inputs, one list per forward pass.
    pub batches: Vec<Vec<usize>>,
    /// Inputs that could not even be sized (unreadable headers).
    pub failed: Vec<(usize, Error)>,
}

/// Decodes and preprocesses on all cores (images are independent, so the
/// results do not depend on the thread count). A decoder that panics on a
/// hostile file fails that image only.
fn prepare_all<F>(sources: &[&ImageSource], f: F) -> Vec<Result<HostTensor>>
where
    F: Fn(&ImageSource) -> Result<HostTensor> + Sync,
{
    let guarded = |s: &ImageSource, i: usize| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(s))).unwrap_or_else(|_| {
            Err(Error::InvalidArgument(format!(
                "{}: the decoder failed on this file",
                s.label(i)
            )))
        })
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(sources.len());
    if threads <= 1 {
        return sources
            .iter()
            .enumerate()
            .map(|(i, s)| guarded(s, i))
            .collect();
    }
    let chunk = sources.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = sources
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                let guarded = &guarded;
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(j, s)| guarded(s, c * chunk + j))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(sources.chunks(chunk))
            .flat_map(|(h, part)| {
                h.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|_| Err(Error::Backend("a preprocessing thread failed".into())))
                        .collect()
                })
            })
            .collect()
    })
}

impl Encoder {
    /// Runs images of any sizes, each `[3, H, W]` (already preprocessed), in
    /// one packed forward pass; results in input order. All or nothing, like
    /// [`Encoder::forward_groups`].
    pub fn forward_images(
        &self,
        pixels: &[HostTensor],
        intermediates: &[usize],
    ) -> Result<Vec<Embedding>> {
        self.forward_images_each(pixels, intermediates, &|i| format!("image {i}"))?
            .into_iter()
            .collect()
    }

    /// [`Self::forward_images`] with one result per image; `label(i)` names
    /// image `i` in messages.
    fn forward_images_each(
        &self,
        pixels: &[HostTensor],
        intermediates: &[usize],
        label: &dyn Fn(usize) -> String,
    ) -> Result<Vec<Result<Embedding>>> {
        for (i, p) in pixels.iter().enumerate() {
            if p.shape().len() != 3 || p.shape()[0] != 3 {
                return Err(Error::shape(
                    "forward_images",
                    format!("image {i} is {:?}, expected [3, H, W]", p.shape()),
                ));
            }
        }
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        // Same shapes go together (first-appearance order); `order` says
        // which input each position across the groups is.
        let (groups, order) = group_by_shape(pixels)?;
        let outs = self.forward_each(&groups, intermediates, &|pos| label(order[pos]))?;
        let mut slots: Vec<Option<Result<Embedding>>> = (0..pixels.len()).map(|_| None).collect();
        for (&i, r) in order.iter().zip(outs) {
            slots[i] = Some(r);
        }
        Ok(slots
            .into_iter()
            .map(|s| {
                s.unwrap_or_else(|| {
                    Err(Error::Backend("the model returned too few outputs".into()))
                })
            })
            .collect())
    }

    /// Decides the batches for `sources` (see [`Batching`]).
    pub fn plan_batches(&self, sources: &[ImageSource], opts: &EncodeOptions) -> BatchPlan {
        let size = opts.batch_size.max(1);
        let mut plan = BatchPlan::default();
        match opts.batching {
            Batching::Packed => {
                let all: Vec<usize> = (0..sources.len()).collect();
                plan.batches = all.chunks(size).map(<[usize]>::to_vec).collect();
            }
            Batching::GroupBySize => {
                let mut order: Vec<(usize, usize)> = Vec::new();
                let mut buckets: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
                for (i, s) in sources.iter().enumerate() {
                    match s.dimensions(&opts.limits) {
                        Ok((w, h)) => {
                            let key = self.preprocess_config().target_size(h, w);
                            let b = buckets.entry(key).or_default();
                            if b.is_empty() {
                                order.push(key);
                            }
                            b.push(i);
                        }
                        Err(e) => plan.failed.push((i, e)),
                    }
                }
                for key in order {
                    for chunk in buckets[&key].chunks(size) {
                        plan.batches.push(chunk.to_vec());
                    }
                }
            }
        }
        plan
    }

    /// Decodes, preprocesses and runs one batch; one result per source.
    pub fn encode_batch(
        &self,
        sources: &[&ImageSource],
        opts: &EncodeOptions,
    ) -> Vec<Result<Embedding>> {
        let mut results: Vec<Option<Result<Embedding>>> =
            (0..sources.len()).map(|_| None).collect();
        let mut ok_idx = Vec::new();
        let mut pixels = Vec::new();
        let prepared = prepare_all(sources, |s| {
            s.load(&opts.limits).and_then(|img| self.preprocess(&img))
        });
        for (i, r) in prepared.into_iter().enumerate() {
            match r {
                Ok(px) => {
                    ok_idx.push(i);
                    pixels.push(px);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !pixels.is_empty() {
            // Non-finite outputs and a half batch that still runs out of
            // memory fail their own images only, named by their sources.
            let label = |k: usize| sources[ok_idx[k]].label(ok_idx[k]);
            match self.forward_images_each(&pixels, &opts.intermediates, &label) {
                Ok(outs) => {
                    for (&i, r) in ok_idx.iter().zip(outs) {
                        results[i] = Some(r);
                    }
                }
                Err(e) => {
                    for &i in &ok_idx {
                        results[i] = Some(Err(copy_error(&e)));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Backend("image was not processed".into()))))
            .collect()
    }

    /// Encodes images (files or decoded pixels) with default options: one
    /// result per input, in input order; a bad image fails alone.
    pub fn encode_images<I, S>(&self, inputs: I) -> Vec<Result<Embedding>>
    where
        I: IntoIterator<Item = S>,
        S: Into<ImageSource>,
    {
        self.encode_images_with(inputs, &EncodeOptions::default())
    }

    /// [`Self::encode_images`] with explicit batching, intermediates and limits.
    ///
    /// ```
    /// use vitrine::{Batching, DType, Device, EncodeOptions, Encoder};
    ///
    /// let enc = Encoder::from_pretrained("../../tests/fixtures/models/internvit_300m", Device::Cpu, DType::F32)?;
    /// let opts = EncodeOptions { batch_size: 2, batching: Batching::GroupBySize, intermediates: vec![0], ..Default::default() };
    /// let out = enc.encode_images_with(["../../assets/images/tiny.png", "../../assets/missing.png"], &opts);
    /// let ok = out[0].as_ref().expect("tiny.png decodes");
    /// assert_eq!(ok.last_hidden_state.shape(), &[1 + 8 * 8, 48]); // cls + 8x8 patches
    /// assert_eq!(ok.intermediates.len(), 1);
    /// assert!(out[1].is_err()); // reported, the others still embedded
    /// # Ok::<(), vitrine::Error>(())
    /// ```
    pub fn encode_images_with<I, S>(
        &self,
        inputs: I,
        opts: &EncodeOptions,
    ) -> Vec<Result<Embedding>>
    where
        I: IntoIterator<Item = S>,
        S: Into<ImageSource>,
    {
        let sources: Vec<ImageSource> = inputs.into_iter().map(Into::into).collect();
        let mut results: Vec<Option<Result<Embedding>>> =
            (0..sources.len()).map(|_| None).collect();
        let plan = self.plan_batches(&sources, opts);
        for (i, e) in plan.failed {
            results[i] = Some(Err(e));
        }
        for batch in &plan.batches {
            let refs: Vec<&ImageSource> = batch.iter().map(|&i| &sources[i]).collect();
            for (&i, r) in batch.iter().zip(self.encode_batch(&refs, opts)) {
                results[i] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Backend("image was not processed".into()))))
            .collect()
    }
}
