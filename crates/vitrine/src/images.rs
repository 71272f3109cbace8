//! Image files in, 8-bit RGB pixels out, the way `transformers.image_utils.load_image`
//! reads them: EXIF orientation applied, then converted to RGB.
//!
//! | input | what happens |
//! |---|---|
//! | RGB | kept |
//! | grayscale (`L`, 16-bit `L`) | replicated to three channels |
//! | with alpha (`RGBA`, `LA`) | alpha **dropped**, the colour under it kept (PIL's `convert("RGB")`, which HF uses; not composited on a background) |
//! | palette PNG | expanded through its palette |
//! | 16 bits per channel | scaled to 8 bits (`v · 255 / 65535`, rounded; PIL truncates some of these modes, so such files may differ by one level) |
//! | EXIF orientation (JPEG, PNG `eXIf`, WebP) | applied before anything else |
//!
//! Formats: JPEG, PNG and WebP (the only decoders built in). Decoding is
//! bounded: files go through [`image::ImageReader`] with explicit
//! [`image::Limits`] (width, height and allocation caps), the declared size
//! is checked before any pixel is decoded, and a file larger than
//! [`DecodeLimits::max_file_bytes`] is refused before it is read.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use vitrine_core::{Error, Result};

/// File extensions searched for when a directory is given (lower case).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `RGBRGB…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl RgbImage {
    /// Wraps `width · height · 3` bytes of interleaved RGB.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        let expect = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(3))
            .ok_or_else(|| {
                Error::InvalidArgument(format!("image {width}x{height} is too large"))
            })?;
        if width == 0 || height == 0 {
            return Err(Error::InvalidArgument(format!(
                "image {width}x{height} has no pixels"
            )));
        }
        if data.len() != expect {
            return Err(Error::InvalidArgument(format!(
                "an RGB image of {width}x{height} needs {expect} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The interleaved bytes.
    pub fn as_raw(&self) -> &[u8] {
        &self.data
    }

    /// Gives the bytes back.
    pub fn into_raw(self) -> Vec<u8> {
        self.data
    }
}

/// Bounds on what decoding may read and allocate. Exceeding one is an error
/// for that image, never a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width, in pixels (as stored, before EXIF rotation).
    pub max_width: u32,
    /// Largest accepted height, in pixels.
    pub max_height: u32,
    /// Largest decoder allocation, in bytes (the decoded buffer counts).
    pub max_alloc: u64,
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
}

impl Default for DecodeLimits {
    /// 16384 pixels a side, 512 MiB of decoder memory, 256 MiB files.
    fn default() -> Self {
        Self {
            max_width: 16_384,
            max_height: 16_384,
            max_alloc: 512 << 20,
            max_file_bytes: 256 << 20,
        }
    }
}

fn bad(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, detail.to_string()),
    }
}

/// Reads and decodes an image file (see the module docs for what is done to it).
pub fn load_image(path: &Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let io = |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > limits.max_file_bytes {
        return Err(bad(
            path,
            format!(
                "file is {len} bytes, over the limit of {} bytes",
                limits.max_file_bytes
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limits.max_file_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    decode_image(&bytes, limits).map_err(|e| match e {
        Error::InvalidArgument(detail) => bad(path, detail),
        other => other,
    })
}

fn reader<'a>(bytes: &'a [u8], limits: &DecodeLimits) -> Result<ImageReader<Cursor<&'a [u8]>>> {
    let mut r = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::InvalidArgument(format!("cannot read image: {e}")))?;
    if r.format().is_none() {
        return Err(Error::InvalidArgument(
            "not a supported image (JPEG, PNG or WebP)".into(),
        ));
    }
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_width);
    l.max_image_height = Some(limits.max_height);
    l.max_alloc = Some(limits.max_alloc);
    r.limits(l);
    Ok(r)
}

fn decode_error(e: image::ImageError) -> Error {
    match e {
        image::ImageError::Limits(l) => Error::InvalidArgument(format!(
            "cannot decode image: {l} (its declared size is over the decode limits)"
        )),
        e => Error::InvalidArgument(format!("cannot decode image: {e}")),
    }
}

