//! Image inputs that cannot be used: truncated and corrupt files of each
//! format, a decompression bomb, empty files, unsupported formats; and the
//! unusual-but-valid ones (16-bit, palette, alpha, gray+alpha) decoded right.
//! A mixed list through `encode_images`: good ones embedded, bad ones named.

mod robust_util;

use std::time::{Duration, Instant};

use robust_util::*;
use vitrine::images::{decode_image, load_image};
use vitrine::{DType, DecodeLimits, Device, Encoder, Error};

fn asset(name: &str) -> Vec<u8> {
    std::fs::read(root().join("assets/images").join(name)).unwrap()
}

fn decode_err(bytes: &[u8]) -> String {
    let t = Instant::now();
    let r = decode_image(bytes, &DecodeLimits::default());
    assert!(t.elapsed() < Duration::from_secs(2), "bounded time");
    match r {
        Err(Error::InvalidArgument(m)) => m,
        Ok(img) => panic!(
            "expected an error, got a {}x{} image",
            img.width(),
            img.height()
        ),
        Err(e) => panic!("expected InvalidArgument, got {e:?}"),
    }
}

#[test]
fn empty_and_unrecognised_bytes() {
    for bytes in [&b""[..], b"\x00", b"hello, not an image", b"<svg></svg>"] {
        assert_eq!(
            decode_err(bytes),
            "not a supported image (JPEG, PNG or WebP)"
        );
    }
}

#[test]
fn formats_that_are_recognised_but_not_built_in() {
    for (bytes, fmt) in [
        (&b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"[..], "Gif"),
        (b"BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00", "Bmp"),
    ] {
        let m = decode_err(bytes);
        assert!(
            m.starts_with("cannot decode image") && m.contains(fmt),
            "{m}"
        );
    }
}

#[test]
fn truncated_files_of_each_format() {
    for name in [
        "photo.jpg",
        "gradient.png",
        "palette.png",
        "lossless.webp",
        "lossy.webp",
    ] {
        let full = asset(name);
        // Cut inside the headers, and inside the pixel data.
        for cut in [10, full.len() / 2] {
            let m = decode_err(&full[..cut]);
            assert!(
                m.starts_with("cannot decode image") || m.starts_with("not a supported"),
                "{name} @ {cut}: {m}"
            );
        }
        decode_image(&full, &DecodeLimits::default()).unwrap();
    }
    let jpg = asset("photo.jpg");
    let m = decode_err(&jpg[..jpg.len() - 2]);
    assert_eq!(
        m,
        "cannot decode image: truncated JPEG (no end-of-image marker after the last scan)"
    );
    // Trailing bytes after the end marker are tolerated, as PIL does.
    let mut tail = jpg.clone();
    tail.extend_from_slice(b"trailing");
    decode_image(&tail, &DecodeLimits::default()).unwrap();
}

/// Found by the `image` fuzz target: the png crate (0.18.1) panics on a
/// palette whose length is not a multiple of 3. The panic must become an
/// error for this one image.
#[test]
fn a_decoder_panic_is_an_error_for_that_image() {
    // Checksums recomputed, so a normal build (which checks CRCs, unlike a
    // fuzzing build) reaches the palette code too.
    let bytes = std::fs::read(root().join("tests/assets/fuzz-png-bad-palette.png")).unwrap();
    let m = decode_err(&bytes);
    assert!(
        m.starts_with("cannot decode image: the decoder failed on malformed data"),
        "{m}"
    );
}

#[test]
fn corrupt_bytes_inside_a_png_are_caught_by_its_checksum() {
    let mut png = asset("gradient.png");
    let n = png.len();
    png[n / 2] ^= 0xff;
    let m = decode_err(&png);
    assert!(m.starts_with("cannot decode image"), "{m}");
}

#[test]
fn a_decompression_bomb_is_refused_before_allocation() {
    // 100000 x 100000 RGB declared in a ~60-byte file: 30 GB if decoded.
    let bomb = png(100_000, 100_000, 8, 2, &[vec![0; 3]], None);
    assert!(bomb.len() < 100);
    let m = decode_err(&bomb);
    assert!(
        m.starts_with("cannot decode image") && m.contains("over the decode limits"),
        "{m}"
    );
    // Within the side limits but over the allocation limit.
    let wide = png(16_000, 16_000, 16, 6, &[vec![0; 8]], None);
    let m = decode_err(&wide);
    assert!(
        m.starts_with("decoding 16000x16000 needs")
            && m.contains("over the limit of 536870912 bytes"),
        "{m}"
    );
    // A zero-width header.
    let m = decode_err(&png(0, 5, 8, 2, &[], None));
    assert!(m.contains("cannot decode") || m.contains("0x5"), "{m}");
    // A caller's tighter limits apply.
    let small = DecodeLimits {
        max_width: 8,
        max_height: 8,
        ..DecodeLimits::default()
    };
    let ok = png(9, 1, 8, 2, &[vec![7; 27]], None);
    let r = decode_image(&ok, &small).unwrap_err().to_string();
    assert!(r.contains("over the decode limits"), "{r}");
}

#[test]
fn a_file_over_the_size_limit_is_not_read() {
    let dir = temp_dir("bigfile");
    let p = dir.join("big.png");
    std::fs::write(&p, vec![0u8; 4096]).unwrap();
    let limits = DecodeLimits {
        max_file_bytes: 1024,
        ..DecodeLimits::default()
    };
    let e = load_image(&p, &limits).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("file is 4096 bytes, over the limit of 1024 bytes"),
        "{e}"
    );
    let empty = dir.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let e = load_image(&empty, &DecodeLimits::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("empty.jpg") && e.contains("not a supported image"),
        "{e}"
    );
}

