#!/usr/bin/env python3
"""Synthesizes the sample images in assets/images (no downloads, fixed seed).

Each file exercises one decoding path that `embed` must get right: RGB, grayscale,
alpha, palette, JPEG (plain and with an EXIF rotation), lossless WebP with an
EXIF rotation, lossy WebP, and an image smaller than any model input.

    python3 scripts/make_sample_images.py --out assets/images

Needs numpy and Pillow (with WebP). The files are committed; rerunning with another
Pillow may change the encoded bytes (and so the preprocessing fixtures).
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def smooth_rgb(h, w, seed):
    """Colour gradients with a soft disc, plus a little noise: photo-like content."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 255 * (0.5 + 0.5 * np.sin(x / 5.0 + y / 7.0))
    disc = ((x - 0.6 * w) ** 2 + (y - 0.4 * h) ** 2) < (0.25 * min(h, w)) ** 2
    img = np.stack([r, g, b], axis=-1)
    img[disc] = 0.3 * img[disc] + 0.7 * np.array([250.0, 220.0, 40.0])
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def exif_with_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("assets/images"))
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    # Landscape RGB PNG.
    Image.fromarray(smooth_rgb(48, 64, 1), "RGB").save(out / "gradient.png")

    # Portrait grayscale PNG with 2-pixel checks: aliasing shows if a resize
    # skips the antialiasing filter.
    y, x = np.mgrid[0:56, 0:40]
    checks = (((x // 2) + (y // 2)) % 2) * 180 + (x * 2)
    Image.fromarray(np.clip(checks, 0, 255).astype(np.uint8), "L").save(out / "checker_gray.png")

    # RGBA PNG with an alpha ramp: the colour under transparent pixels is kept
    # (alpha is dropped, as PIL's convert("RGB") does).
    rgb = smooth_rgb(50, 50, 2)
    alpha = np.tile(np.linspace(0, 255, 50).astype(np.uint8), (50, 1))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(out / "alpha.png")

    # Palette PNG (16 colours).
    Image.fromarray(smooth_rgb(30, 30, 3), "RGB").quantize(colors=16, dither=Image.Dither.NONE).save(
        out / "palette.png"
    )

    # Baseline JPEG, 4:2:0 chroma subsampling.
    Image.fromarray(smooth_rgb(64, 96, 4), "RGB").save(out / "photo.jpg", quality=90, subsampling=2)

    # JPEG stored 48 wide x 32 tall with EXIF orientation 6: shown rotated 90
    # degrees clockwise, 32 wide x 48 tall.
    Image.fromarray(smooth_rgb(32, 48, 5), "RGB").save(
        out / "rotated.jpg", quality=92, exif=exif_with_orientation(6)
    )

    # Lossless WebP with EXIF orientation 3 (upside down).
    Image.fromarray(smooth_rgb(40, 60, 6), "RGB").save(
        out / "lossless.webp", lossless=True, exif=exif_with_orientation(3)
    )

    # Lossy WebP.
    Image.fromarray(smooth_rgb(40, 60, 7), "RGB").save(out / "lossy.webp", quality=80)

    # 7x5: smaller than every model input, so every model upsamples it.
    Image.fromarray(smooth_rgb(5, 7, 8), "RGB").save(out / "tiny.png")

    for p in sorted(out.iterdir()):
        with Image.open(p) as im:
            print(f"{p.name:18s} {im.format:5s} {im.mode:5s} {im.size} {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
