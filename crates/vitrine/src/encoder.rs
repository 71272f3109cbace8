//! The public entry point: a loaded model on one device, in one dtype.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vitrine_core::{Backend, DType, Error, HostData, HostTensor, Result};
use vitrine_cpu::CpuBackend;

use crate::checkpoint::Checkpoint;
use crate::config::{self, ModelSpec};
use crate::device::Device;
use crate::hub::{self, HubOptions, ModelSource};
use crate::images::RgbImage;
use crate::io::stack;
use crate::models::radio::RadioSpec;
use crate::models::{internvit, radio, Model};
use crate::numerics::{self, human_bytes, F16_MAX};
use crate::preprocess::PreprocessConfig;
use crate::replay::Recorder;
use crate::weights::{KeyMap, Weights};

/// Host-side outputs for one image, fp32.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    /// `[tokens, D]`: prefix tokens (cls, registers), then patch tokens.
    pub last_hidden_state: HostTensor,
    /// RADIO only: `[len(summary_idxs) · D]`, the chosen cls tokens concatenated.
    pub summary: Option<HostTensor>,
    /// RADIO only: `[h · w, D]`, the patch tokens in row-major order.
    pub features: Option<HostTensor>,
    /// Outputs of the requested blocks (`forward_intermediates`), `[tokens, D]`.
    pub intermediates: Vec<HostTensor>,
    /// Patch grid `(h, w)` of the image.
    pub grid: (usize, usize),
    /// Storage dtype of the forward pass that produced these outputs: the
    /// encoder's, or the retry dtype when [`Self::overflow`] is set.
    pub dtype: DType,
    /// Set when this image's f16 pass overflowed and these outputs come from
    /// the retry that [`OverflowPolicy::Retry`] asked for.
    pub overflow: Option<OverflowRetry>,
}

/// What the encoder does when an f16 forward pass gives an image NaN/Inf
/// outputs (f16 activations overflow past ±65504). Set with
/// [`Encoder::set_overflow_policy`]; `embed --on-f16-overflow`.
///
/// Only encoders loaded as f16 retry: bf16 and f32 have fp32's range, so a
/// non-finite output there is not an overflow a wider type would fix, and it
/// is always an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Fail the affected images with an error naming the image and the first
    /// block whose output was non-finite (the default).
    #[default]
    Error,
    /// Run the affected images of the batch again in this dtype (bf16 or
    /// f32); the other images keep their f16 results. The weights at that
    /// dtype are loaded from the same checkpoint onto the same device on the
    /// first overflow and kept: one more copy of the model in device memory
    /// (bf16: as large as the f16 one; f32: twice). The retried outputs are
    /// checked for NaN/Inf too, and record the retry in
    /// [`Embedding::overflow`]; if the retry fails as well, the error names
    /// both attempts.
    Retry(DType),
}

impl fmt::Display for OverflowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverflowPolicy::Error => f.write_str("error"),
            OverflowPolicy::Retry(d) => write!(f, "retry-{d}"),
        }
    }
}

impl FromStr for OverflowPolicy {
    type Err = Error;

    /// `error`, `retry-bf16` or `retry-f32` (as `embed --on-f16-overflow` takes them).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(OverflowPolicy::Error),
            "retry-bf16" => Ok(OverflowPolicy::Retry(DType::BF16)),
            "retry-f32" => Ok(OverflowPolicy::Retry(DType::F32)),
            other => Err(Error::InvalidArgument(format!(
                "unknown overflow policy `{other}` (expected error, retry-bf16 or retry-f32)"
            ))),
        }
    }
}

/// How an image's f16 pass overflowed before [`OverflowPolicy::Retry`] ran it
/// again (see [`Embedding::overflow`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverflowRetry {
    /// The dtype of the pass that went non-finite (f16).
    pub from: DType,
    /// The first block (0-based) whose output was non-finite in that pass,
    /// when the single-image rerun that looks for it found one.
    pub block: Option<usize>,
    /// Number of blocks of the model.
    pub depth: usize,
    /// What was non-finite in that pass's outputs (count, first value and
    /// where), as [`numerics::NonFinite`] prints it.
    pub non_finite: String,
}

impl fmt::Display for OverflowRetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} overflow", self.from)?;
        if let Some(b) = self.block {
            write!(f, " after block {b} of {}", self.depth)?;
        }
        write!(f, " ({})", self.non_finite)
    }
}

/// What loading left unused (adaptor heads, teacher summaries...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Checkpoint tensors the model did not read.
    pub unused_tensors: Vec<String>,
}

trait Runner: Send + Sync {
    fn forward(&self, groups: &[HostTensor], keep: &[usize]) -> Result<Vec<Embedding>>;
    fn time_forward(&self, pixels: &HostTensor, repeats: usize) -> Result<DeviceTiming>;
    fn device_name(&self) -> String;
    fn dtype(&self) -> DType;
}

