//! Image bytes -> RGB -> preprocessed tensor (RADIO and InternViT processors),
//! under small decode limits so a bomb is refused rather than allocated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitrine::images::decode_image;
use vitrine::{DecodeLimits, PreprocessConfig};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_width: 2048,
        max_height: 2048,
        max_alloc: 64 << 20,
        max_file_bytes: 1 << 20,
    };
    let Ok(img) = decode_image(data, &limits) else {
        return;
    };
    assert!(img.width() >= 1 && img.height() >= 1);
    assert_eq!(img.as_raw().len(), img.width() * img.height() * 3);
    for cfg in [PreprocessConfig::radio(64, 16, 2048), PreprocessConfig::internvit(32, 4)] {
        if let Ok(t) = cfg.apply(&img) {
            assert_eq!(t.shape().len(), 3);
            assert!(t.to_f32_vec().iter().all(|v| v.is_finite()));
        }
    }
});
