#!/usr/bin/env python3
"""Reference pixel tensors from the Hugging Face image processors.

For every image in assets/images this stores what transformers makes of it, so that
`tests/preprocess.rs` can compare vitrine's decoder, resize and normalisation with it:

    decoded.<image>                  uint8 [H, W, 3]  transformers.image_utils.load_image
                                                      (EXIF transpose, then PIL convert("RGB"))
    <case>.<backend>.<image>         f32 [3, h, w]    the processor's pixel_values[0]

Cases (sizes are vitrine's policy, computed here exactly; the processor only resamples):

    radio32      RADIO tiny fixture: long side 32, each side rounded to the nearest multiple
                 of the patch 4 (ties to even, as Python's round), at least one patch.
                 CLIPImageProcessor(size={"height": h, "width": w}, resample=BICUBIC,
                 do_center_crop=False, do_rescale=True, do_normalize=False): RGB in [0, 1];
                 RADIO normalises inside the model.
    radio80p16   the same policy, long side 80 and patch 16 (mostly upsampling).
    intern32     InternViT tiny fixture: 32 x 32.
                 GotOcr2ImageProcessor(size={"height": 32, "width": 32}, crop_to_patches=False,
                 resample=BICUBIC, do_rescale=True, do_normalize=True, ImageNet mean/std).
    intern64     the same at 64 x 64 (InternViT's real input is 448 x 448: same code path).

Backends: `tv` is the torchvision backend (transformers 5's default class,
`CLIPImageProcessor` / `GotOcr2ImageProcessor`, uint8 tensors resized by
torch's antialiased bicubic), `pil` the PIL backend (`...Pil` classes, PIL's
Image.resize). Every processor is built from explicit arguments (no hub access).

Run where torch, torchvision, transformers >= 5 and Pillow are installed (the remote
H100 machine; no GPU is used):

    PYTHONUNBUFFERED=1 python3 scripts/gen_preprocess_fixtures.py --out tests/fixtures/preprocess

Writes hf_pixels.safetensors and MANIFEST.json (versions, processor settings,
sizes, and facts checked on the way).
"""

import argparse
import json
import platform
import sys
import time
import traceback
from fractions import Fraction
from pathlib import Path

import numpy as np
import PIL
import torch
import transformers
from PIL import Image
from safetensors.numpy import save_file

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
BICUBIC = 3

CASES = {
    "radio32": {"family": "radio", "long_side": 32, "patch": 4},
    "radio80p16": {"family": "radio", "long_side": 80, "patch": 16},
    "intern32": {"family": "internvit", "size": 32},
    "intern64": {"family": "internvit", "size": 64},
}


def snap(x: Fraction, patch: int) -> int:
    """Nearest multiple of `patch` (Python round: ties to even), at least one patch."""
    return max(round(x / patch), 1) * patch


def radio_size(h: int, w: int, long_side: int, patch: int):
    if h >= w:
        return snap(Fraction(long_side), patch), snap(Fraction(w * long_side, h), patch)
    return snap(Fraction(h * long_side, w), patch), snap(Fraction(long_side), patch)


def backend_of(proc) -> str:
    b = getattr(proc, "backend", None)
    if isinstance(b, str):
        return b
    return "torchvision" if "Fast" in type(proc).__name__ else "pil"


def to_np(x):
    """pixel_values as one numpy array, whatever container the backend returned."""
    if isinstance(x, (list, tuple)):
        return np.stack([to_np(v) for v in x])
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def run(proc, image, h, w):
    return to_np(proc(images=image, size={"height": h, "width": w})["pixel_values"])