/// Device-side timings of repeated forward passes over one batch, from
/// [`Encoder::time_forward`].
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceTiming {
    /// Seconds per pass, in run order.
    pub seconds: Vec<f64>,
    /// Host seconds until each pass was fully queued (before waiting for
    /// the device). Close to `seconds` means the host, not the device, sets
    /// the pace (launch-bound small batches).
    pub queued: Vec<f64>,
    /// Whether the passes ran from a recording (CUDA graphs, small batches;
    /// see [`Backend::record`]).
    pub replayed: bool,
    /// Why this shape runs without a recording, when recording was tried
    /// and failed.
    pub record_failure: Option<String>,
    /// Device memory high-water mark over the passes (weights included),
    /// where the backend keeps count; `None` on the CPU.
    pub peak_bytes: Option<u64>,
}

struct Loaded<B: Backend> {
    backend: B,
    model: Model<B>,
    dtype: DType,
    recorder: Recorder<B>,
}

impl<B: Backend> Runner for Loaded<B> {
    fn forward(&self, groups: &[HostTensor], keep: &[usize]) -> Result<Vec<Embedding>> {
        let be = &self.backend;
        // Pixels enter in the storage dtype, as `pixel_values.to(dtype)` does in HF.
        let mut pass = self
            .recorder
            .prepare(be, &self.model, self.dtype, groups, keep)?;
        let outputs = pass.run()?;
        let host = |t: &B::Tensor| be.download_f32(t);
        outputs
            .iter()
            .map(|o| {
                let summary = match &o.summary {
                    Some(s) => {
                        let s = host(s)?;
                        let n = s.numel();
                        Some(s.reshape(vec![n])?)
                    }
                    None => None,
                };
                Ok(Embedding {
                    last_hidden_state: host(&o.last_hidden_state)?,
                    summary,
                    features: o.features.as_ref().map(host).transpose()?,
                    intermediates: o.intermediates.iter().map(host).collect::<Result<_>>()?,
                    grid: o.grid,
                    dtype: self.dtype,
                    overflow: None,
                })
            })
            .collect()
    }

    fn time_forward(&self, pixels: &HostTensor, repeats: usize) -> Result<DeviceTiming> {
        let be = &self.backend;
        let mut pass = self.recorder.prepare(
            be,
            &self.model,
            self.dtype,
            std::slice::from_ref(pixels),
            &[],
        )?;
        be.synchronize()?;
        be.reset_peak_memory();
        let mut seconds = Vec::with_capacity(repeats);
        let mut queued = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let start = std::time::Instant::now();
            let outputs = pass.run()?;
            queued.push(start.elapsed().as_secs_f64());
            be.synchronize()?;
            seconds.push(start.elapsed().as_secs_f64());
            drop(outputs);
        }
        Ok(DeviceTiming {
            seconds,
            queued,
            replayed: pass.replays(),
            record_failure: pass.record_failure(),
            peak_bytes: be.memory().map(|m| m.peak_bytes),
        })
    }

    fn device_name(&self) -> String {
        self.backend.name()
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
}

/// Loads the model described by `spec` from `dir` onto `device` as `dtype`.
fn build_runner(
    ckpt: &Checkpoint,
    dir: &Path,
    spec: &ModelSpec,
    device: Device,
    dtype: DType,
) -> Result<Box<dyn Runner>> {
    let map: KeyMap = match spec {
        ModelSpec::Radio(_) => radio::KEYS,
        ModelSpec::InternVit(_) => internvit::KEYS,
    };
    Ok(match device {
        Device::Cpu => load_on(CpuBackend::new(), ckpt, dir, map, spec, dtype)?,
        #[cfg(feature = "cuda")]
        Device::Cuda(i) => load_on(
            vitrine_cuda::CudaBackend::new(i)?,
            ckpt,
            dir,
            map,
            spec,
            dtype,
        )?,
        #[cfg(feature = "hip")]
        Device::Hip(i) => load_on(
            vitrine_hip::HipBackend::new(i)?,
            ckpt,
            dir,
            map,
            spec,
            dtype,
        )?,
        #[allow(unreachable_patterns)]
        other => return Err(other.not_compiled()),
    })
}

fn load_on<B: Backend + 'static>(
    backend: B,
    ckpt: &Checkpoint,
    dir: &Path,
    map: KeyMap,
    spec: &ModelSpec,
    dtype: DType,
) -> Result<Box<dyn Runner>> {
    let model = Model::load(&Weights::new(ckpt, dir, map, &backend, dtype), spec.clone())?;
    Ok(Box::new(Loaded {
        backend,
        model,
        dtype,
        recorder: Recorder::new(),
    }))
}

