//! CPU benchmarks: the backend's hot ops at the sizes of one ViT-B/16 block
//! at 224², batch 8 (8 × 206 = 1648 token rows, the CPU case of
//! `bench_gpu`), and a whole forward pass of the shipped tiny RADIO model.
//!
//! `cargo bench --bench cpu` (set `RAYON_NUM_THREADS` to pin the thread
//! count when comparing with PyTorch on the same machine). The whole
//! ViT-B/16 model is timed by `bench_gpu --device cpu` instead.

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
    // 8 images × (196 patches + 10 prefix tokens), width 768, 12 heads, MLP 3072.
    let (seq, batch, d, mlp) = (206, 8, 768, 3072);
    let tokens = seq * batch;
    for dtype in [DType::F32, DType::BF16] {
        let x = be.upload(&filled(&[tokens, d], 1), dtype).expect("x");
        let h = be.upload(&filled(&[tokens, mlp], 7), dtype).expect("h");
        let w_qkv = be.upload(&filled(&[3 * d, d], 2), dtype).expect("w");
        let b_qkv = be.upload(&filled(&[3 * d], 3), dtype).expect("b");
        let w_fc1 = be.upload(&filled(&[mlp, d], 8), dtype).expect("w1");
        let b_fc1 = be.upload(&filled(&[mlp], 9), dtype).expect("b1");
        let w_fc2 = be.upload(&filled(&[d, mlp], 10), dtype).expect("w2");
        let g = be.upload(&filled(&[d], 4), dtype).expect("g");
        let w_proj = be.upload(&filled(&[d, d], 11), dtype).expect("wp");
        c.bench_function(
            &format!("linear qkv {tokens}x{d} -> {} {dtype}", 3 * d),
            |bn| {
                bn.iter(|| {
                    be.linear(black_box(&x), &w_qkv, Some(&b_qkv))
                        .expect("linear")
                })
            },
        );
        c.bench_function(&format!("linear proj {tokens}x{d} -> {d} {dtype}"), |bn| {
            bn.iter(|| be.linear(black_box(&x), &w_proj, Some(&g)).expect("linear"))
        });
        c.bench_function(&format!("linear fc1 {tokens}x{d} -> {mlp} {dtype}"), |bn| {
            bn.iter(|| {
                be.linear(black_box(&x), &w_fc1, Some(&b_fc1))
                    .expect("linear")
            })
        });
        c.bench_function(&format!("linear fc2 {tokens}x{mlp} -> {d} {dtype}"), |bn| {
            bn.iter(|| be.linear(black_box(&h), &w_fc2, Some(&g)).expect("linear"))
        });
        c.bench_function(&format!("layer_norm {tokens}x{d} {dtype}"), |bn| {
            bn.iter(|| be.layer_norm(black_box(&x), &g, &g, 1e-6).expect("ln"))
        });
        c.bench_function(&format!("residual {tokens}x{d} {dtype}"), |bn| {
            bn.iter(|| be.residual(black_box(&x), &x, None).expect("residual"))
        });
        c.bench_function(&format!("gelu {tokens}x{mlp} {dtype}"), |bn| {
            bn.iter(|| be.gelu(black_box(&h)).expect("gelu"))
        });
        let seqs = SeqLayout::from_lengths(&[seq; 8]).expect("seqs");
        let qkv = be.linear(&x, &w_qkv, Some(&b_qkv)).expect("qkv");
        let q = be.slice_cols(&qkv, 0, d).expect("q");
        let k = be.slice_cols(&qkv, d, d).expect("k");
        let v = be.slice_cols(&qkv, 2 * d, d).expect("v");
        c.bench_function(
            &format!("attention {batch} x {seq} tokens 12x64 {dtype}"),
            |bn| {
                bn.iter(|| {
                    be.attention(black_box(&q), &k, &v, &seqs, 12, 0.125)
                        .expect("attention")
                })
            },
        );
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
    if !dir.is_dir() {
        // A bench binary carried to another machine without the checkout.
        eprintln!("skipping the tiny model: {} not found", dir.display());
        return;
    }
    let enc = Encoder::from_dir(&dir, Device::Cpu, DType::F32).expect("load tiny model");
    let pixels = filled(&[8, 3, 64, 64], 6);
    c.bench_function("tiny radio_v4 forward, 8 x 64²", |bn| {
        bn.iter(|| enc.forward_pixels(black_box(&pixels)).expect("forward"))
    });
}

criterion_group!(benches, ops, tiny_model);
criterion_main!(benches);
