//! `embed`: run a RADIO or InternViT model on pixel tensors.
//!
//! ```text
//! cargo run --release --example embed -- --model tests/fixtures/models/radio_v4 \
//!     --pixels tests/fixtures/cases/radio_v4__32x32_b2.safetensors --output out.safetensors
//! ```
//!
//! `--pixels` holds `pixel_values` f32 `[B, 3, H, W]`, exactly what the HF
//! model's forward takes (RADIO: RGB in [0, 1]; InternViT: normalised). The
//! output holds f32 `last_hidden_state` `[B, N, D]` and, for RADIO, `summary`
//! `[B, S]` and `features` `[B, h·w, D]`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use vitrine::io::{read_tensor, stack, write_tensors};
use vitrine::{DType, Device, Encoder, HostTensor};

#[derive(Parser, Debug)]
#[command(version, about = "Embed pixel tensors with a RADIO or InternViT model")]
struct Args {
    /// Model directory: config.json + model.safetensors (or a sharded index).
    #[arg(long)]
    model: PathBuf,
    /// Input safetensors file with `pixel_values` f32 [B, 3, H, W].
    #[arg(long)]
    pixels: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    output: PathBuf,
    /// Storage dtype of weights and activations: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: DType,
    /// Device: cpu, cuda:N or hip:N. A device not built in is an error.
    #[arg(long, default_value = "cpu")]
    device: Device,
}

fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    let encoder = Encoder::from_dir(&args.model, args.device, args.dtype)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let unused = &encoder.load_report().unused_tensors;
    if !unused.is_empty() {
        eprintln!(
            "warning: {} checkpoint tensors are not used by the model: {}",
            unused.len(),
            unused.join(", ")
        );
    }
    let pixels = read_tensor(&args.pixels, "pixel_values")?;
    let loaded = start.elapsed();
    let out = encoder.forward_pixels(&pixels)?;
    let ran = start.elapsed() - loaded;

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
        ("model".to_string(), args.model.display().to_string()),
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

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