/// Rows `[from, to)` of a `[N, D]` tensor as f32 `[to − from, D]`, or as a
/// vector `[D]` when `vector`.
fn rows(t: &HostTensor, from: usize, to: usize, vector: bool) -> HostTensor {
    let d = t.shape().get(1).copied().unwrap_or(0);
    let v = t.to_f32_vec();
    let (from, to) = (from.min(v.len() / d.max(1)), to.min(v.len() / d.max(1)));
    let data = v[from * d..to.max(from) * d].to_vec();
    let n = data.len();
    let shape = if vector {
        vec![n]
    } else {
        vec![n / d.max(1), d]
    };
    // The shape matches the data by construction.
    HostTensor::from_f32(shape, data).unwrap_or_else(|_| t.clone())
}

/// Images in `[b, 3, H, W]` groups (other ranks count 0: the model reports them).
fn count_images(groups: &[HostTensor]) -> usize {
    groups
        .iter()
        .map(|g| match g.shape() {
            [b, _, _, _] => *b,
            _ => 0,
        })
        .sum()
}

/// Images `[from, to)` of a `[b, ...]` tensor, in its dtype.
fn slice_images(g: &HostTensor, from: usize, to: usize) -> Result<HostTensor> {
    let per: usize = g.shape()[1..].iter().product();
    let (a, b) = (from * per, to * per);
    let data = match g.data() {
        HostData::F32(v) => HostData::F32(v[a..b].to_vec()),
        HostData::F16(v) => HostData::F16(v[a..b].to_vec()),
        HostData::BF16(v) => HostData::BF16(v[a..b].to_vec()),
    };
    let mut shape = g.shape().to_vec();
    shape[0] = to - from;
    HostTensor::new(shape, data)
}

/// Splits rank-4 groups before image `at` (counted across groups).
fn split_groups(groups: &[HostTensor], at: usize) -> Result<(Vec<HostTensor>, Vec<HostTensor>)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut seen = 0;
    for g in groups {
        let n = g.shape()[0];
        if seen + n <= at {
            a.push(g.clone());
        } else if seen >= at {
            b.push(g.clone());
        } else {
            a.push(slice_images(g, 0, at - seen)?);
            b.push(slice_images(g, at - seen, n)?);
        }
        seen += n;
    }
    Ok((a, b))
}

/// Image `index` (counted across groups) as `[1, 3, H, W]`.
fn image_of(groups: &[HostTensor], index: usize) -> Option<HostTensor> {
    let mut rest = index;
    for g in groups {
        let [b, _, _, _] = g.shape()[..] else {
            continue;
        };
        if rest < b {
            return slice_images(g, rest, rest + 1).ok();
        }
        rest -= b;
    }
    None
}

/// Stacks `[1, 3, H, W]` or `[3, H, W]` images into same-size groups (in
/// order of first appearance); also returns, for each image position across
/// the groups, its index in `images`.
pub(crate) fn group_by_shape(images: &[HostTensor]) -> Result<(Vec<HostTensor>, Vec<usize>)> {
    let chw = |t: &HostTensor| -> Vec<usize> {
        match t.shape() {
            [1, c, h, w] => vec![*c, *h, *w],
            s => s.to_vec(),
        }
    };
    let mut keys: Vec<Vec<usize>> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, t) in images.iter().enumerate() {
        let k = chw(t);
        match keys.iter().position(|x| *x == k) {
            Some(g) => members[g].push(i),
            None => {
                keys.push(k);
                members.push(vec![i]);
            }
        }
    }
    let mut groups = Vec::with_capacity(members.len());
    for (k, m) in keys.iter().zip(&members) {
        let items = m
            .iter()
            .map(|&i| images[i].clone().reshape(k.clone()))
            .collect::<Result<Vec<_>>>()?;
        groups.push(stack(&items.iter().collect::<Vec<_>>())?);
    }
    Ok((groups, members.into_iter().flatten().collect()))
}

/// The first non-finite output tensor of an embedding, described.
fn non_finite_outputs(e: &Embedding) -> Option<numerics::NonFinite> {
    std::iter::once(&e.last_hidden_state)
        .chain(e.summary.iter())
        .chain(e.features.iter())
        .chain(e.intermediates.iter())
        .find_map(numerics::non_finite)
}

/// `N non-finite values (...); first non-finite after block B of D`.
fn describe_attempt(a: &OverflowRetry) -> String {
    match a.block {
        Some(b) => format!(
            "{}; first non-finite after block {b} of {}",
            a.non_finite, a.depth
        ),
        None => a.non_finite.clone(),
    }
}

/// A copy of an error for each image of a batch that failed as a whole
/// (`Error` is not `Clone`: it can hold an `io::Error`).
pub(crate) fn copy_error(e: &Error) -> Error {
    match e {
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
        Error::DeviceUnavailable(s) => Error::DeviceUnavailable(s.clone()),
        Error::Backend(s) => Error::Backend(s.clone()),
        Error::OutOfMemory {
            device,
            requested,
            detail,
        } => Error::OutOfMemory {
            device: device.clone(),
            requested: *requested,
            detail: detail.clone(),
        },
        other => Error::Backend(other.to_string()),
    }
}

