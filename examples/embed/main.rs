//! `embed`: images (or pixel tensors) in, embeddings out, with a RADIO or
//! InternViT model from the hub or a local directory.
//!
//! ```text
//! cargo run --release --example embed -- --model tests/fixtures/models/radio_v4 \
//!     assets/images --output embeddings.safetensors
//! cargo run --release --example embed -- --model nvidia/C-RADIOv4-H photos/ \
//!     --output out.npz --outputs summary,features --batch-size 16
//! ```
//!
//! Positional arguments are image files and/or directories (searched
//! recursively for .jpg/.jpeg/.png/.webp, sorted). The output has one row per
//! embedded image, in input order, with the paths recorded; see
//! `examples/embed/README.md` and `vitrine::output` for the layouts. An image
//! that cannot be read is reported and skipped, the others are embedded, and
//! the exit code is 2.
//!
//! Tensor mode (`--pixels IN.safetensors`) is unchanged: `pixel_values` f32
//! `[B, 3, H, W]`, exactly what the HF model's forward takes (RADIO: RGB in
//! [0, 1]; InternViT: normalised); the output holds f32 `last_hidden_state`
//! `[B, N, D]` and, for RADIO, `summary` `[B, S]` and `features` `[B, h·w, D]`.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vitrine::hub::ModelSource;
use vitrine::io::{read_tensor, stack, write_tensors};
use vitrine::output::{Matrix, NamedOutput, OutputFormat, OutputSet};
use vitrine::preprocess::ResizeBackend;
use vitrine::{
    auto_device, Batching, DType, Device, EncodeOptions, Encoder, HostTensor, HubOptions,
    ImageSource, OverflowPolicy,
};

/// Exit code when some inputs could not be embedded.
const EXIT_PARTIAL: u8 = 2;
/// Progress bars appear from this many images on (and only on a terminal).
const PROGRESS_MIN_IMAGES: usize = 16;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Embed images with a RADIO or InternViT model (hub id or local directory)"
)]
struct Args {
    /// Model: a hub id (`nvidia/C-RADIOv4-H`, `OpenGVLab/InternViT-300M-448px-V2_5`)
    /// or a directory with config.json + safetensors weights.
    #[arg(long)]
    model: String,
    /// Image files and/or directories (searched recursively, sorted).
    #[arg(value_name = "IMAGES_OR_DIRS")]
    inputs: Vec<PathBuf>,
    /// Tensor mode: a safetensors file with `pixel_values` f32 [B, 3, H, W].
    #[arg(long, conflicts_with = "inputs")]
    pixels: Option<PathBuf>,
    /// Output file; the format follows the extension (.safetensors, .npy, .npz, .jsonl).
    #[arg(long)]
    output: PathBuf,
    /// Output format, overriding the extension: safetensors, npy, npz or jsonl.
    #[arg(long)]
    format: Option<OutputFormat>,
    /// What to write, comma-separated: summary, features, last_hidden_state.
    #[arg(long, value_delimiter = ',', default_value = "summary")]
    outputs: Vec<String>,
    /// Also write the outputs of these blocks (0-based, comma-separated), as
    /// `intermediate_<k>` [tokens, D] (timm's forward_intermediates).
    #[arg(long, value_delimiter = ',')]
    intermediates: Vec<usize>,
    /// L2-normalise every written vector (each summary, each token).
    #[arg(long)]
    normalize: bool,
    /// RADIO: the long side in pixels (default: the model's preferred resolution).
    #[arg(long)]
    resolution: Option<usize>,
    /// Which reference resampler to reproduce: torchvision (transformers 5's
    /// default processors) or pil (the `...Pil` processors, original pipelines).
    #[arg(long, default_value = "torchvision")]
    resize_backend: ResizeBackend,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Batch same-size images together instead of packing mixed sizes into one pass.
    #[arg(long)]
    group_by_size: bool,
    /// Storage dtype of weights and activations: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: DType,
    /// Device: auto, cpu, cuda[:N] or hip[:N]. Default: auto for images, cpu
    /// for --pixels. Only `auto` may fall back (and says so); an explicit
    /// device that is unavailable is an error.
    #[arg(long)]
    device: Option<String>,
    /// Hub revision: branch, tag or commit.
    #[arg(long)]
    revision: Option<String>,
    /// Hub token (default: $HF_TOKEN, then the token file under $HF_HOME).
    #[arg(long)]
    token: Option<String>,
    /// Hub cache directory (default: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Read every weight once more after loading and refuse NaN/Inf (and,
    /// with --dtype f16, values past ±65504) before embedding anything.
    #[arg(long)]
    check_weights: bool,
    /// With --dtype f16, what to do with an image whose activations overflow
    /// f16 (NaN/Inf outputs): `error` (skip it, naming the first bad block),
    /// `retry-bf16` or `retry-f32` (run it again in that dtype, with a warning
    /// per image; the weights at that dtype are loaded on the first overflow,
    /// a second copy of the model in memory).
    #[arg(
        long,
        default_value = "error",
        value_name = "error|retry-bf16|retry-f32"
    )]
    on_f16_overflow: OverflowPolicy,
}

