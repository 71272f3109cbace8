//! The public entry point: a loaded model on one device, in one dtype.

use std::path::{Path, PathBuf};

use vitrine_core::{Backend, DType, Error, HostTensor, Result};
use vitrine_cpu::CpuBackend;

use crate::checkpoint::Checkpoint;
use crate::config::{self, ModelSpec};
use crate::device::Device;
use crate::hub::{self, HubOptions, ModelSource};
use crate::images::RgbImage;
use crate::models::radio::RadioSpec;
use crate::models::{internvit, radio, Model};
use crate::numerics::{self, human_bytes, F16_MAX};
use crate::preprocess::PreprocessConfig;
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
}

/// What loading left unused (adaptor heads, teacher summaries...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Checkpoint tensors the model did not read.
    pub unused_tensors: Vec<String>,
}

trait Runner: Send + Sync {
    fn forward(&self, groups: &[HostTensor], keep: &[usize]) -> Result<Vec<Embedding>>;
    fn device_name(&self) -> String;
}

struct Loaded<B: Backend> {
    backend: B,
    model: Model<B>,
    dtype: DType,
}

impl<B: Backend> Runner for Loaded<B> {
    fn forward(&self, groups: &[HostTensor], keep: &[usize]) -> Result<Vec<Embedding>> {
        let be = &self.backend;
        // Pixels enter in the storage dtype, as `pixel_values.to(dtype)` does in HF.
        let uploaded = groups
            .iter()
            .map(|g| be.upload(g, self.dtype))
            .collect::<Result<Vec<_>>>()?;
        let outputs = self.model.forward(be, &uploaded, keep)?;
        let host = |t: &B::Tensor| be.download(t).map(|h| h.to_dtype(DType::F32));
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
                })
            })
            .collect()
    }

    fn device_name(&self) -> String {
        self.backend.name()
    }
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
    max_activation_bytes: Option<u64>,
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
        let map: KeyMap = match spec {
            ModelSpec::Radio(_) => radio::KEYS,
            ModelSpec::InternVit(_) => internvit::KEYS,
        };
        let runner: Box<dyn Runner> = match device {
            Device::Cpu => load_on(CpuBackend::new(), &ckpt, dir, map, &spec, dtype)?,
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => load_on(
                vitrine_cuda::CudaBackend::new(i)?,
                &ckpt,
                dir,
                map,
                &spec,
                dtype,
            )?,
            #[cfg(feature = "hip")]
            Device::Hip(i) => load_on(
                vitrine_hip::HipBackend::new(i)?,
                &ckpt,
                dir,
                map,
                &spec,
                dtype,
            )?,
            #[allow(unreachable_patterns)]
            other => return Err(other.not_compiled()),
        };
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
            // On the CPU, activations live in host memory: refuse what cannot
            // fit in it. Device backends report their own out-of-memory.
            max_activation_bytes: match device {
                Device::Cpu => numerics::host_memory_bytes(),
                #[allow(unreachable_patterns)]
                _ => None,
            },
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

    /// Runs a batch of same-size images `[b, 3, H, W]` (fp32). RADIO takes RGB
    /// in [0, 1] and normalises inside; InternViT takes normalised pixels.
    pub fn forward_pixels(&self, pixels: &HostTensor) -> Result<Vec<Embedding>> {
        self.forward_groups(std::slice::from_ref(pixels), &[])
    }

    /// Runs groups of images of different sizes in one packed forward pass;
    /// results come back in input order. `intermediates` lists blocks
    /// (0-based) whose outputs to return as well.
    pub fn forward_groups(
        &self,
        groups: &[HostTensor],
        intermediates: &[usize],
    ) -> Result<Vec<Embedding>> {
        let outs = self.forward_groups_unchecked(groups, intermediates)?;
        for (i, e) in outs.iter().enumerate() {
            self.check_outputs(e, groups, i, &format!("image {i}"))?;
        }
        Ok(outs)
    }

    /// [`Self::forward_groups`] without the output check (callers check per image).
    pub(crate) fn forward_groups_unchecked(
        &self,
        groups: &[HostTensor],
        intermediates: &[usize],
    ) -> Result<Vec<Embedding>> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let depth = self.depth();
        if let Some(bad) = intermediates.iter().find(|&&i| i >= depth) {
            return Err(Error::InvalidArgument(format!(
                "block {bad} does not exist (the model has {depth})"
            )));
        }
        let mut need: u64 = 0;
        for g in groups {
            // Wrong ranks are reported by the model with the shape.
            if let [b, _, h, w] = g.shape() {
                need = need.saturating_add(self.activation_bytes(*b, *h, *w));
            }
        }
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
        self.runner.forward(groups, intermediates)
    }

    /// Checks one output for NaN/Inf. On a hit, runs that image alone again
    /// with every block's output kept to name the first block that went
    /// non-finite. `index` is the image's position across `groups`.
    pub(crate) fn check_outputs(
        &self,
        e: &Embedding,
        groups: &[HostTensor],
        index: usize,
        label: &str,
    ) -> Result<()> {
        let bad = std::iter::once(&e.last_hidden_state)
            .chain(e.summary.iter())
            .chain(e.features.iter())
            .chain(e.intermediates.iter())
            .find_map(numerics::non_finite);
        let Some(bad) = bad else {
            return Ok(());
        };
        let block = self.first_non_finite_block(groups, index);
        let at = match block {
            Some(b) => format!("; first non-finite after block {b} of {}", self.depth()),
            None => String::new(),
        };
        let hint = match self.dtype {
            DType::F16 => " (f16 activations overflow past 65504: try bf16 or f32)",
            _ => "",
        };
        Err(Error::Backend(format!(
            "{label}: the output has {bad}{at}{hint}"
        )))
    }

    fn first_non_finite_block(&self, groups: &[HostTensor], index: usize) -> Option<usize> {
        // Find the image's group and row.
        let mut rest = index;
        let (g, row) = groups.iter().find_map(|g| {
            let b = g.shape().first().copied().unwrap_or(0);
            if rest < b {
                Some((g, rest))
            } else {
                rest -= b;
                None
            }
        })?;
        let [_, c, h, w] = g.shape()[..] else {
            return None;
        };
        let n = c * h * w;
        let v = g.to_f32_vec();
        let one =
            HostTensor::from_f32(vec![1, c, h, w], v[row * n..(row + 1) * n].to_vec()).ok()?;
        let all: Vec<usize> = (0..self.depth()).collect();
        let out = self.runner.forward(&[one], &all).ok()?;
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
        let (t, heads) = match &self.spec {
            ModelSpec::Radio(s) => (&s.trunk, s.trunk.heads),
            ModelSpec::InternVit(s) => (&s.trunk, s.trunk.heads),
        };
        let p = self.patch_size().max(1) as u64;
        let tokens = (height as u64 / p)
            .saturating_mul(width as u64 / p)
            .saturating_add(self.num_prefix_tokens() as u64);
        let elem = match self.dtype {
            DType::F32 => 4,
            _ => 2,
        };
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