def find_processor(names, want, kwargs):
    """The first class in `names` that exists and whose backend is `want`."""
    tried = []
    for name in names:
        cls = getattr(transformers, name, None)
        if cls is None:
            tried.append(f"{name}: missing")
            continue
        try:
            proc = cls(**kwargs)
        except Exception as e:  # noqa: BLE001 - report and try the next name
            tried.append(f"{name}: {e!r}")
            continue
        if backend_of(proc) == want:
            return proc
        tried.append(f"{name}: backend {backend_of(proc)}")
    raise RuntimeError(f"no {want} processor among {names}: {tried}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=Path, default=Path("assets/images"))
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/preprocess"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    torch.set_num_threads(1)

    from transformers.image_utils import load_image

    radio_kwargs = dict(
        do_resize=True,
        size={"height": 32, "width": 32},
        resample=BICUBIC,
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=False,
        do_convert_rgb=True,
    )
    intern_kwargs = dict(
        do_resize=True,
        size={"height": 32, "width": 32},
        crop_to_patches=False,
        resample=BICUBIC,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_convert_rgb=True,
    )
    radio_names = ["CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil"]
    intern_names = ["GotOcr2ImageProcessor", "GotOcr2ImageProcessorFast", "GotOcr2ImageProcessorPil"]
    procs = {}
    for backend, want in [("tv", "torchvision"), ("pil", "pil")]:
        procs[("radio", backend)] = find_processor(radio_names, want, radio_kwargs)
        procs[("internvit", backend)] = find_processor(intern_names, want, intern_kwargs)

    tensors = {}
    manifest = {
        "command": "PYTHONUNBUFFERED=1 python3 scripts/gen_preprocess_fixtures.py --out tests/fixtures/preprocess",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "pillow": PIL.__version__,
            "numpy": np.__version__,
        },
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "processors": {
            f"{fam}.{b}": {"class": type(p).__name__, "backend": backend_of(p), "settings": p.to_dict()}
            for (fam, b), p in procs.items()
        },
        "cases": CASES,
        "images": {},
        "facts": {},
        "errors": [],
    }
    try:
        import torchvision

        manifest["versions"]["torchvision"] = torchvision.__version__
    except Exception as e:  # noqa: BLE001
        manifest["versions"]["torchvision"] = repr(e)

    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    for path in paths:
        name = path.name
        raw = Image.open(path)
        rgb = load_image(str(path))
        arr = np.asarray(rgb, dtype=np.uint8)
        tensors[f"decoded.{name}"] = np.ascontiguousarray(arr)
        h, w = arr.shape[:2]
        info = {
            "format": raw.format,
            "mode": raw.mode,
            "stored_size_wh": list(raw.size),
            "exif_orientation": raw.getexif().get(0x0112),
            "decoded_hw": [h, w],
            "sizes": {},
        }
        for case, spec in CASES.items():
            fam = spec["family"]
            if fam == "radio":
                th, tw = radio_size(h, w, spec["long_side"], spec["patch"])
            else:
                th = tw = spec["size"]
            info["sizes"][case] = [th, tw]
            for backend in ["tv", "pil"]:
                try:
                    px = run(procs[(fam, backend)], rgb, th, tw)
                    assert px.shape == (1, 3, th, tw), px.shape
                    tensors[f"{case}.{backend}.{name}"] = np.ascontiguousarray(px[0].astype(np.float32))
                except Exception:  # noqa: BLE001 - record, keep going
                    manifest["errors"].append(f"{case}.{backend}.{name}: {traceback.format_exc()}")
        manifest["images"][name] = info
        print(f"{name}: {raw.format} {raw.mode} {raw.size} -> {w}x{h}", flush=True)

    # Facts the Rust side relies on.
    facts = manifest["facts"]
    try:
        rgba = Image.open(args.images / "alpha.png")
        dropped = np.asarray(rgba.convert("RGB"))
        facts["load_image_drops_alpha"] = bool(
            np.array_equal(np.asarray(load_image(str(args.images / "alpha.png"))), dropped)
        )
        for backend in ["tv", "pil"]:
            p = procs[("radio", backend)]
            a = run(p, rgba, 32, 32)
            b = run(p, rgba.convert("RGB"), 32, 32)
            facts[f"processor_{backend}_rgba_equals_convert_rgb"] = bool(np.array_equal(a, b))
    except Exception:  # noqa: BLE001
        manifest["errors"].append(f"alpha facts: {traceback.format_exc()}")
    try:
        # Is the torchvision backend's output a uint8 image scaled by 1/255 (native uint8 resize)?
        px = tensors["radio32.tv.gradient.png"]
        facts["tv_radio_values_on_255_grid"] = bool(np.allclose(np.rint(px * 255) / 255, px, atol=1e-7, rtol=0))
        px = tensors["radio32.pil.gradient.png"]
        facts["pil_radio_values_on_255_grid"] = bool(np.allclose(np.rint(px * 255) / 255, px, atol=1e-7, rtol=0))
        # Same-size resize is the identity in both backends.
        g = load_image(str(args.images / "gradient.png"))
        for backend in ["tv", "pil"]:
            ident = run(procs[("radio", backend)], g, 48, 64)[0]
            expect = np.asarray(g, dtype=np.float32).transpose(2, 0, 1) / 255
            facts[f"{backend}_same_size_is_identity_maxabs"] = float(np.abs(ident - expect).max())
        # Ties in the size policy: Python's round is half-to-even.
        facts["round_half_even"] = [round(Fraction(5, 2)), round(Fraction(7, 2))]
        # How far apart the two backends are on the committed images.
        diffs = {}
        for key in tensors:
            if ".tv." in key:
                other = key.replace(".tv.", ".pil.")
                if other in tensors:
                    d = np.abs(tensors[key] - tensors[other])
                    diffs[key.replace(".tv.", ".")] = [float(d.max()), float(d.mean())]
        facts["tv_vs_pil_maxabs_meanabs"] = diffs
    except Exception:  # noqa: BLE001
        manifest["errors"].append(f"facts: {traceback.format_exc()}")

    meta = {"generator": "scripts/gen_preprocess_fixtures.py", "transformers": transformers.__version__}
    save_file(tensors, str(args.out / "hf_pixels.safetensors"), metadata=meta)
    manifest["seconds"] = round(time.time() - t0, 2)
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    print(json.dumps({k: manifest[k] for k in ["versions", "cpu_capability", "facts", "errors", "seconds"]}, indent=1, default=str))
    print({k: v["class"] for k, v in manifest["processors"].items()})
    return 1 if manifest["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