fn pick_device(arg: Option<&str>, default_auto: bool) -> Result<Device> {
    match arg {
        Some("auto") => {
            let (d, why) = auto_device();
            eprintln!("device: auto picked {d} ({why})");
            Ok(d)
        }
        None if default_auto => {
            let (d, why) = auto_device();
            eprintln!("device: auto picked {d} ({why})");
            Ok(d)
        }
        None => Ok(Device::Cpu),
        Some(s) => {
            let d: Device = s.parse()?;
            vitrine::probe(d)?;
            Ok(d)
        }
    }
}

fn load(args: &Args, device: Device) -> Result<Encoder> {
    let mut hub = HubOptions::from_env();
    hub.revision = args.revision.clone();
    if args.token.is_some() {
        hub.token = args.token.clone();
    }
    if args.cache_dir.is_some() {
        hub.cache_dir = args.cache_dir.clone();
    }
    hub.progress = std::io::stderr().is_terminal();
    let mut enc = Encoder::from_pretrained_with(&args.model, device, args.dtype, &hub)
        .with_context(|| format!("loading {}", args.model))?;
    enc.set_overflow_policy(args.on_f16_overflow)?;
    if args.on_f16_overflow != OverflowPolicy::Error && args.dtype != DType::F16 {
        eprintln!(
            "note: --on-f16-overflow {} has no effect with --dtype {}",
            args.on_f16_overflow, args.dtype
        );
    }
    if let ModelSource::Hub {
        repo,
        revision,
        commit,
        downloaded,
    } = enc.source()
    {
        eprintln!(
            "model: {repo}@{revision} (commit {commit}, {})",
            if *downloaded {
                "downloaded"
            } else {
                "from the hub cache"
            }
        );
    }
    if args.check_weights {
        enc.check_weights().context("checking the weights")?;
    }
    let unused = &enc.load_report().unused_tensors;
    if !unused.is_empty() {
        eprintln!(
            "warning: {} checkpoint tensors are not used by the model: {}",
            unused.len(),
            unused.join(", ")
        );
    }
    Ok(enc)
}

