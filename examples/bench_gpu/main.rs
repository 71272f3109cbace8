//! `bench_gpu`: images/s and latency of full-size random-weight encoders on
//! one device, the numbers `scripts/bench-vs-torch.sh` (GPU) and
//! `scripts/bench-cpu-vs-torch.sh` (CPU) set beside PyTorch's.
//!
//! ```text
//! cargo run --release --features cuda --example bench_gpu -- --device cuda:0 --dtype f16
//! cargo run --release --example bench_gpu -- --device cpu --dtype f32 --threads 16
//! ```
//!
//! Writes a random checkpoint per model shape (speed does not depend on the
//! values), loads it, warms up, then times `repeats` forward passes with
//! [`Encoder::time_forward`] (pixels uploaded beforehand, each pass ends
//! with the device idle, outputs left on the device: what the PyTorch
//! baseline's CUDA events time) and prints one JSON line per case:
//! p10/p50/p90 latency, images/s at the median, achieved TFLOP/s (matmul
//! FLOPs, counted as the PyTorch baseline does), `peak_bytes` (peak device
//! bytes of vitrine's tensors, weights included; `null` on the CPU) and
//! `e2e_ms`, the median end-to-end `forward_pixels` call (upload, pass,
//! outputs brought to the host as f32) after two warm-up calls, and
//! `queued_ms_p50`, the host time to queue a pass (near `ms_p50` means the
//! host's launches, not the device, set the pace).
//!
//! Cases are tagged CPU or GPU; without `--filter` a CPU device runs the CPU
//! cases (ViT-B/16 at 224², batch 8) and a GPU device the GPU cases. On the
//! CPU `--threads N` pins the thread count of every parallel op and GEMM
//! (rayon's pool and candle's `RAYON_NUM_THREADS`), as `torch.set_num_threads`
//! does on the PyTorch side.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use vitrine::io::write_tensors;
use vitrine::{DType, Device, Encoder, HostTensor};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "cuda:0")]
    device: Device,
    #[arg(long, default_value = "f16")]
    dtype: DType,
    /// Timed repeats per case (median reported).
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// Where the random checkpoints go.
    #[arg(long, default_value = "/tmp/vitrine-bench")]
    dir: PathBuf,
    /// Only cases whose name contains this (default: the cases of the
    /// device's kind, CPU or GPU).
    #[arg(long)]
    filter: Option<String>,
    /// Batch size for every selected case instead of its own (to match a
    /// baseline run at another batch, e.g. torch.compile's 16 at 512²).
    #[arg(long)]
    batch: Option<usize>,
    /// CPU threads for every op and GEMM (default: rayon's, i.e.
    /// `RAYON_NUM_THREADS` or all logical CPUs).
    #[arg(long)]
    threads: Option<usize>,
}

/// A model shape to benchmark.
struct Shape {
    name: &'static str,
    radio: bool,
    d: usize,
    layers: usize,
    heads: usize,
    mlp: usize,
    patch: usize,
    prefix: usize,
    grid: usize,
}

const RADIO_H: Shape = Shape {
    name: "radio_h",
    radio: true,
    d: 1280,
    layers: 32,
    heads: 16,
    mlp: 5120,
    patch: 16,
    prefix: 10,
    grid: 128,
};
/// ViT-B/16 in RADIO's layout (3 cls + 7 registers, CPE from a 128² table),
/// the shape of the CPU comparison with PyTorch.
const RADIO_B: Shape = Shape {
    name: "radio_b",
    radio: true,
    d: 768,
    layers: 12,
    heads: 12,
    mlp: 3072,
    patch: 16,
    prefix: 10,
    grid: 128,
};
const INTERNVIT_300M: Shape = Shape {
    name: "internvit_300m",
    radio: false,
    d: 1024,
    layers: 24,
    heads: 16,
    mlp: 4096,
    patch: 14,
    prefix: 1,
    grid: 32,
};

