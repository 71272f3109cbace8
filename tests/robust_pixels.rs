//! Pixel tensors that the model cannot take: each is an error naming what is
//! wrong before any work is done, and the encoder keeps working afterwards.
//! Also: `Encoder` shared by 8 threads gives the serial results.

mod robust_util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use robust_util::fixture;
use vitrine::{DType, Device, Encoder, Error, HostTensor};

fn radio() -> Encoder {
    Encoder::from_dir(&fixture("radio_v4"), Device::Cpu, DType::F32).unwrap()
}

fn ramp(shape: Vec<usize>, seed: usize) -> HostTensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| ((i * 31 + seed * 17) % 101) as f32 / 101.0)
        .collect();
    HostTensor::from_f32(shape, v).unwrap()
}

fn invalid(r: Result<Vec<vitrine::Embedding>, Error>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn wrong_rank_and_channel_count() {
    let enc = radio();
    for shape in [
        vec![3, 32, 32],
        vec![1, 1, 3, 32, 32],
        vec![1, 4, 32, 32],
        vec![1, 1, 32, 32],
    ] {
        let m = invalid(enc.forward_pixels(&ramp(shape.clone(), 0)));
        assert!(
            m.contains("pixel values must be [batch, 3, height, width]"),
            "{m}"
        );
        assert!(m.contains(&format!("{shape:?}")), "{m}");
    }
    // Empty batch and empty sides, named as such.
    let m = invalid(enc.forward_pixels(&ramp(vec![0, 3, 32, 32], 0)));
    assert!(m.contains("a batch of 0 images"), "{m}");
    let m = invalid(enc.forward_pixels(&ramp(vec![1, 3, 0, 32], 0)));
    assert_eq!(m, "image size 0x32 is empty");
    // Still usable.
    enc.forward_pixels(&ramp(vec![1, 3, 32, 32], 0)).unwrap();
}

#[test]
fn sides_off_the_patch_grid_name_the_nearest_valid_size() {
    let enc = radio();
    let m = invalid(enc.forward_pixels(&ramp(vec![1, 3, 30, 33], 0)));
    assert_eq!(
        m,
        "image size 30x33 is not a multiple of the patch size 4 (nearest valid: 32x32)"
    );
    let m = invalid(enc.forward_pixels(&ramp(vec![1, 3, 1, 2], 0)));
    assert!(m.contains("nearest valid: 4x4"), "{m}");
    // InternViT too.
    let iv = Encoder::from_dir(&fixture("internvit_300m"), Device::Cpu, DType::F32).unwrap();
    let m = invalid(iv.forward_pixels(&ramp(vec![1, 3, 32, 35], 0)));
    assert!(m.contains("nearest valid: 32x36"), "{m}");
}

#[test]
fn batches_whose_activations_do_not_fit_are_refused_up_front() {
    let mut enc = radio();
    // The estimate grows with the batch and quadratically with tokens.
    let one = enc.activation_bytes(1, 32, 32);
    assert!(one > 0);
    assert_eq!(enc.activation_bytes(4, 32, 32), 4 * one);
    assert!(enc.activation_bytes(1, 64, 64) > 4 * one);
    // CPU default: the machine's memory. A 2048² image needs far more.
    assert!(enc.max_activation_bytes().is_some());
    let big = ramp(vec![1, 3, 2048, 2048], 0);
    let t = Instant::now();
    let m = invalid(enc.forward_pixels(&big));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "refused before running"
    );
    assert!(
        m.contains("[1, 3, 2048, 2048]") && m.contains("of activations, over the limit of"),
        "{m}"
    );
    // A configurable limit, below one 32² image and above one 16² image.
    enc.set_max_activation_bytes(Some(one - 1));
    let m = invalid(enc.forward_pixels(&ramp(vec![1, 3, 32, 32], 0)));
    assert!(
        m.contains("need about") && m.contains("fewer or smaller images"),
        "{m}"
    );
    enc.forward_pixels(&ramp(vec![1, 3, 16, 16], 0)).unwrap();
    enc.set_max_activation_bytes(None);
    enc.forward_pixels(&ramp(vec![2, 3, 32, 32], 0)).unwrap();
}

#[test]
fn encoder_is_shared_by_eight_threads_with_serial_results() {
    let enc = Arc::new(radio());
    let inputs: Vec<HostTensor> = (0..16)
        .map(|i| ramp(vec![1, 3, 16 + 4 * (i % 3), 32], i))
        .collect();
    let serial: Vec<_> = inputs
        .iter()
        .map(|p| enc.forward_pixels(p).unwrap())
        .collect();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let enc = Arc::clone(&enc);
            let inputs = inputs.clone();
            std::thread::spawn(move || {
                // Each thread runs every input, starting at a different one.
                (0..inputs.len())
                    .map(|k| {
                        let i = (k + t * 2) % inputs.len();
                        (i, enc.forward_pixels(&inputs[i]).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for (i, out) in h.join().unwrap() {
            assert_eq!(out, serial[i], "input {i}");
        }
    }
}
