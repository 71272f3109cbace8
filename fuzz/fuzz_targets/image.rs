//! Image bytes -> RGB -> preprocessed tensor (RADIO and InternViT processors),
//! under small decode limits so a bomb is refused rather than allocated.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use vitrine::images::decode_image;
use vitrine::{DecodeLimits, PreprocessConfig};

/// libfuzzer-sys installs a panic hook that aborts on every panic, even one
/// `decode_image` catches on purpose (it turns a panic inside a third-party
/// decoder into an error for that image). The default hook lets caught
/// panics stay caught; a panic that escapes is still caught and reported as
/// a crash by the harness.
static RESTORE_DEFAULT_HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    RESTORE_DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
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
