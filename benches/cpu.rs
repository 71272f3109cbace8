//! CPU benchmarks: the backend's hot ops at ViT-B/16 224² sizes and a whole
//! forward pass of the shipped tiny RADIO model.
//!
//! `cargo bench --bench cpu` (set `RAYON_NUM_THREADS` to pin the thread
//! count when comparing with PyTorch on the same machine).

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use vitrine::{DType, Device, Encoder, HostTensor};
use vitrine_core::{Backend, ResizeMode, ResizeSpec, SeqLayout};
use vitrine_cpu::CpuBackend;

fn filled(shape: &[usize], seed: u32) -> HostTensor {
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    HostTensor::from_f32(shape.to_vec(), values).expect("shape")
}

fn ops(c: &mut Criterion) {
    let be = CpuBackend::new();
    let (tokens, d) = (197, 768);
    for dtype in [DType::F32, DType::BF16] {
        let x = be.upload(&filled(&[tokens, d], 1), dtype).expect("x");
        let w = be.upload(&filled(&[3 * d, d], 2), dtype).expect("w");
        let b = be.upload(&filled(&[3 * d], 3), dtype).expect("b");
        let g = be.upload(&filled(&[d], 4), dtype).expect("g");
        c.bench_function(&format!("linear 197x768 -> 2304 {dtype}"), |bn| {
            bn.iter(|| be.linear(black_box(&x), &w, Some(&b)).expect("linear"))
        });
        c.bench_function(&format!("layer_norm 197x768 {dtype}"), |bn| {
            bn.iter(|| be.layer_norm(black_box(&x), &g, &g, 1e-6).expect("ln"))
        });
        c.bench_function(&format!("gelu 197x768 {dtype}"), |bn| {
            bn.iter(|| be.gelu(black_box(&x)).expect("gelu"))
        });
        let seqs = SeqLayout::from_lengths(&[tokens]).expect("seqs");
        c.bench_function(&format!("attention 197 tokens 12x64 {dtype}"), |bn| {
            bn.iter(|| {
                be.attention(black_box(&x), &x, &x, &seqs, 12, 0.125)
                    .expect("attention")
            })
        });
    }
    let table = be
        .upload(&filled(&[128 * 128, 1280], 5), DType::F32)
        .expect("table");
    let spec = ResizeSpec {
        window_h: 32,
        window_w: 24,
        ..ResizeSpec::full(ResizeMode::Bilinear, false, (128, 128), (32, 32))
    };
    c.bench_function("resize bilinear 128² -> 32² window 32x24, C=1280", |bn| {
        bn.iter(|| be.resize(black_box(&table), &spec).expect("resize"))
    });
}

fn tiny_model(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/radio_v4");
    let enc = Encoder::from_dir(&dir, Device::Cpu, DType::F32).expect("load tiny model");
    let pixels = filled(&[8, 3, 64, 64], 6);
    c.bench_function("tiny radio_v4 forward, 8 x 64²", |bn| {
        bn.iter(|| enc.forward_pixels(black_box(&pixels)).expect("forward"))
    });
}

criterion_group!(benches, ops, tiny_model);
criterion_main!(benches);