/// A JPEG whose last scan is not followed by an end-of-image marker was cut
/// short: the decoder would pad it with gray (PIL refuses such files too).
/// Inside entropy-coded data `FF` is always stuffed, so neither marker can
/// appear by accident after the last start-of-scan.
fn check_jpeg_complete(bytes: &[u8]) -> Result<()> {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xff, 0xda]);
    let complete = last_sos.is_some_and(|i| bytes[i..].windows(2).any(|w| w == [0xff, 0xd9]));
    if complete {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "cannot decode image: truncated JPEG (no end-of-image marker after the last scan)"
                .into(),
        ))
    }
}

/// Decodes an encoded image held in memory (see the module docs).
///
/// A panic inside a decoder is turned into an error for this image: the
/// fuzzer found one in the `png` crate (0.18.1, a PLTE chunk whose length is
/// not a multiple of 3 indexes past its end), and one bad file must not take
/// a whole batch down.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    std::panic::catch_unwind(|| decode_unguarded(bytes, limits)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        Err(Error::InvalidArgument(format!(
            "cannot decode image: the decoder failed on malformed data ({what})"
        )))
    })
}

fn decode_unguarded(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    // First pass: headers only. Checks the declared size against the limits
    // before any pixel buffer exists, and reads the EXIF orientation.
    let r = reader(bytes, limits)?;
    if r.format() == Some(image::ImageFormat::Jpeg) {
        check_jpeg_complete(bytes)?;
    }
    let mut header = r.into_decoder().map_err(decode_error)?;
    let (w, h) = header.dimensions();
    if w == 0 || h == 0 || w > limits.max_width || h > limits.max_height {
        return Err(Error::InvalidArgument(format!(
            "image is {w}x{h}; accepted sizes are 1..={} x 1..={}",
            limits.max_width, limits.max_height
        )));
    }
    // The decoded buffer plus the RGB copy made from it.
    let need = header
        .total_bytes()
        .saturating_add(u64::from(w) * u64::from(h) * 3);
    if need > limits.max_alloc {
        return Err(Error::InvalidArgument(format!(
            "decoding {w}x{h} needs {need} bytes, over the limit of {} bytes",
            limits.max_alloc
        )));
    }
    // A file whose EXIF block is damaged still has pixels: keep them upright as stored.
    let orientation = header
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    drop(header);
    // Second pass: the limited, checked `ImageReader::decode`.
    let mut img: DynamicImage = reader(bytes, limits)?.decode().map_err(decode_error)?;
    img.apply_orientation(orientation);
    let rgb = match img {
        DynamicImage::ImageRgb8(b) => b,
        other => other.to_rgb8(),
    };
    let (w, h) = rgb.dimensions();
    RgbImage::new(w as usize, h as usize, rgb.into_raw())
}

/// The size `(width, height)` of an image file as it will be decoded (EXIF
/// rotation applied), from its headers alone.
pub fn read_dimensions(path: &Path, limits: &DecodeLimits) -> Result<(usize, usize)> {
    use image::metadata::Orientation as O;
    let io = |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > limits.max_file_bytes {
        return Err(bad(
            path,
            format!(
                "file is {len} bytes, over the limit of {} bytes",
                limits.max_file_bytes
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let mut dec = reader(&bytes, limits)
        .and_then(|r| r.into_decoder().map_err(decode_error))
        .map_err(|e| match e {
            Error::InvalidArgument(d) => bad(path, d),
            other => other,
        })?;
    let (w, h) = dec.dimensions();
    let turned = matches!(
        dec.orientation().unwrap_or(O::NoTransforms),
        O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH
    );
    let (w, h) = (w as usize, h as usize);
    Ok(if turned { (h, w) } else { (w, h) })
}

/// Whether `path` has one of [`IMAGE_EXTENSIONS`] (any case).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Expands files and directories into a list of image files: files are kept
/// as given (whatever their extension: decoding decides), directories are
/// searched recursively for [`IMAGE_EXTENSIONS`] and their hits sorted by
/// path, so the order never depends on the filesystem. Hidden entries
/// (names starting with `.`) inside directories are skipped.
pub fn collect_image_paths(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| Error::Io {
            path: input.clone(),
            source: e,
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found)?;
            found.sort();
            out.extend(found);
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let io = |e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let ty = entry.file_type().map_err(io)?;
        if ty.is_dir() {
            walk(&path, found)?;
        } else if has_image_extension(&path) && std::fs::metadata(&path).is_ok_and(|m| m.is_file())
        {
            found.push(path);
        }
    }
    Ok(())
}
