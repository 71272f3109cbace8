//! Checkpoint loading: `[u16 LE config length][config.json][model.safetensors]`
//! written to a temp dir, loaded on the CPU, and (when it loads) run once on
//! a one-patch image under a small activation budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitrine::{DType, Device, Encoder, HostTensor};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    let (config, weights) = rest.split_at(n.min(rest.len()));
    let dir = std::env::temp_dir().join(format!("vitrine-fuzz-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    let Ok(mut enc) = Encoder::from_dir(&dir, Device::Cpu, DType::F32) else {
        return;
    };
    let _ = enc.check_weights();
    enc.set_max_activation_bytes(Some(64 << 20));
    let p = enc.patch_size();
    if (1..=16).contains(&p) {
        let px = HostTensor::from_f32(vec![1, 3, p, p], vec![0.5; 3 * p * p]).unwrap();
        let _ = enc.forward_pixels(&px);
    }
});