/// A ViT image encoder loaded on a device.
///
/// ```no_run
/// use vitrine::{Device, DType, Encoder};
/// use vitrine_core::HostTensor;
///
/// let enc = Encoder::from_dir("tests/fixtures/models/radio_v4".as_ref(), Device::Cpu, DType::F32)?;
/// let pixels = HostTensor::from_f32(vec![1, 3, 32, 32], vec![0.5; 3 * 32 * 32])?;
/// let out = enc.forward_pixels(&pixels)?;
/// println!("summary has {} values", out[0].summary.as_ref().map_or(0, |s| s.numel()));
/// # Ok::<(), vitrine_core::Error>(())
/// ```
pub struct Encoder {
    runner: Box<dyn Runner>,
    spec: ModelSpec,
    dtype: DType,
    report: LoadReport,
    preprocess: PreprocessConfig,
    source: ModelSource,
    dir: PathBuf,
    device: Device,
    max_activation_bytes: Option<u64>,
    overflow_policy: OverflowPolicy,
    /// Models at the retry dtypes of [`OverflowPolicy::Retry`], loaded on the
    /// first overflow.
    retry_runners: Mutex<Vec<(DType, Arc<dyn Runner>)>>,
    /// Test hook: forward passes over more than this many images fail with
    /// [`Error::OutOfMemory`].
    fault_oom_above_images: Option<usize>,
    oom_splits: AtomicU64,
}

// The encoder is shared by reference across threads (one model, many callers).
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Encoder>();
};

impl Encoder {
    /// Loads a model directory (`config.json` + safetensors, any supported
    /// layout) onto `device`, storing weights and activations as `dtype`.
    pub fn from_dir(dir: &Path, device: Device, dtype: DType) -> Result<Self> {
        let ckpt = Checkpoint::open(dir)?;
        let spec = config::resolve(dir, &ckpt)?;
        let runner = build_runner(&ckpt, dir, &spec, device, dtype)?;
        let report = LoadReport {
            unused_tensors: ckpt.unused(),
        };
        let preprocess = PreprocessConfig::for_model(dir, &spec)?;
        Ok(Self {
            runner,
            spec,
            dtype,
            report,
            preprocess,
            source: ModelSource::Local,
            dir: dir.to_path_buf(),
            device,
            // On the CPU, activations live in host memory: refuse what cannot
            // fit in it. Device backends report their own out-of-memory.
            max_activation_bytes: match device {
                Device::Cpu => numerics::host_memory_bytes(),
                #[allow(unreachable_patterns)]
                _ => None,
            },
            overflow_policy: OverflowPolicy::Error,
            retry_runners: Mutex::new(Vec::new()),
            fault_oom_above_images: None,
            oom_splits: AtomicU64::new(0),
        })
    }

    /// Loads a model by hub id (`nvidia/C-RADIOv4-H`) or local directory,
    /// with hub settings from the environment (`HF_HOME`, `HF_HUB_CACHE`,
    /// `HF_HUB_OFFLINE`, `HF_TOKEN`; see [`crate::hub`]).
    ///
    /// ```
    /// use vitrine::{DType, Device, Encoder};
    ///
    /// let enc = Encoder::from_pretrained("../../tests/fixtures/models/radio_v4", Device::Cpu, DType::F32)?;
    /// let out = enc.encode_images(["../../assets/images/gradient.png", "../../assets/images/photo.jpg"]);
    /// let first = out[0].as_ref().expect("decodes");
    /// assert_eq!(first.grid, (6, 8)); // 64x48 -> 32x24 pixels -> 8x6 patches of 4
    /// assert_eq!(enc.summary_of(first).numel(), 2 * 48); // two cls tokens of width 48
    /// # Ok::<(), vitrine::Error>(())
    /// ```
    pub fn from_pretrained(id_or_dir: &str, device: Device, dtype: DType) -> Result<Self> {
        Self::from_pretrained_with(id_or_dir, device, dtype, &HubOptions::from_env())
    }

    /// [`Self::from_pretrained`] with explicit hub options (revision, token,
    /// cache directory, offline mode, progress bar).
    pub fn from_pretrained_with(
        id_or_dir: &str,
        device: Device,
        dtype: DType,
        hub: &HubOptions,
    ) -> Result<Self> {
        let resolved = hub::resolve_model(id_or_dir, hub)?;
        let mut enc = Self::from_dir(&resolved.dir, device, dtype)?;
        enc.source = resolved.source;
        Ok(enc)
    }

    /// Runs a batch of same-size images `[b, 3, H, W]` and also returns the
    /// outputs of the blocks in `indices` (0-based, timm's
    /// `forward_intermediates`), each `[tokens, D]` in
    /// [`Embedding::intermediates`], in the order asked.
    pub fn forward_intermediates(
        &self,
        pixels: &HostTensor,
        indices: &[usize],
    ) -> Result<Vec<Embedding>> {
        self.forward_groups(std::slice::from_ref(pixels), indices)
    }