/// Deterministic uniform values in [-a, a].
fn random(n: usize, a: f32, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

fn write_checkpoint(s: &Shape, dir: &Path) -> Result<()> {
    if dir.join("config.json").is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let mut seed = 0x5eed_u64;
    let mut tensors: Vec<(String, HostTensor)> = Vec::new();
    let mut add =
        |name: String, shape: Vec<usize>, scale: f32, offset: f32, seed: &mut u64| -> Result<()> {
            let n = shape.iter().product();
            let v: Vec<f32> = random(n, scale, seed)
                .into_iter()
                .map(|x| x + offset)
                .collect();
            tensors.push((name, HostTensor::from_f32_as(shape, &v, DType::F16)?));
            Ok(())
        };
    let (d, m) = (s.d, s.mlp);
    let lin = |fan_in: usize| (3.0 / fan_in as f32).sqrt();
    let (blocks, pfx) = if s.radio {
        (
            "radio_model.model.blocks",
            "radio_model.model.patch_generator",
        )
    } else {
        ("encoder.layers", "embeddings")
    };
    let patch_dim = 3 * s.patch * s.patch;
    if s.radio {
        add(
            format!("{pfx}.embedder.weight"),
            vec![d, patch_dim],
            lin(patch_dim),
            0.0,
            &mut seed,
        )?;
        add(
            format!("{pfx}.pos_embed"),
            vec![1, s.grid * s.grid, d],
            0.5,
            0.0,
            &mut seed,
        )?;
        add(
            format!("{pfx}.cls_token.token"),
            vec![s.prefix, d],
            1.0,
            0.0,
            &mut seed,
        )?;
    } else {
        add(
            "embeddings.patch_embedding.weight".into(),
            vec![d, 3, s.patch, s.patch],
            lin(patch_dim),
            0.0,
            &mut seed,
        )?;
        add(
            "embeddings.patch_embedding.bias".into(),
            vec![d],
            0.1,
            0.0,
            &mut seed,
        )?;
        add(
            "embeddings.position_embedding".into(),
            vec![1, 1 + s.grid * s.grid, d],
            0.5,
            0.0,
            &mut seed,
        )?;
        add(
            "embeddings.class_embedding".into(),
            vec![1, 1, d],
            1.0,
            0.0,
            &mut seed,
        )?;
    }
    for i in 0..s.layers {
        let b = format!("{blocks}.{i}");
        for n in ["norm1", "norm2"] {
            add(format!("{b}.{n}.weight"), vec![d], 0.2, 1.0, &mut seed)?;
            add(format!("{b}.{n}.bias"), vec![d], 0.1, 0.0, &mut seed)?;
        }
        add(
            format!("{b}.attn.qkv.weight"),
            vec![3 * d, d],
            lin(d),
            0.0,
            &mut seed,
        )?;
        add(
            format!("{b}.attn.qkv.bias"),
            vec![3 * d],
            0.1,
            0.0,
            &mut seed,
        )?;
        add(
            format!("{b}.attn.proj.weight"),
            vec![d, d],
            lin(d),
            0.0,
            &mut seed,
        )?;
        add(format!("{b}.attn.proj.bias"), vec![d], 0.1, 0.0, &mut seed)?;
        add(
            format!("{b}.mlp.fc1.weight"),
            vec![m, d],
            lin(d),
            0.0,
            &mut seed,
        )?;
        add(format!("{b}.mlp.fc1.bias"), vec![m], 0.1, 0.0, &mut seed)?;
        add(
            format!("{b}.mlp.fc2.weight"),
            vec![d, m],
            lin(m),
            0.0,
            &mut seed,
        )?;
        add(format!("{b}.mlp.fc2.bias"), vec![d], 0.1, 0.0, &mut seed)?;
        if !s.radio {
            add(format!("{b}.ls1"), vec![d], 0.5, 1.0, &mut seed)?;
            add(format!("{b}.ls2"), vec![d], 0.5, 1.0, &mut seed)?;
        }
    }
    let config = if s.radio {
        serde_json::json!({"model_type": "radio", "hidden_size": d, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
            "mlp_ratio": 4.0, "patch_size": s.patch, "max_img_size": s.grid * s.patch, "num_cls_tokens": 3, "num_registers": 7,
            "summary_idxs": [0, 1], "qkv_bias": true, "layer_norm_eps": 1e-6, "hidden_act": "gelu"})
    } else {
        serde_json::json!({"model_type": "intern_vit_6b", "hidden_size": d, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
            "intermediate_size": m, "patch_size": s.patch, "image_size": s.grid * s.patch, "qkv_bias": true,
            "qk_normalization": false, "norm_type": "layer_norm", "layer_norm_eps": 1e-6, "hidden_act": "gelu"})
    };
    write_tensors(&dir.join("model.safetensors"), &tensors, Default::default())?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    Ok(())
}

fn flops(s: &Shape, h: usize, w: usize) -> f64 {
    let patches = (h / s.patch) * (w / s.patch);
    let t = (patches + s.prefix) as f64;
    let d = s.d as f64;
    let per_layer = 2.0 * t * (3.0 * d * d + d * d + 2.0 * d * s.mlp as f64) + 4.0 * t * t * d;
    s.layers as f64 * per_layer + 2.0 * patches as f64 * (3 * s.patch * s.patch) as f64 * d
}

/// The value at quantile `q` of sorted samples (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Pins the CPU thread count before any pool exists: rayon's global pool
/// (our row ops) and `RAYON_NUM_THREADS`, which candle reads for the
/// parallelism of every GEMM. Returns the count in effect.
fn pin_threads(threads: Option<usize>) -> Result<usize> {
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        // Single-threaded here: nothing else reads the environment yet.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("building the rayon pool")?;
    }
    Ok(rayon::current_num_threads())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let threads = pin_threads(args.threads)?;
    let on_cpu = args.device == Device::Cpu;
    // (shape, height, width, batch, CPU case)
    let cases: [(&Shape, usize, usize, usize, bool); 6] = [
        (&RADIO_H, 224, 224, 1, false),
        (&RADIO_H, 512, 512, 32, false),
        (&RADIO_H, 432, 640, 8, false),
        (&RADIO_H, 1024, 1024, 4, false),
        (&INTERNVIT_300M, 448, 448, 32, false),
        (&RADIO_B, 224, 224, 8, true),
    ];
    for (shape, h, w, b, cpu_case) in cases {
        let b = args.batch.unwrap_or(b);
        let name = format!("{}_{h}x{w}_b{b}", shape.name);
        let wanted = match &args.filter {
            Some(f) => name.contains(f.as_str()),
            None => cpu_case == on_cpu,
        };
        if !wanted {
            continue;
        }
        let dir = args.dir.join(shape.name);
        write_checkpoint(shape, &dir).with_context(|| format!("writing {}", dir.display()))?;
        let enc = Encoder::from_dir(&dir, args.device, args.dtype)?;
        let mut seed = 7u64;
        let pixels = HostTensor::from_f32(
            vec![b, 3, h, w],
            random(b * 3 * h * w, 1.0, &mut seed)
                .iter()
                .map(|v| v.abs())
                .collect(),
        )?;
        // Timed as PyTorch's baseline times `model(pixel_values)`: pixels
        // already on the device, outputs left there, device idle at the end.
        // Two warm-ups, each its own call: a small batch runs as usual first,
        // then is recorded, so the timed passes are replays (see replay.rs).
        enc.time_forward(&pixels, 1)?;
        enc.time_forward(&pixels, 1)?;
        let timing = enc.time_forward(&pixels, args.repeats.max(1))?;
        let mut ms: Vec<f64> = timing.seconds.iter().map(|s| s * 1e3).collect();
        let mut queued: Vec<f64> = timing.queued.iter().map(|s| s * 1e3).collect();
        queued.sort_by(f64::total_cmp);
        // End-to-end calls (upload, forward, outputs to host f32), as a user
        // sees them in steady state: two warm-up calls (a `forward_pixels`
        // key is recorded on its second call, like `time_forward`'s), then the
        // median of `repeats`.
        enc.forward_pixels(&pixels)?;
        enc.forward_pixels(&pixels)?;
        let mut e2e: Vec<f64> = Vec::with_capacity(args.repeats.max(1));
        for _ in 0..args.repeats.max(1) {
            let t = Instant::now();
            enc.forward_pixels(&pixels)?;
            e2e.push(t.elapsed().as_secs_f64() * 1e3);
        }
        e2e.sort_by(f64::total_cmp);
        let e2e_ms = percentile(&e2e, 0.5);
        ms.sort_by(f64::total_cmp);
        let (p10, p50, p90) = (
            percentile(&ms, 0.1),
            percentile(&ms, 0.5),
            percentile(&ms, 0.9),
        );
        let tflops = flops(shape, h, w) * b as f64 / (p50 * 1e-3) / 1e12;
        // Peak bytes held by vitrine's device tensors during the timed passes
        // (weights included); none on the CPU.
        let peak_bytes = timing.peak_bytes;
        println!(
            "{}",
            serde_json::json!({"kind": "vitrine", "case": name, "device": enc.device_name(), "dtype": args.dtype.to_string(),
                "batch": b, "h": h, "w": w, "repeats": ms.len(), "threads": if on_cpu { Some(threads) } else { None },
                "ms_p10": p10, "ms_p50": p50, "ms_p90": p90, "img_s": b as f64 * 1e3 / p50, "tflops": tflops,
                "peak_bytes": peak_bytes, "e2e_ms": e2e_ms, "queued_ms_p50": percentile(&queued, 0.5),
                "replayed": timing.replayed, "record_failure": timing.record_failure})
        );
    }
    Ok(())
}