/// Tensor mode, as before image support: pixel_values in, stacked outputs out.
fn run_pixels(args: &Args, pixels_path: &Path) -> Result<()> {
    let start = Instant::now();
    let device = pick_device(args.device.as_deref(), false)?;
    let encoder = load(args, device)?;
    let pixels = read_tensor(pixels_path, "pixel_values")?;
    let loaded = start.elapsed();
    let out = encoder.forward_pixels(&pixels)?;
    let ran = start.elapsed() - loaded;
    if encoder.oom_splits() > 0 {
        eprintln!(
            "warning: the batch of {} images ran out of device memory; it was split in two and retried",
            out.len()
        );
    }
    for (i, e) in out.iter().enumerate() {
        if let Some(r) = &e.overflow {
            eprintln!("warning: image {i}: {r}; retried in {}", e.dtype);
        }
    }

    let collect =
        |pick: &dyn Fn(&vitrine::Embedding) -> Option<&HostTensor>| -> Result<Option<HostTensor>> {
            let items: Option<Vec<&HostTensor>> = out.iter().map(pick).collect();
            Ok(match items {
                Some(v) => Some(stack(&v)?),
                None => None,
            })
        };
    let mut tensors = Vec::new();
    if let Some(t) = collect(&|e| Some(&e.last_hidden_state))? {
        tensors.push(("last_hidden_state".to_string(), t));
    }
    if let Some(t) = collect(&|e| e.summary.as_ref())? {
        tensors.push(("summary".to_string(), t));
    }
    if let Some(t) = collect(&|e| e.features.as_ref())? {
        tensors.push(("features".to_string(), t));
    }
    let metadata = HashMap::from([
        ("model".to_string(), args.model.clone()),
        ("dtype".to_string(), args.dtype.to_string()),
        ("device".to_string(), encoder.device_name()),
    ]);
    write_tensors(&args.output, &tensors, metadata)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let shapes: Vec<String> = tensors
        .iter()
        .map(|(n, t)| format!("{n} {:?}", t.shape()))
        .collect();
    eprintln!(
        "embedded {} image(s) on {} in {} (load {:.2}s, forward {:.3}s): {}",
        out.len(),
        encoder.device_name(),
        args.dtype,
        loaded.as_secs_f64(),
        ran.as_secs_f64(),
        shapes.join(", ")
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Summary,
    Features,
    LastHiddenState,
}

fn parse_outputs(list: &[String]) -> Result<Vec<Kind>> {
    let mut kinds = Vec::new();
    for s in list {
        let k = match s.trim() {
            "summary" | "pooler_output" => Kind::Summary,
            "features" | "patch_tokens" => Kind::Features,
            "last_hidden_state" | "tokens" => Kind::LastHiddenState,
            "" => continue,
            other => {
                bail!("unknown output `{other}` (expected summary, features or last_hidden_state)")
            }
        };
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    Ok(kinds)
}

fn matrix(t: &HostTensor) -> Result<Matrix> {
    let shape = t.shape();
    let (rows, cols) = match shape {
        [d] => (1, *d),
        [r, d] => (*r, *d),
        other => bail!("unexpected output shape {other:?}"),
    };
    Ok(Matrix::new(rows, cols, t.to_f32_vec())?)
}

/// How an image-mode run ended (the exit code).
enum Outcome {
    /// Every image embedded.
    Complete,
    /// Some images skipped (reported), the rest written.
    Partial,
    /// No image could be embedded; nothing written.
    Nothing,
}

/// Image mode.
fn run_images(args: &Args) -> Result<Outcome> {
    let start = Instant::now();
    if args.inputs.is_empty() {
        bail!("no images given: pass image files or directories (or --pixels for tensor mode)");
    }
    let kinds = parse_outputs(&args.outputs)?;
    if kinds.is_empty() && args.intermediates.is_empty() {
        bail!("--outputs is empty: ask for summary, features and/or last_hidden_state");
    }
    let format = match args.format {
        Some(f) => f,
        None => OutputFormat::from_path(&args.output).unwrap_or(OutputFormat::Safetensors),
    };
    let paths = vitrine::images::collect_image_paths(&args.inputs)?;
    if paths.is_empty() {
        bail!("no images (.jpg, .jpeg, .png, .webp) found in the given directories");
    }

    let device = pick_device(args.device.as_deref(), true)?;
    let mut encoder = load(args, device)?;
    let mut pre = encoder
        .preprocess_config()
        .clone()
        .with_backend(args.resize_backend);
    if let Some(r) = args.resolution {
        pre = pre.with_resolution(r)?;
    }
    encoder.set_preprocess_config(pre);
    if let Some(bad) = args.intermediates.iter().find(|&&i| i >= encoder.depth()) {
        bail!(
            "--intermediates {bad}: the model has {} blocks (0..={})",
            encoder.depth(),
            encoder.depth().saturating_sub(1)
        );
    }
    let loaded = start.elapsed();

    let sources: Vec<ImageSource> = paths.iter().map(ImageSource::from).collect();
    let opts = EncodeOptions {
        batch_size: args.batch_size.max(1),
        batching: if args.group_by_size {
            Batching::GroupBySize
        } else {
            Batching::Packed
        },
        intermediates: args.intermediates.clone(),
        ..Default::default()
    };
    let n = sources.len();
    let bar = if n >= PROGRESS_MIN_IMAGES && std::io::stderr().is_terminal() {
        let b = ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} images  {per_sec}  eta {eta}  {msg}")
        {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };

    let embed_start = Instant::now();
    let mut results: Vec<Option<vitrine::Result<vitrine::Embedding>>> =
        (0..n).map(|_| None).collect();
    let plan = encoder.plan_batches(&sources, &opts);
    for (i, e) in plan.failed {
        results[i] = Some(Err(e));
        bar.inc(1);
    }
    let mut retried = Vec::new();
    for batch in &plan.batches {
        let refs: Vec<&ImageSource> = batch.iter().map(|&i| &sources[i]).collect();
        let splits = encoder.oom_splits();
        for (&i, r) in batch.iter().zip(encoder.encode_batch(&refs, &opts)) {
            // Never retried silently: one warning per image and per split batch.
            if let Ok(e) = &r {
                if let Some(why) = &e.overflow {
                    let label = sources[i].label(i);
                    bar.suspend(|| eprintln!("warning: {label}: {why}; retried in {}", e.dtype));
                    retried.push(format!("{label} ({})", e.dtype));
                }
            }
            results[i] = Some(r);
        }
        if encoder.oom_splits() > splits {
            bar.suspend(|| {
                eprintln!(
                    "warning: a batch of {} images ran out of device memory; it was split in two \
                     and retried (a smaller --batch-size avoids this)",
                    batch.len()
                )
            });
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    let embed_time = embed_start.elapsed();

    // Collect successes in input order; report failures by path.
    let mut set = OutputSet::default();
    let mut per_kind: BTreeMap<String, (bool, Vec<Matrix>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut push = |name: String, vector: bool, m: Matrix| {
        if !per_kind.contains_key(&name) {
            order.push(name.clone());
        }
        per_kind
            .entry(name)
            .or_insert((vector, Vec::new()))
            .1
            .push(m);
    };
    let mut failed = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let label = sources[i].label(i);
        match r {
            Some(Ok(e)) => {
                for k in &kinds {
                    let (name, vector, t) = match k {
                        Kind::Summary => ("summary", true, encoder.summary_of(&e)),
                        Kind::Features => ("features", false, encoder.features_of(&e)),
                        Kind::LastHiddenState => {
                            ("last_hidden_state", false, e.last_hidden_state.clone())
                        }
                    };
                    let mut m = matrix(&t)?;
                    if vector {
                        m = Matrix::new(1, m.data.len(), m.data)?;
                    }
                    if args.normalize {
                        m.l2_normalize_rows();
                    }
                    push(name.to_string(), vector, m);
                }
                for (&k, t) in args.intermediates.iter().zip(&e.intermediates) {
                    let mut m = matrix(t)?;
                    if args.normalize {
                        m.l2_normalize_rows();
                    }
                    push(format!("intermediate_{k}"), false, m);
                }
                set.paths.push(label);
                set.grids.push(e.grid);
            }
            Some(Err(err)) => failed.push((label, err.to_string())),
            None => failed.push((label, "not processed".to_string())),
        }
    }
    for (label, why) in &failed {
        eprintln!("error: skipped {label}: {why}");
    }
    let ok = set.paths.len();
    if ok == 0 {
        eprintln!("error: none of the {n} image(s) could be embedded; nothing written");
        return Ok(Outcome::Nothing);
    }
    for name in order {
        if let Some((vector, values)) = per_kind.remove(&name) {
            set.outputs.push(NamedOutput {
                name,
                per_image_vector: vector,
                values,
            });
        }
    }
    let pre = encoder.preprocess_config();
    set.metadata = BTreeMap::from([
        ("model".to_string(), args.model.clone()),
        ("family".to_string(), encoder.family().to_string()),
        ("dtype".to_string(), args.dtype.to_string()),
        ("device".to_string(), encoder.device_name()),
        ("preprocess".to_string(), pre.to_string()),
        ("normalize".to_string(), args.normalize.to_string()),
        (
            "prefix_tokens".to_string(),
            encoder.num_prefix_tokens().to_string(),
        ),
    ]);
    if !retried.is_empty() {
        set.metadata
            .insert("f16_overflow_retries".into(), retried.join("; "));
    }
    if let ModelSource::Hub {
        revision, commit, ..
    } = encoder.source()
    {
        set.metadata.insert("revision".into(), revision.clone());
        set.metadata.insert("commit".into(), commit.clone());
    }
    let written = set
        .write(&args.output, format)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let shapes: Vec<String> = set
        .outputs
        .iter()
        .map(|o| {
            let d = o.values.first().map_or(0, |m| m.cols);
            if o.per_image_vector {
                format!("{} [{ok}, {d}]", o.name)
            } else if set.token_layout() == "stacked" {
                let t = o.values.first().map_or(0, |m| m.rows);
                format!("{} [{ok}, {t}, {d}]", o.name)
            } else {
                let t: usize = o.values.iter().map(|m| m.rows).sum();
                format!("{} [{t}, {d}] packed", o.name)
            }
        })
        .collect();
    let secs = embed_time.as_secs_f64().max(1e-9);
    let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    eprintln!(
        "embedded {ok}/{n} images in {secs:.2}s ({:.1} images/s; load {:.2}s) on {} in {}: {} -> {}{}",
        ok as f64 / secs,
        loaded.as_secs_f64(),
        encoder.device_name(),
        args.dtype,
        shapes.join(", "),
        files.join(", "),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({} failed)", failed.len())
        }
    );
    Ok(if failed.is_empty() {
        Outcome::Complete
    } else {
        Outcome::Partial
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.pixels {
        Some(p) => run_pixels(&args, p).map(|()| Outcome::Complete),
        None => run_images(&args),
    };
    match result {
        Ok(Outcome::Complete) => ExitCode::SUCCESS,
        // Unreadable inputs, each reported: "some inputs failed".
        Ok(Outcome::Partial | Outcome::Nothing) => ExitCode::from(EXIT_PARTIAL),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
