//! Out of device memory while running is recoverable: the forward pass is
//! split into two halves, each retried once, and only if that fails too is it
//! an `Error::OutOfMemory` naming the batch size. Images already done are
//! kept. Tested on the CPU with the encoder's test-only fault hook
//! (`set_fault_oom_above_images`), which makes a forward pass over more than
//! N images fail as a device allocation would.

mod robust_util;

use robust_util::*;
use vitrine::{DType, Device, EncodeOptions, Encoder, Error, HostTensor};

/// The error of a result that must have failed (without printing a whole
/// embedding when it did not).
fn err<T, E>(r: Result<T, E>) -> E {
    match r {
        Err(e) => e,
        Ok(_) => panic!("expected an error, got outputs"),
    }
}

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

/// The first 8 sample images: several sizes, so a packed batch of 8 holds
/// groups that the split cuts through.
fn images() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root().join("assets/images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.truncate(8);
    v
}

fn batch_of(n: usize) -> EncodeOptions {
    EncodeOptions {
        batch_size: n,
        intermediates: vec![1],
        ..Default::default()
    }
}

fn oom(e: &Error) -> String {
    assert!(e.is_out_of_memory(), "expected OutOfMemory, got {e:?}");
    e.to_string()
}

#[test]
fn a_batch_that_runs_out_of_memory_is_split_and_gives_the_unsplit_results() {
    let mut enc = radio();
    let pixels = ramp(vec![8, 3, 32, 32], 1);
    let unsplit = enc.forward_pixels(&pixels).unwrap();
    let files = enc.encode_images_with(images(), &batch_of(8));
    // Mixed sizes in one packed batch, and two groups in one call.
    let groups = [ramp(vec![3, 3, 16, 32], 2), ramp(vec![5, 3, 32, 24], 3)];
    let grouped = enc.forward_groups(&groups, &[0]).unwrap();
    assert_eq!(enc.oom_splits(), 0);

    enc.set_fault_oom_above_images(Some(4));
    assert!(enc.forward_pixels(&pixels).unwrap() == unsplit);
    assert_eq!(enc.oom_splits(), 1);
    let again = enc.encode_images_with(images(), &batch_of(8));
    for (k, (a, b)) in again.iter().zip(&files).enumerate() {
        assert!(a.as_ref().unwrap() == b.as_ref().unwrap(), "image {k}");
    }
    assert!(enc.forward_groups(&groups, &[0]).unwrap() == grouped);
    assert_eq!(enc.oom_splits(), 3);
    // An odd batch splits 4 + 3.
    let seven = ramp(vec![7, 3, 32, 32], 4);
    enc.set_fault_oom_above_images(None);
    let plain = enc.forward_pixels(&seven).unwrap();
    enc.set_fault_oom_above_images(Some(4));
    assert!(enc.forward_pixels(&seven).unwrap() == plain);
    // Within the limit nothing is split.
    enc.forward_pixels(&ramp(vec![4, 3, 32, 32], 5)).unwrap();
    assert_eq!(enc.oom_splits(), 4);
}

#[test]
fn out_of_memory_after_the_split_is_an_error_naming_the_batch_size() {
    let mut enc = radio();
    let pixels = ramp(vec![8, 3, 32, 32], 1);
    let unsplit = enc.forward_pixels(&pixels).unwrap();
    enc.set_fault_oom_above_images(Some(3));
    let e = err(enc.forward_pixels(&pixels));
    let m = oom(&e);
    assert!(
        m.starts_with("out of memory on cpu (")
            && m.contains("a batch of 8 images in f32 ran out of memory")
            && m.contains("split into 4 + 4 and retried once")
            && m.contains("both halves ran out of memory too")
            && m.contains("use a smaller batch"),
        "{m}"
    );
    // Split once only: the halves of 4 do not split again.
    assert_eq!(enc.oom_splits(), 1);
    // Per-image API: every image of the batch gets the error; no panic.
    let out = enc.encode_images_with(images(), &batch_of(8));
    for r in &out {
        let m = oom(err(r.as_ref()));
        assert!(m.contains("a batch of 8 images"), "{m}");
    }
    // One image that does not fit cannot be split.
    enc.set_fault_oom_above_images(Some(0));
    let m = oom(&err(enc.forward_pixels(&ramp(vec![1, 3, 32, 32], 0))));
    assert!(
        m.contains("a batch of 1 image in f32: fault injected"),
        "{m}"
    );
    // The encoder is fine afterwards.
    enc.set_fault_oom_above_images(None);
    assert!(enc.forward_pixels(&pixels).unwrap() == unsplit);
}

#[test]
fn the_half_that_fits_keeps_its_images() {
    let mut enc = radio();
    let all = images();
    let seven = &all[..7];
    let plain = enc.encode_images_with(seven, &batch_of(7));
    // 7 -> 4 + 3: with room for 3, the first half fails again, the second runs.
    enc.set_fault_oom_above_images(Some(3));
    // (The halves follow the packed order, same-size images together, so
    // which inputs land in which half depends on their sizes.)
    let out = enc.encode_images_with(seven, &batch_of(7));
    let mut failed = 0;
    for (k, r) in out.iter().enumerate() {
        match r {
            Err(e) => {
                failed += 1;
                let m = oom(e);
                assert!(
                    m.contains("a batch of 7 images in f32 ran out of memory")
                        && m.contains("split into 4 + 3")
                        && m.contains("the half of 4 ran out of memory too"),
                    "{m}"
                );
            }
            Ok(e) => assert!(e == plain[k].as_ref().unwrap(), "image {k}"),
        }
    }
    assert_eq!(failed, 4);
    // The all-or-nothing pixel API reports the error.
    let m = oom(&err(enc.forward_pixels(&ramp(vec![7, 3, 32, 32], 1))));
    assert!(m.contains("the half of 4"), "{m}");
}

#[test]
fn the_up_front_activation_limit_is_still_a_refusal_not_an_out_of_memory() {
    let mut enc = radio();
    enc.set_fault_oom_above_images(Some(1));
    let one = enc.activation_bytes(1, 32, 32);
    enc.set_max_activation_bytes(Some(one * 2));
    let e = err(enc.forward_pixels(&ramp(vec![4, 3, 32, 32], 0)));
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert_eq!(enc.oom_splits(), 0);
}