#[test]
fn sixteen_bit_palette_alpha_and_gray_alpha_pngs() {
    let lim = DecodeLimits::default();
    // 16-bit RGB: 0xffff -> 255, 0x8080 -> 128, 0 -> 0.
    let row16 = vec![0xff, 0xff, 0x80, 0x80, 0x00, 0x00];
    let img = decode_image(&png(1, 1, 16, 2, &[row16], None), &lim).unwrap();
    assert_eq!(img.as_raw(), &[255, 128, 0]);
    // 16-bit gray replicated.
    let img = decode_image(&png(2, 1, 16, 0, &[vec![0xff, 0xff, 0, 0]], None), &lim).unwrap();
    assert_eq!(img.as_raw(), &[255, 255, 255, 0, 0, 0]);
    // Palette: indices through the table.
    let pal = [10, 20, 30, 200, 100, 50];
    let img = decode_image(&png(3, 1, 8, 3, &[vec![1, 0, 1]], Some(&pal)), &lim).unwrap();
    assert_eq!(img.as_raw(), &[200, 100, 50, 10, 20, 30, 200, 100, 50]);
    // A palette index past the table is an error, not garbage.
    let r = decode_image(&png(1, 1, 8, 3, &[vec![5]], Some(&pal)), &lim);
    if let Ok(img) = &r {
        assert_eq!(img.as_raw().len(), 3);
    }
    // RGBA: alpha dropped, colour kept (PIL's convert("RGB")).
    let img = decode_image(&png(1, 1, 8, 6, &[vec![9, 8, 7, 0]], None), &lim).unwrap();
    assert_eq!(img.as_raw(), &[9, 8, 7]);
    // Gray + alpha.
    let img = decode_image(&png(1, 1, 8, 4, &[vec![77, 0]], None), &lim).unwrap();
    assert_eq!(img.as_raw(), &[77, 77, 77]);
    // The sample files of these kinds decode.
    for name in ["alpha.png", "palette.png", "checker_gray.png"] {
        decode_image(&asset(name), &lim).unwrap();
    }
}

#[test]
fn a_mixed_list_embeds_the_good_and_names_the_bad() {
    let dir = temp_dir("mixed");
    let good = ["gradient.png", "photo.jpg", "lossy.webp"];
    for g in good {
        std::fs::write(dir.join(g), asset(g)).unwrap();
    }
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "bomb.png",
            png(100_000, 100_000, 8, 2, &[vec![0; 3]], None),
            "over the decode limits",
        ),
        ("empty.jpg", vec![], "not a supported image"),
        (
            "half.jpg",
            asset("photo.jpg")[..1000].to_vec(),
            "cannot decode image",
        ),
        (
            "anim.gif",
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
            "Gif",
        ),
    ];
    for (n, b, _) in &bad {
        std::fs::write(dir.join(n), b).unwrap();
    }
    let enc = Encoder::from_dir(&fixture("radio_v4"), Device::Cpu, DType::F32).unwrap();
    let mut paths: Vec<_> = good.iter().map(|g| dir.join(g)).collect();
    paths.extend(bad.iter().map(|(n, _, _)| dir.join(n)));
    paths.push(dir.join("does-not-exist.png"));
    let t = Instant::now();
    let out = enc.encode_images(paths.iter());
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(out.len(), paths.len());
    for (i, g) in good.iter().enumerate() {
        let e = out[i].as_ref().unwrap_or_else(|e| panic!("{g}: {e}"));
        assert!(e
            .last_hidden_state
            .to_f32_vec()
            .iter()
            .all(|v| v.is_finite()));
    }
    for (k, (n, _, part)) in bad.iter().enumerate() {
        let e = out[good.len() + k]
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("{n} must fail"));
        let m = e.to_string();
        assert!(m.contains(n) && m.contains(part), "{n}: {m}");
    }
    let last = out.last().unwrap().as_ref().err().unwrap();
    assert!(matches!(last, Error::Io { .. }) && last.to_string().contains("does-not-exist.png"));
}