    /// The preprocessing this encoder applies to images.
    pub fn preprocess_config(&self) -> &PreprocessConfig {
        &self.preprocess
    }

    /// Replaces the preprocessing (e.g. another RADIO resolution:
    /// `enc.preprocess_config().clone().with_resolution(768)?`).
    pub fn set_preprocess_config(&mut self, config: PreprocessConfig) {
        self.preprocess = config;
    }

    /// Turns one image into this model's `[3, H, W]` input.
    pub fn preprocess(&self, image: &RgbImage) -> Result<HostTensor> {
        self.preprocess.apply(image)
    }

    /// Where the model was loaded from.
    pub fn source(&self) -> &ModelSource {
        &self.source
    }

    /// Family name: `radio` or `internvit`.
    pub fn family(&self) -> &'static str {
        match self.spec {
            ModelSpec::Radio(_) => "radio",
            ModelSpec::InternVit(_) => "internvit",
        }
    }

    /// Prefix tokens before the patch tokens (RADIO: cls + registers;
    /// InternViT: its cls token).
    pub fn num_prefix_tokens(&self) -> usize {
        match &self.spec {
            ModelSpec::Radio(s) => s.num_cls + s.num_registers,
            ModelSpec::InternVit(_) => 1,
        }
    }

    /// The image-level vector: RADIO's `summary` (chosen cls tokens
    /// concatenated), InternViT's cls token (OpenGVLab's `pooler_output`).
    pub fn summary_of(&self, e: &Embedding) -> HostTensor {
        match &e.summary {
            Some(s) => s.clone(),
            None => rows(&e.last_hidden_state, 0, 1, true),
        }
    }

    /// The patch tokens `[h·w, D]`, row-major (prefix tokens removed).
    pub fn features_of(&self, e: &Embedding) -> HostTensor {
        match &e.features {
            Some(f) => f.clone(),
            None => {
                let n = e.last_hidden_state.shape()[0];
                rows(
                    &e.last_hidden_state,
                    self.num_prefix_tokens().min(n),
                    n,
                    false,
                )
            }
        }
    }

    /// Times `repeats` forward passes over `pixels` (`[b, 3, H, W]`, fp32)
    /// on the device, as a PyTorch benchmark times `model(pixel_values)`
    /// with CUDA events: the pixels are uploaded once beforehand, each pass
    /// ends when the device is idle, and the outputs stay on the device
    /// (no download, no NaN check). For benchmarks; use
    /// [`Encoder::forward_pixels`] for results.
    pub fn time_forward(&self, pixels: &HostTensor, repeats: usize) -> Result<DeviceTiming> {
        // The same refusal up front as a forward call (activation limit).
        self.check_request(std::slice::from_ref(pixels), &[], self.dtype)?;
        self.runner.time_forward(pixels, repeats)
    }

    /// Runs a batch of same-size images `[b, 3, H, W]` (fp32). RADIO takes RGB
    /// in [0, 1] and normalises inside; InternViT takes normalised pixels.
    pub fn forward_pixels(&self, pixels: &HostTensor) -> Result<Vec<Embedding>> {
        self.forward_groups(std::slice::from_ref(pixels), &[])
    }

    /// Runs groups of images of different sizes in one packed forward pass;
    /// results come back in input order. `intermediates` lists blocks
    /// (0-based) whose outputs to return as well.
    ///
    /// Every output is checked for NaN/Inf (see [`OverflowPolicy`] for f16
    /// overflow). A pass that runs out of device memory is split in two
    /// halves, each retried once. All or nothing: the first image that fails
    /// fails the call; [`Self::encode_images_with`] keeps per-image results.
    pub fn forward_groups(
        &self,
        groups: &[HostTensor],
        intermediates: &[usize],
    ) -> Result<Vec<Embedding>> {
        self.forward_each(groups, intermediates, &|i| format!("image {i}"))?
            .into_iter()
            .collect()
    }

    /// What to do when an f16 pass overflows (default: an error).
    pub fn overflow_policy(&self) -> OverflowPolicy {
        self.overflow_policy
    }

    /// Sets what to do when an f16 pass gives an image NaN/Inf outputs: fail
    /// it (the default) or run it again in bf16 or f32 (see
    /// [`OverflowPolicy::Retry`] for the memory this costs). Has no effect on
    /// an encoder loaded as bf16 or f32. `Retry(F16)` is refused.
    pub fn set_overflow_policy(&mut self, policy: OverflowPolicy) -> Result<()> {
        if policy == OverflowPolicy::Retry(DType::F16) {
            return Err(Error::InvalidArgument(
                "an f16 overflow cannot be retried in f16: retry in bf16 or f32".into(),
            ));
        }
        self.overflow_policy = policy;
        Ok(())
    }

    /// How many forward passes ran out of device memory and were split in two
    /// (and retried) since this encoder was loaded.
    pub fn oom_splits(&self) -> u64 {
        self.oom_splits.load(Ordering::Relaxed)
    }

    /// Test hook, not for production use: every forward pass over more than
    /// `limit` images fails with [`Error::OutOfMemory`] as a device allocation
    /// would, so the split-and-retry path can be tested without a GPU. `None`
    /// (the default) turns it off and leaves forward passes untouched.
    #[doc(hidden)]
    pub fn set_fault_oom_above_images(&mut self, limit: Option<usize>) {
        self.fault_oom_above_images = limit;
    }

    /// Runs `groups` and checks each image's outputs, applying the overflow
    /// policy: one result per image, in order across `groups`; `label(i)`
    /// names image `i` in messages. `Err` when the whole call fails (bad
    /// arguments, a device error, out of memory after the split).
    pub(crate) fn forward_each(
        &self,
        groups: &[HostTensor],
        keep: &[usize],
        label: &dyn Fn(usize) -> String,
    ) -> Result<Vec<Result<Embedding>>> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        self.check_request(groups, keep, self.dtype)?;
        let mut results = self.run_split(&*self.runner, groups, keep)?;
        let bad: Vec<(usize, String)> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let nf = non_finite_outputs(r.as_ref().ok()?)?;
                Some((i, nf.to_string()))
            })
            .collect();
        if bad.is_empty() {
            return Ok(results);
        }
        let depth = self.depth();
        let firsts: Vec<OverflowRetry> = bad
            .iter()
            .map(|(i, nf)| OverflowRetry {
                from: self.dtype,
                block: self.first_non_finite_block(&*self.runner, groups, *i),
                depth,
                non_finite: nf.clone(),
            })
            .collect();
        let retry = match self.overflow_policy {
            OverflowPolicy::Retry(d) if self.dtype == DType::F16 && d != DType::F16 => d,
            _ => {
                let hint = match self.dtype {
                    DType::F16 => {
                        " (f16 activations overflow past 65504: use bf16 or f32, or retry such \
                         images with `embed --on-f16-overflow retry-bf16` / \
                         `Encoder::set_overflow_policy`)"
                    }
                    _ => "",
                };
                for ((i, _), first) in bad.iter().zip(&firsts) {
                    results[*i] = Err(Error::Backend(format!(
                        "{}: the output has {}{hint}",
                        label(*i),
                        describe_attempt(first)
                    )));
                }
                return Ok(results);
            }
        };
        let indices: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
        let both = |first: &OverflowRetry, second: &str| {
            format!(
                "the {} output has {}; the retry in {retry} failed too: {second}",
                first.from,
                describe_attempt(first)
            )
        };
        match self.retry_images(retry, groups, &indices, keep) {
            Ok(outs) => {
                for ((i, first), out) in indices.iter().zip(firsts).zip(outs) {
                    results[*i] = match out {
                        Ok(mut e) => {
                            e.overflow = Some(first);
                            Ok(e)
                        }
                        Err(why) => Err(Error::Backend(format!(
                            "{}: {}",
                            label(*i),
                            both(&first, &why)
                        ))),
                    };
                }
            }
            Err(e) => {
                for (i, first) in indices.iter().zip(&firsts) {
                    results[*i] = Err(Error::Backend(format!(
                        "{}: {}",
                        label(*i),
                        both(first, &e.to_string())
                    )));
                }
            }
        }
        Ok(results)
    }

    /// Checks a request before any work: block indices, and the activation
    /// estimate at `dtype` against the limit (refused up front).
    fn check_request(&self, groups: &[HostTensor], keep: &[usize], dtype: DType) -> Result<()> {
        let depth = self.depth();
        if let Some(bad) = keep.iter().find(|&&i| i >= depth) {
            return Err(Error::InvalidArgument(format!(
                "block {bad} does not exist (the model has {depth})"
            )));
        }
        let need = self.groups_activation_bytes(groups, dtype);
        if let Some(limit) = self.max_activation_bytes {
            if need > limit {
                let sizes: Vec<String> =
                    groups.iter().map(|g| format!("{:?}", g.shape())).collect();
                return Err(Error::InvalidArgument(format!(
                    "pixels {} need about {} of activations, over the limit of {}; \
                     use fewer or smaller images per batch",
                    sizes.join(" + "),
                    human_bytes(need),
                    human_bytes(limit)
                )));
            }
        }
        Ok(())
    }

    fn groups_activation_bytes(&self, groups: &[HostTensor], dtype: DType) -> u64 {
        let mut need: u64 = 0;
        for g in groups {
            // Wrong ranks are reported by the model with the shape.
            if let [b, _, h, w] = g.shape() {
                need = need.saturating_add(self.activation_bytes_at(dtype, *b, *h, *w));
            }
        }
        need
    }

    /// One forward pass on `runner` (with the out-of-memory test hook).
    fn run_once(
        &self,
        runner: &dyn Runner,
        groups: &[HostTensor],
        keep: &[usize],
    ) -> Result<Vec<Embedding>> {
        if let Some(limit) = self.fault_oom_above_images {
            let n = count_images(groups);
            if n > limit {
                return Err(Error::out_of_memory(
                    runner.device_name(),
                    self.groups_activation_bytes(groups, runner.dtype()),
                    format!(
                        "fault injected by the test hook: a forward pass of {n} images \
                         (the hook allows {limit})"
                    ),
                ));
            }
        }
        runner.forward(groups, keep)
    }

    /// A forward pass that, if it runs out of device memory, is split into two
    /// halves, each retried once (a half does not split again). Results per
    /// image: a half that succeeds keeps its images when the other fails.
    fn run_split(
        &self,
        runner: &dyn Runner,
        groups: &[HostTensor],
        keep: &[usize],
    ) -> Result<Vec<Result<Embedding>>> {
        let n = count_images(groups);
        let dtype = runner.dtype();
        let first = match self.run_once(runner, groups, keep) {
            Ok(outs) => return Ok(outs.into_iter().map(Ok).collect()),
            Err(e) => e,
        };
        let splittable = n >= 2 && groups.iter().all(|g| g.shape().len() == 4);
        let Error::OutOfMemory {
            device,
            requested,
            detail,
        } = first
        else {
            return Err(first);
        };
        if !splittable {
            return Err(Error::OutOfMemory {
                device,
                requested,
                detail: format!(
                    "a batch of {n} image{} in {dtype}: {detail}",
                    if n == 1 { "" } else { "s" }
                ),
            });
        }
        self.oom_splits.fetch_add(1, Ordering::Relaxed);
        let at = n.div_ceil(2);
        let (a, b) = split_groups(groups, at)?;
        let halves = [(a, at), (b, n - at)];
        let runs: Vec<Result<Vec<Embedding>>> = halves
            .iter()
            .map(|(h, _)| self.run_once(runner, h, keep))
            .collect();
        let split = format!(
            "a batch of {n} images in {dtype} ran out of memory ({detail}) and was split into \
             {at} + {} and retried once",
            n - at
        );
        if runs
            .iter()
            .all(|r| matches!(r, Err(e) if e.is_out_of_memory()))
        {
            let inner = match &runs[0] {
                Err(Error::OutOfMemory { detail, .. }) => detail.clone(),
                _ => String::new(),
            };
            return Err(Error::OutOfMemory {
                device,
                requested,
                detail: format!(
                    "{split}; both halves ran out of memory too ({inner}); \
                     use a smaller batch"
                ),
            });
        }
        let mut out = Vec::with_capacity(n);
        for ((_, size), run) in halves.iter().zip(runs) {
            match run {
                Ok(v) => out.extend(v.into_iter().map(Ok)),
                Err(e) => {
                    for _ in 0..*size {
                        out.push(Err(match &e {
                            Error::OutOfMemory {
                                device,
                                requested,
                                detail,
                            } => Error::OutOfMemory {
                                device: device.clone(),
                                requested: *requested,
                                detail: format!(
                                    "{split}; the half of {size} ran out of memory too ({detail})"
                                ),
                            },
                            other => copy_error(other),
                        }));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Runs images `indices` (across `groups`) again in `dtype`, together.
    /// Per image: the outputs (checked), or why the retry failed.
    fn retry_images(
        &self,
        dtype: DType,
        groups: &[HostTensor],
        indices: &[usize],
        keep: &[usize],
    ) -> Result<Vec<std::result::Result<Embedding, String>>> {
        let singles = indices
            .iter()
            .map(|&i| {
                image_of(groups, i).ok_or_else(|| Error::Backend(format!("image {i} not found")))
            })
            .collect::<Result<Vec<_>>>()?;
        let (rgroups, order) = group_by_shape(&singles)?;
        self.check_request(&rgroups, keep, dtype)?;
        let runner = self.retry_runner(dtype)?;
        let outs = self.run_split(&*runner, &rgroups, keep)?;
        let depth = self.depth();
        let mut slots: Vec<Option<std::result::Result<Embedding, String>>> =
            (0..indices.len()).map(|_| None).collect();
        for (pos, (&k, r)) in order.iter().zip(outs).enumerate() {
            slots[k] = Some(match r {
                Ok(e) => match non_finite_outputs(&e) {
                    None => Ok(e),
                    Some(nf) => Err(format!(
                        "the output has {}",
                        describe_attempt(&OverflowRetry {
                            from: dtype,
                            block: self.first_non_finite_block(&*runner, &rgroups, pos),
                            depth,
                            non_finite: nf.to_string(),
                        })
                    )),
                },
                Err(e) => Err(e.to_string()),
            });
        }
        Ok(slots
            .into_iter()
            .map(|s| s.unwrap_or_else(|| Err("the model returned too few outputs".into())))
            .collect())
    }

    /// The model at `dtype` for overflow retries, loaded on first use.
    fn retry_runner(&self, dtype: DType) -> Result<Arc<dyn Runner>> {
        let mut cache = self
            .retry_runners
            .lock()
            .map_err(|_| Error::Backend("a thread loading the retry model panicked".into()))?;
        if let Some((_, r)) = cache.iter().find(|(d, _)| *d == dtype) {
            return Ok(Arc::clone(r));
        }
        let ckpt = Checkpoint::open(&self.dir)?;
        let runner: Arc<dyn Runner> = Arc::from(build_runner(
            &ckpt,
            &self.dir,
            &self.spec,
            self.device,
            dtype,
        )?);
        cache.push((dtype, Arc::clone(&runner)));
        Ok(runner)
    }

    /// Runs image `index` (across `groups`) alone on `runner` with every
    /// block's output kept, and names the first block whose output is
    /// non-finite.
    fn first_non_finite_block(
        &self,
        runner: &dyn Runner,
        groups: &[HostTensor],
        index: usize,
    ) -> Option<usize> {
        let one = image_of(groups, index)?;
        let all: Vec<usize> = (0..self.depth()).collect();
        let out = self.run_once(runner, &[one], &all).ok()?;
        out.first()?
            .intermediates
            .iter()
            .position(|t| numerics::non_finite(t).is_some())
    }

    /// A cheap upper estimate of the activation memory, in bytes, of one
    /// forward pass over `batch` images of `height`×`width` pixels: the
    /// residual stream, q/k/v, the MLP's hidden layer and the attention
    /// scores of one block in flight, at the storage dtype (scores in f32).
    pub fn activation_bytes(&self, batch: usize, height: usize, width: usize) -> u64 {
        self.activation_bytes_at(self.dtype, batch, height, width)
    }

    fn activation_bytes_at(&self, dtype: DType, batch: usize, height: usize, width: usize) -> u64 {
        let (t, heads) = match &self.spec {
            ModelSpec::Radio(s) => (&s.trunk, s.trunk.heads),
            ModelSpec::InternVit(s) => (&s.trunk, s.trunk.heads),
        };
        let p = self.patch_size().max(1) as u64;
        let tokens = (height as u64 / p)
            .saturating_mul(width as u64 / p)
            .saturating_add(self.num_prefix_tokens() as u64);
        let elem = dtype.size_in_bytes() as u64;
        let per_token = (6 * t.hidden as u64 + t.mlp_hidden as u64).saturating_mul(elem);
        let scores = (heads as u64)
            .saturating_mul(tokens)
            .saturating_mul(tokens)
            .saturating_mul(4);
        tokens
            .saturating_mul(per_token)
            .saturating_add(scores)
            .saturating_mul(batch as u64)
    }

    /// The activation budget a forward pass must fit in (see
    /// [`Self::activation_bytes`]); `None` means no limit. On the CPU it
    /// defaults to the machine's physical memory.
    pub fn max_activation_bytes(&self) -> Option<u64> {
        self.max_activation_bytes
    }

    /// Sets the activation budget; batches over it are refused up front.
    pub fn set_max_activation_bytes(&mut self, limit: Option<u64>) {
        self.max_activation_bytes = limit;
    }

    /// Reads every floating-point tensor of the checkpoint again and checks
    /// it for NaN/Inf and, when weights are stored as f16, for magnitudes past
    /// 65504. The error names the first bad tensor (sorted by name). Opt-in:
    /// it reads the whole checkpoint once more.
    pub fn check_weights(&self) -> Result<()> {
        let ckpt = Checkpoint::open(&self.dir)?;
        for name in ckpt.names() {
            let Ok(Some(t)) = ckpt.tensor(name) else {
                continue; // integer buffers
            };
            if let Some(bad) = numerics::non_finite(&t) {
                return Err(Error::checkpoint(
                    &self.dir,
                    format!("tensor `{name}` {:?} has {bad}", t.shape()),
                ));
            }
            if self.dtype == DType::F16 {
                let m = numerics::max_abs(&t);
                if m > F16_MAX {
                    return Err(Error::checkpoint(
                        &self.dir,
                        format!(
                            "tensor `{name}` holds {m:e}, past the f16 range (±65504); load in bf16 or f32"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The resolved model description.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// RADIO details, if this is a RADIO model.
    pub fn radio_spec(&self) -> Option<&RadioSpec> {
        match &self.spec {
            ModelSpec::Radio(s) => Some(s),
            ModelSpec::InternVit(_) => None,
        }
    }

    /// Number of blocks.
    pub fn depth(&self) -> usize {
        match &self.spec {
            ModelSpec::Radio(s) => s.trunk.depth,
            ModelSpec::InternVit(s) => s.trunk.depth,
        }
    }

    /// Patch size in pixels: input sides must be multiples of it.
    pub fn patch_size(&self) -> usize {
        match &self.spec {
            ModelSpec::Radio(s) => s.patch,
            ModelSpec::InternVit(s) => s.patch,
        }
    }

    /// Storage dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Name of the device the model runs on.
    pub fn device_name(&self) -> String {
        self.runner.device_name()
    }

    /// What loading left unused.
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }
}
