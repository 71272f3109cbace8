//! The public entry point: a loaded model on one device, in one dtype.

use std::path::Path;

use vitrine_core::{Backend, DType, Error, HostTensor, Result};
use vitrine_cpu::CpuBackend;

use crate::checkpoint::Checkpoint;
use crate::config::{self, ModelSpec};
use crate::device::Device;
use crate::hub::{self, HubOptions, ModelSource};
use crate::images::RgbImage;
use crate::models::radio::RadioSpec;
use crate::models::{internvit, radio, Model};
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
}

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
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let depth = self.depth();
        if let Some(bad) = intermediates.iter().find(|&&i| i >= depth) {
            return Err(Error::InvalidArgument(format!(
                "block {bad} does not exist (the model has {depth})"
            )));
        }
        self.runner.forward(groups, intermediates)
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
