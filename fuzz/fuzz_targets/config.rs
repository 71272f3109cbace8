//! Option and config parsing: the bytes as the `embed` option values parsed
//! by the library (device, dtype, output format, resize backend), and as
//! `config.json` next to a fixture checkpoint.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vitrine::output::OutputFormat;
use vitrine::preprocess::ResizeBackend;
use vitrine::{DType, Device, Encoder};

fn weights() -> &'static [u8] {
    static W: OnceLock<Vec<u8>> = OnceLock::new();
    W.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::read(root.join("tests/fixtures/models/radio_v4/model.safetensors")).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = text.parse::<Device>();
    let _ = text.parse::<DType>();
    let _ = text.parse::<OutputFormat>();
    let _ = text.parse::<ResizeBackend>();
    let dir = std::env::temp_dir().join(format!("vitrine-fuzz-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), data).unwrap();
    if !dir.join("model.safetensors").exists() {
        std::fs::write(dir.join("model.safetensors"), weights()).unwrap();
    }
    let _ = Encoder::from_dir(&dir, Device::Cpu, DType::F32);
});
