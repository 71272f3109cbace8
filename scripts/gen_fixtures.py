#!/usr/bin/env python3
"""Reference fixtures for vitrine, produced with HuggingFace transformers.

The Rust engine has to reproduce transformers' ``RadioModel`` and
``InternVLVisionModel``.  This script builds small random-weight models, saves
each one in two on-disk layouts (what ``save_pretrained`` writes, and the
original hub layout of NVlabs RADIO / OpenGVLab InternViT), runs the HF forward
pass at several input sizes and precisions, and stores inputs and outputs as
safetensors.  It also stores reference values of ``F.interpolate``.

Run it where torch, transformers (>= 5.17) and a CUDA GPU are available:

    PYTHONUNBUFFERED=1 python3 scripts/gen_fixtures.py --out tests/fixtures

Layout written under ``--out`` (tests/fixtures/README.md describes it):

    MANIFEST.json
    models/<model_id>/          native layout (save_pretrained)
    models/<model_id>_hub/      original hub layout
    cases/<case_id>.safetensors pixel_values + truth.* / hf.f32.* / hf.f16.* / hf.bf16.*
    interp.safetensors          F.interpolate reference values

``--full`` instead builds random-weight models of the real shapes (C-RADIOv2-H,
C-RADIOv4-H, InternViT-300M, InternViT-6B) and computes the float64 truth on the
GPU.  Its output is large and is never committed.

``--discover`` prints what the installed transformers does (config defaults,
module names, keys written by save_pretrained, relevant source) and exits.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import shutil
import struct
import sys
import tempfile
import time
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

MIN_TRANSFORMERS = (5, 17)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# --------------------------------------------------------------------------------------
# Model and case definitions
# --------------------------------------------------------------------------------------

RADIO_V4_TEACHERS = [
    {"name": "siglip2-g", "use_summary": True},
    {"name": "dino_v3", "use_summary": True},
    {"name": "sam3", "use_summary": False},
]
RADIO_V2_TEACHERS = [
    {"name": "clip", "use_summary": True},
    {"name": "siglip", "use_summary": True},
    {"name": "dino_v2", "use_summary": True},
    {"name": "sam", "use_summary": False},
]

TINY_MODELS = {
    "radio_v4": {
        "family": "radio",
        "seed": 4101,
        "config": dict(
            hidden_size=48, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=4.0,
            patch_size=4, image_size=32, max_img_size=32, num_cls_tokens=3, num_registers=7,
            summary_idxs=[0, 1], qkv_bias=True, hidden_act="gelu", layer_norm_eps=1e-6,
        ),
        "layerscale": False,
        "cpe_align_corners": False,
        "native_max_shard_size": None,
        "hub_shards": 1,
        "hub": {"teachers": RADIO_V4_TEACHERS, "register_multiple": 10, "cpe_num_registers": None},
        "cases": [(32, 32, 2), (24, 40, 1), (20, 28, 1), (48, 48, 1)],
    },
    "radio_v2": {
        "family": "radio",
        "seed": 4102,
        "config": dict(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=4.0,
            patch_size=4, image_size=24, max_img_size=24, num_cls_tokens=4, num_registers=4,
            summary_idxs=[0, 1, 2], qkv_bias=True, hidden_act="gelu", layer_norm_eps=1e-6,
        ),
        "layerscale": True,
        "cpe_align_corners": True,
        "native_max_shard_size": "50KB",
        "hub_shards": 1,
        "hub": {"teachers": RADIO_V2_TEACHERS, "register_multiple": 8, "cpe_num_registers": 4},
        "cases": [(16, 16, 2), (40, 24, 1), (24, 24, 1), (28, 20, 1)],
    },
    "internvit_300m": {
        "family": "internvit",
        "seed": 4103,
        "config": dict(
            hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=160,
            patch_size=4, image_size=32, norm_type="layer_norm", attention_bias=True,
            use_qk_norm=False, hidden_act="gelu", layer_norm_eps=1e-6,
        ),
        "layerscale": True,
        "hub_shards": 1,
        "native_max_shard_size": None,
        "hub": {"initializer_factor": 1.0, "omit_norm_type": False},
        "cases": [(32, 32, 2), (24, 40, 1), (48, 48, 1), (16, 64, 1), (20, 20, 1)],
    },
    "internvit_6b": {
        "family": "internvit",
        "seed": 4104,
        "config": dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            patch_size=4, image_size=24, norm_type="rms_norm", attention_bias=False,
            use_qk_norm=True, hidden_act="gelu", layer_norm_eps=1e-6,
        ),
        "layerscale": True,
        "hub_shards": 2,
        "native_max_shard_size": None,
        "hub": {"initializer_factor": 0.1, "omit_norm_type": True},
        "cases": [(24, 24, 2), (16, 32, 1), (40, 40, 1)],
    },
}

RADIO_FULL_SIZES = [(224, 224, 1), (432, 640, 1), (512, 512, 1), (1024, 1024, 1)]
INTERNVIT_FULL_SIZES = [(224, 224, 1), (448, 448, 1), (448, 672, 1), (1008, 1008, 1)]

FULL_MODELS = {
    "c_radio_v2_h": {
        "family": "radio",
        "seed": 5101,
        "config": dict(
            hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, mlp_ratio=4.0,
            patch_size=16, image_size=224, max_img_size=2048, num_cls_tokens=4, num_registers=4,
            summary_idxs=[0, 1, 2], qkv_bias=True, hidden_act="gelu", layer_norm_eps=1e-6,
        ),
        "layerscale": False,
        "cpe_align_corners": False,
        "native_max_shard_size": "2GB",
        "hub_shards": 1,
        "hub": {"teachers": RADIO_V2_TEACHERS, "register_multiple": 8, "cpe_num_registers": 4},
        "cases": RADIO_FULL_SIZES,
    },
    "c_radio_v4_h": {
        "family": "radio",
        "seed": 5102,
        "config": dict(
            hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, mlp_ratio=4.0,
            patch_size=16, image_size=224, max_img_size=2048, num_cls_tokens=3, num_registers=7,
            summary_idxs=[0, 1], qkv_bias=True, hidden_act="gelu", layer_norm_eps=1e-6,
        ),
        "layerscale": False,
        "cpe_align_corners": False,
        "native_max_shard_size": "2GB",
        "hub_shards": 1,
        "hub": {"teachers": RADIO_V4_TEACHERS, "register_multiple": 10, "cpe_num_registers": None},
        "cases": RADIO_FULL_SIZES,
    },
    "internvit_300m_448": {
        "family": "internvit",
        "seed": 5103,
        "config": dict(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            patch_size=14, image_size=448, norm_type="layer_norm", attention_bias=True,
            use_qk_norm=False, hidden_act="gelu", layer_norm_eps=1e-6,
        ),
        "layerscale": True,
        "native_max_shard_size": "2GB",
        "hub_shards": 1,
        "hub": {"initializer_factor": 1.0, "omit_norm_type": False},
        "cases": INTERNVIT_FULL_SIZES,
    },
    "internvit_6b_448": {
        "family": "internvit",
        "seed": 5104,
        "config": dict(
            hidden_size=3200, num_hidden_layers=45, num_attention_heads=25, intermediate_size=12800,
            patch_size=14, image_size=448, norm_type="rms_norm", attention_bias=False,
            use_qk_norm=True, hidden_act="gelu", layer_norm_eps=1e-6,
        ),
        "layerscale": True,
        "native_max_shard_size": "4GB",
        "hub_shards": 6,
        "hub": {"initializer_factor": 0.1, "omit_norm_type": True},
        "cases": INTERNVIT_FULL_SIZES,
    },
}

SEEDS = {
    "pixels_base": 20260101,
    "interp_base": 20260202,
    "note": "model parameters: one torch.Generator per parameter, seeded with "
    "(model seed * 1000003 + crc32(parameter name)) mod 2**62; pixels: one generator per case, "
    "seeded with (pixels_base + crc32(case_id)) mod 2**62; interp inputs: (interp_base + crc32(name)) mod 2**62",
}

INTERP_BILINEAR = [((8, 8), (5, 5)), ((8, 8), (12, 12)), ((128, 128), (14, 14)),
                   ((128, 128), (37, 37)), ((16, 16), (37, 23)), ((6, 6), (1, 1))]
INTERP_BICUBIC = [((8, 8), (5, 5)), ((8, 8), (12, 12)), ((32, 32), (24, 40)),
                  ((32, 32), (37, 29)), ((8, 8), (1, 1)), ((6, 6), (6, 6))]
INTERP_CHANNELS = 5

LOW_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def log(*a):
    print(*a, flush=True)


def seeded(base: int, name: str, device="cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((base + zlib.crc32(name.encode())) % (1 << 62))
    return g


# --------------------------------------------------------------------------------------
# transformers access
# --------------------------------------------------------------------------------------

def check_versions():
    import transformers
    from packaging.version import Version

    v = Version(transformers.__version__)
    if (v.major, v.minor) < MIN_TRANSFORMERS:
        raise SystemExit(f"transformers >= {MIN_TRANSFORMERS[0]}.{MIN_TRANSFORMERS[1]} required, found {v}")
    return transformers


def hf_classes(family):
    if family == "radio":
        from transformers import RadioConfig, RadioModel
        return RadioConfig, RadioModel
    from transformers import InternVLVisionConfig, InternVLVisionModel
    return InternVLVisionConfig, InternVLVisionModel


def build_config(spec):
    cfg_cls, _ = hf_classes(spec["family"])
    cfg = cfg_cls(**spec["config"])
    assert cfg.hidden_act == "gelu", cfg.hidden_act
    assert abs(cfg.layer_norm_eps - 1e-6) < 1e-12, cfg.layer_norm_eps
    return cfg


# --------------------------------------------------------------------------------------
# Deterministic random weights
# --------------------------------------------------------------------------------------

def _normal(shape, std, g, device, mean=0.0):
    return torch.randn(shape, generator=g, dtype=torch.float32 if device != "cpu" else torch.float64,
                       device=device) * std + mean


def _param_rule(module, pname, full, spec):
    """Return (kind, args) describing how to draw parameter `full`."""
    cname = type(module).__name__
    if isinstance(module, nn.Linear):
        if pname == "weight":
            return ("normal", 1.0 / math.sqrt(module.in_features), 0.0)
        return ("normal", 0.1, 0.0)
    if isinstance(module, nn.Conv2d):
        if pname == "weight":
            fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1] // module.groups
            return ("normal", 1.0 / math.sqrt(fan_in), 0.0)
        return ("normal", 0.1, 0.0)
    if isinstance(module, nn.LayerNorm):
        if pname == "weight":
            return ("normal", 0.2, 1.0)
        return ("normal", 0.1, 0.0)
    if cname.endswith("RMSNorm") and pname == "weight":  # norms and qk-norm
        return ("normal", 0.2, 1.0)
    if "lambda" in pname or "LayerScale" in cname:
        if spec["layerscale"]:
            return ("uniform", 0.2, 1.5)
        return ("const", 1.0)
    if "position_embedding" in pname:
        return ("normal", 0.5, 0.0)
    if pname in ("cls_register_token", "cls_token"):
        return ("normal", 1.0, 0.0)
    raise RuntimeError(f"no init rule for parameter {full} ({cname}.{pname})")


@torch.no_grad()
def init_weights(model, spec, device="cpu"):
    """Overwrite every parameter; each parameter has its own seeded generator."""
    seed = spec["seed"] * 1000003
    done = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            rule = _param_rule(module, pname, full, spec)
            g = seeded(seed, full, device=device)
            if rule[0] == "normal":
                v = _normal(tuple(p.shape), rule[1], g, device, mean=rule[2])
            elif rule[0] == "uniform":
                v = torch.rand(tuple(p.shape), generator=g, dtype=torch.float64 if device == "cpu" else torch.float32,
                               device=device) * (rule[2] - rule[1]) + rule[1]
            else:
                v = torch.full(tuple(p.shape), rule[1], dtype=torch.float64)
            p.copy_(v.to(device=p.device, dtype=p.dtype))
            done[full] = rule
    every = {n for n, _ in model.named_parameters()}
    missing = every - set(done)
    assert not missing, f"parameters left uninitialised: {sorted(missing)}"
    return done


# --------------------------------------------------------------------------------------
# Patches applied to the HF forward
# --------------------------------------------------------------------------------------

def _fname(func):
    q = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    mod = getattr(func, "__module__", None) or ""
    return f"{mod}.{q}" if q and mod and not q.startswith(("Tensor", "TensorBase", "_TensorBase")) else (q or repr(func))


class KeepFloat64(TorchFunctionMode):
    """Active only during the float64 truth run.

    Where HF code upcasts with ``.float()`` / ``.to(torch.float32)`` (RADIO input
    conditioner, RADIO position-embedding resize, InternVL RMSNorm), a float64 tensor
    would be rounded to float32.  This mode turns those conversions of float64
    tensors into no-ops, so every step stays in float64.  It counts what it rewrote
    and records any op that still produced a floating tensor that is not float64.
    """

    def __init__(self):
        super().__init__()
        self.rewrites = collections.Counter()
        self.violations = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if args and isinstance(args[0], torch.Tensor) and args[0].dtype == torch.float64:
            if name in ("float", "half", "bfloat16") and len(args) == 1 and not kwargs:
                self.rewrites[f"Tensor.{name}"] += 1
                return args[0]
            if name in ("to", "type"):
                new = list(args)
                changed = False
                for i in range(1, len(new)):
                    if isinstance(new[i], torch.dtype) and new[i] in LOW_FLOATS:
                        new[i] = torch.float64
                        changed = True
                if kwargs.get("dtype") in LOW_FLOATS:
                    kwargs["dtype"] = torch.float64
                    changed = True
                if changed:
                    self.rewrites[f"Tensor.{name}(low float dtype)"] += 1
                    args = tuple(new)
        out = func(*args, **kwargs)
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64:
                self.violations[_fname(func)] += 1
        return out


class CpeAlignCornersTrue(TorchFunctionMode):
    """Entered only inside the RADIO patch-embedding forward of radio_v2: forces
    align_corners=True on its bilinear F.interpolate call(s) (older NVlabs CPE)."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.interpolate:
            args = list(args)
            mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
            if mode == "bilinear":
                if len(args) > 4:
                    args[4] = True
                else:
                    kwargs["align_corners"] = True
                self.counter["interpolate(bilinear, align_corners->True)"] += 1
            args = tuple(args)
        return func(*args, **kwargs)


def find_radio_embeddings(model):
    found = [m for m in model.modules() if hasattr(m, "_interpolate_position_embedding")]
    if not found:
        found = [m for m in model.modules() if type(m).__name__ == "RadioPatchEmbeddings"]
    assert len(found) == 1, f"expected one RADIO patch-embedding module, found {len(found)}"
    return found[0]


def install_cpe_align_corners(model, counter):
    emb = find_radio_embeddings(model)
    orig = emb.forward

    def forward(*a, **k):
        with CpeAlignCornersTrue(counter):
            return orig(*a, **k)

    emb.forward = forward
    return model


# --------------------------------------------------------------------------------------
# Layout writers
# --------------------------------------------------------------------------------------

class Mapper:
    """Collects (hub key -> native tensor(s)) and checks that all native tensors are used."""

    def __init__(self, sd):
        self.sd = sd
        self.used = set()
        self.out = {}

    def take(self, key):
        if key not in self.sd:
            near = [k for k in self.sd if k.split(".")[0] == key.split(".")[0]][:40]
            raise KeyError(f"native key {key!r} not found; some keys: {near}")
        self.used.add(key)
        return self.sd[key]

    def copy(self, hub_key, native_key):
        self.out[hub_key] = self.take(native_key).detach().to(torch.float32).contiguous().clone()

    def fuse(self, hub_key, native_keys):
        self.out[hub_key] = torch.cat([self.take(k).detach().to(torch.float32) for k in native_keys], 0).contiguous()

    def finish(self, allow_unused=()):
        left = set(self.sd) - self.used - set(allow_unused)
        assert not left, f"native tensors not written to the hub layout: {sorted(left)}"
        return self.out


def radio_hub_tensors(model, spec):
    sd = {k: v for k, v in model.state_dict().items()}
    cfg = model.config
    m = Mapper(sd)
    pg = "radio_model.model.patch_generator."
    m.copy(pg + "embedder.weight", "embeddings.patch_projection.weight")
    m.copy(pg + "pos_embed", "embeddings.position_embedding")
    m.copy(pg + "cls_token.token", "embeddings.cls_register_token")
    skipped = []
    for i in range(cfg.num_hidden_layers):
        s, d = f"encoder.layer.{i}.", f"radio_model.model.blocks.{i}."
        for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            m.copy(d + n + ".weight", s + n + ".weight")
            m.copy(d + n + ".bias", s + n + ".bias")
        att = s + "attention.attention."
        m.fuse(d + "attn.qkv.weight", [att + "query.weight", att + "key.weight", att + "value.weight"])
        if cfg.qkv_bias:
            m.fuse(d + "attn.qkv.bias", [att + "query.bias", att + "key.bias", att + "value.bias"])
        m.copy(d + "attn.proj.weight", s + "attention.output.dense.weight")
        m.copy(d + "attn.proj.bias", s + "attention.output.dense.bias")
        for j in (1, 2):
            nk = f"{s}layer_scale{j}.lambda1"
            if spec["layerscale"]:
                m.copy(f"{d}ls{j}.gamma", nk)
            else:
                assert torch.all(sd[nk] == 1.0), f"{nk} must be exactly 1 without LayerScale"
                m.take(nk)
                skipped.append(nk)
    mean = model.input_conditioner.norm_mean.detach().to(torch.float32).reshape(3, 1, 1).contiguous().clone()
    std = model.input_conditioner.norm_std.detach().to(torch.float32).reshape(3, 1, 1).contiguous().clone()
    m.out["radio_model.input_conditioner.norm_mean"] = mean
    m.out["radio_model.input_conditioner.norm_std"] = std
    for k in ("input_conditioner.norm_mean", "input_conditioner.norm_std"):
        if k in sd:
            m.take(k)
    m.out["radio_model.summary_idxs"] = model.summary_idxs.detach().to(torch.int64).contiguous().clone()
    if "summary_idxs" in sd:
        m.take("summary_idxs")
    return m.finish(), skipped


def internvit_hub_tensors(model, spec):
    sd = {k: v for k, v in model.state_dict().items()}
    cfg = model.config
    m = Mapper(sd)
    m.copy("embeddings.class_embedding", "embeddings.cls_token")
    m.copy("embeddings.patch_embedding.weight", "embeddings.patch_embeddings.projection.weight")
    m.copy("embeddings.patch_embedding.bias", "embeddings.patch_embeddings.projection.bias")
    m.copy("embeddings.position_embedding", "embeddings.position_embeddings")
    for i in range(cfg.num_hidden_layers):
        s, d = f"encoder.layer.{i}.", f"encoder.layers.{i}."
        a = s + "attention."
        m.fuse(d + "attn.qkv.weight", [a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"])
        if cfg.attention_bias:
            m.fuse(d + "attn.qkv.bias", [a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"])
        if cfg.use_qk_norm:
            m.copy(d + "attn.q_norm.weight", a + "q_norm.weight")
            m.copy(d + "attn.k_norm.weight", a + "k_norm.weight")
        m.copy(d + "attn.proj.weight", a + "projection_layer.weight")
        m.copy(d + "attn.proj.bias", a + "projection_layer.bias")
        for hub_n, nat_n in (("norm1", "layernorm_before"), ("norm2", "layernorm_after")):
            m.copy(d + hub_n + ".weight", s + nat_n + ".weight")
            if cfg.norm_type == "layer_norm":
                m.copy(d + hub_n + ".bias", s + nat_n + ".bias")
        for n in ("mlp.fc1", "mlp.fc2"):
            m.copy(d + n + ".weight", s + n + ".weight")
            m.copy(d + n + ".bias", s + n + ".bias")
        m.copy(d + "ls1", s + "lambda_1")
        m.copy(d + "ls2", s + "lambda_2")
    return m.finish(), []


def radio_hub_config(model_id, spec, cfg):
    h = spec["hub"]
    args = {
        "model": "vit_test_patch4" if cfg.patch_size == 4 else f"vit_test_patch{cfg.patch_size}",
        "num_heads": cfg.num_attention_heads,
        "teachers": h["teachers"],
        "cls_token_per_teacher": True,
        "register_multiple": h["register_multiple"],
        "cpe_num_registers": h["cpe_num_registers"],
        "cpe_max_size": cfg.max_img_size,
        "dtype": "float32",
    }
    if spec["cpe_align_corners"]:
        args["cpe_align_corners"] = True
    # consistency with the documented NVlabs rules
    names = []
    for t in h["teachers"]:
        if t["name"] not in names:
            names.append(t["name"])
    ncls = len(names)
    nreg = h["cpe_num_registers"] or (h["register_multiple"] - ncls % h["register_multiple"])
    sidx = [i for i, t in enumerate(h["teachers"]) if t.get("use_summary", True)]
    assert (ncls, nreg, sidx) == (cfg.num_cls_tokens, cfg.num_registers, list(cfg.summary_idxs)), (ncls, nreg, sidx)
    res = cfg.max_img_size
    return {"architectures": ["RADIOModel"], "version": f"{model_id}-test",
            "preferred_resolution": [res, res], "args": args}


def internvit_hub_config(spec, cfg):
    ps = cfg.patch_size if isinstance(cfg.patch_size, int) else list(cfg.patch_size)[0]
    im = cfg.image_size if isinstance(cfg.image_size, int) else list(cfg.image_size)[0]
    c = {
        "architectures": ["InternVisionModel"],
        "model_type": "intern_vit_6b",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_attention_heads": cfg.num_attention_heads,
        "num_hidden_layers": cfg.num_hidden_layers,
        "image_size": im,
        "patch_size": ps,
        "num_channels": 3,
        "qkv_bias": bool(cfg.attention_bias),
        "qk_normalization": bool(cfg.use_qk_norm),
        "norm_type": cfg.norm_type,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "initializer_factor": spec["hub"]["initializer_factor"],
        "drop_path_rate": 0.0,
        "use_flash_attn": False,
    }
    if spec["hub"]["omit_norm_type"]:
        assert cfg.norm_type == "rms_norm"
        del c["norm_type"]
    return c


ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
             torch.uint8: "U8", torch.bool: "BOOL"}


def save_file(tensors, path, metadata=None):
    """Write a safetensors file byte-for-byte reproducibly.

    (safetensors' own writer serialises ``__metadata__`` from a hash map, so the key order
    in the header, and with it the file bytes, changes from run to run.)  Same format:
    u64 little-endian header length, JSON header padded with spaces to a multiple of 8,
    then the raw little-endian data.  Tensors are laid out by element size (largest
    first), then by name, so every tensor starts at an offset aligned to its element size.
    """
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(metadata[k]) for k in sorted(metadata)}
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    blobs, off = [], 0
    for k in order:
        t = tensors[k].detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[k] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for raw in blobs:
            f.write(raw)
    # read back with the reference reader
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        assert sorted(f.keys()) == sorted(tensors), path
        assert (f.metadata() or {}) == (header.get("__metadata__") or {}), path
        for k in tensors:
            a, b = f.get_tensor(k), tensors[k].detach().cpu()
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), (path, k)


def write_safetensors_sharded(tensors, out_dir, n_shards):
    os.makedirs(out_dir, exist_ok=True)
    keys = list(tensors)
    if n_shards <= 1:
        save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return None
    # split by order of keys (embeddings first, then blocks in order): equal-ish byte sizes
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    target = total / n_shards
    groups, cur, cur_bytes = [], [], 0
    for k in keys:
        b = tensors[k].numel() * tensors[k].element_size()
        if cur and cur_bytes + b > target and len(groups) < n_shards - 1:
            groups.append(cur)
            cur, cur_bytes = [], 0
        cur.append(k)
        cur_bytes += b
    groups.append(cur)
    n = len(groups)
    assert n >= 2, "sharding produced a single shard"
    weight_map = {}
    for i, g in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file({k: tensors[k] for k in g}, os.path.join(out_dir, fname), metadata={"format": "pt"})
        for k in g:
            weight_map[k] = fname
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return sorted(set(weight_map.values()))


def list_disk_keys(d):
    from safetensors import safe_open

    rows = []
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    for fn in files:
        with safe_open(os.path.join(d, fn), framework="pt") as f:
            for k in f.keys():
                sl = f.get_slice(k)
                rows.append([k, str(sl.get_dtype()), list(sl.get_shape()), fn])
    rows.sort()
    return rows, files


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


# --------------------------------------------------------------------------------------
# Forward passes
# --------------------------------------------------------------------------------------

def outputs_of(family, out):
    d = {"last_hidden_state": out.last_hidden_state}
    if family == "radio":
        d["summary"] = out.summary
        d["features"] = out.features
    # features/summary are views of last_hidden_state: give each its own storage
    return {k: v.detach().clone() for k, v in d.items()}


def load_native(spec, native_dir, dtype, attn=None):
    _, model_cls = hf_classes(spec["family"])
    kw = {"dtype": dtype}
    if attn:
        kw["attn_implementation"] = attn
    try:
        model = model_cls.from_pretrained(native_dir, **kw)
    except Exception as e:  # noqa: BLE001
        # our documented config extension ("cpe_align_corners") must not stop HF from loading;
        # if it does, note it and load with a config object that lacks the key
        with open(os.path.join(native_dir, "config.json")) as f:
            raw = json.load(f)
        if "cpe_align_corners" not in raw:
            raise
        EXTENSION_LOAD_ERRORS.append(f"{type(e).__name__}: {str(e)[:300]}")
        raw.pop("cpe_align_corners")
        cfg_cls, _ = hf_classes(spec["family"])
        model = model_cls.from_pretrained(native_dir, config=cfg_cls.from_dict(raw), **kw)
    model.eval()
    return model


EXTENSION_LOAD_ERRORS = []


def make_pixels(family, case_id, b, h, w):
    g = seeded(SEEDS["pixels_base"], case_id)
    u = torch.rand((b, 3, h, w), generator=g, dtype=torch.float64)
    if family == "radio":
        return u.to(torch.float32)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return ((u - mean) / std).to(torch.float32)


def token_errors(a, t):
    a = a.to(torch.float64)
    t = t.to(torch.float64)
    rel = (torch.linalg.vector_norm(a - t) / torch.linalg.vector_norm(t)).item()
    a2 = a.reshape(-1, a.shape[-1])
    t2 = t.reshape(-1, t.shape[-1])
    cos = (a2 * t2).sum(-1) / (a2.norm(dim=-1) * t2.norm(dim=-1))
    return {"rel_l2": rel, "mean_cos": cos.mean().item(), "min_cos": cos.min().item(),
            "max_abs": (a - t).abs().max().item()}


def run_model(model_id, spec, native_dir, out_root, *, truth_device, f32_device, gpu, manifest, patch_log):
    family = spec["family"]
    ac = bool(spec.get("cpe_align_corners", False))
    counters = {}

    def prep(model, tag):
        if ac:
            counters[tag] = collections.Counter()
            install_cpe_align_corners(model, counters[tag])
        return model

    case_ids = [f"{model_id}__{h}x{w}_b{b}" for (h, w, b) in spec["cases"]]
    results = {cid: {} for cid in case_ids}
    pixels = {cid: make_pixels(family, cid, b, h, w) for cid, (h, w, b) in zip(case_ids, spec["cases"])}

    # float64 truth: float32 checkpoint weights widened to float64 (no other change)
    m64 = load_native(spec, native_dir, torch.float32, attn="eager").to(device=truth_device, dtype=torch.float64)
    prep(m64, "f64")
    keep = KeepFloat64()
    with torch.inference_mode():
        for cid in case_ids:
            with keep:
                o = m64(pixel_values=pixels[cid].to(device=truth_device, dtype=torch.float64))
            for k, v in outputs_of(family, o).items():
                assert v.dtype == torch.float64
                results[cid][f"truth.{k}"] = v.detach().cpu().contiguous()
    patch_log["f64_keep_float64"][model_id] = {"rewrites": dict(keep.rewrites),
                                               "non_f64_ops": dict(keep.violations)}
    if keep.violations:
        log(f"WARNING {model_id}: float64 run produced non-float64 tensors: {dict(keep.violations)}")
    del m64

    # independent float64 forward from the hub layout (no transformers involved)
    hub_dir = os.path.join(out_root, "models", model_id + "_hub")
    if os.path.isdir(hub_dir):
        import fixtures_reference

        for cid in case_ids:
            ref = fixtures_reference.forward(family, hub_dir, pixels[cid].to(torch.float64))
            chk = {}
            for k, v in ref.items():
                t = results[cid][f"truth.{k}"]
                assert v.shape == t.shape, (cid, k, v.shape, t.shape)
                chk[k] = {"rel_l2": (torch.linalg.vector_norm(v - t) / torch.linalg.vector_norm(t)).item(),
                          "max_abs": (v - t).abs().max().item()}
            manifest["independent_check"][cid] = chk
            worst = max(c["rel_l2"] for c in chk.values())
            if not worst < 1e-10:
                log(f"WARNING {cid}: independent float64 reference differs from HF truth: {chk}")

    # float32, eager attention
    m32 = prep(load_native(spec, native_dir, torch.float32, attn="eager").to(f32_device), "f32")
    attn32 = m32.config._attn_implementation
    with torch.inference_mode():
        for cid in case_ids:
            o = m32(pixel_values=pixels[cid].to(f32_device))
            for k, v in outputs_of(family, o).items():
                assert v.dtype == torch.float32
                results[cid][f"hf.f32.{k}"] = v.detach().cpu().contiguous()
    del m32

    attn_low = {}
    if gpu:
        for tag, dt in (("f16", torch.float16), ("bf16", torch.bfloat16)):
            m = prep(load_native(spec, native_dir, dt).to("cuda"), tag)
            attn_low[tag] = m.config._attn_implementation
            with torch.inference_mode():
                for cid in case_ids:
                    o = m(pixel_values=pixels[cid].to("cuda").to(dt))
                    for k, v in outputs_of(family, o).items():
                        assert v.dtype == dt
                        results[cid][f"hf.{tag}.{k}"] = v.detach().cpu().contiguous()
            del m
            torch.cuda.empty_cache()

    if ac:
        n_fwd = len(case_ids)
        for tag, c in counters.items():
            total = sum(c.values())
            assert total >= n_fwd, f"align_corners patch fired {total} times for {n_fwd} forwards ({tag})"
        patch_log["radio_cpe_align_corners_true"][model_id] = {t: dict(c) for t, c in counters.items()}

    os.makedirs(os.path.join(out_root, "cases"), exist_ok=True)
    for cid, (h, w, b) in zip(case_ids, spec["cases"]):
        tensors = {"pixel_values": pixels[cid].contiguous()}
        tensors.update(results[cid])
        save_file(tensors, os.path.join(out_root, "cases", cid + ".safetensors"),
                  metadata={"model": model_id, "family": family})
        outs = ["last_hidden_state"] + (["summary", "features"] if family == "radio" else [])
        manifest["cases"][cid] = {"model": model_id, "batch": b, "height": h, "width": w, "outputs": outs,
                                  "pixel_seed": (SEEDS["pixels_base"] + zlib.crc32(cid.encode())) % (1 << 62),
                                  "pixel_space": "rgb_0_1" if family == "radio" else "imagenet_normalized",
                                  "keys": sorted(tensors)}
        errs = {}
        t = results[cid]["truth.last_hidden_state"]
        for tag in ("f32", "f16", "bf16"):
            k = f"hf.{tag}.last_hidden_state"
            if k in results[cid]:
                errs[tag] = token_errors(results[cid][k], t)
        manifest["hf_self_error"][cid] = errs
    return {"f64": f"eager ({truth_device})", "f32": f"{attn32} ({f32_device})",
            **{k: f"{v} (cuda)" for k, v in attn_low.items()}}


# --------------------------------------------------------------------------------------
# One model: build, save both layouts, check, run
# --------------------------------------------------------------------------------------

def state_diff(a, b):
    out = {}
    sa, sb = a.state_dict(), b.state_dict()
    for k in sorted(set(sa) | set(sb)):
        if k not in sa or k not in sb:
            out[k] = "missing in " + ("reloaded" if k not in sb else "original")
            continue
        x, y = sa[k], sb[k].to(sa[k].device)
        if x.shape != y.shape:
            out[k] = f"shape {tuple(x.shape)} vs {tuple(y.shape)}"
            continue
        if x.dtype != y.dtype:
            out[k] = f"dtype {x.dtype} vs {y.dtype}"
            continue
        if not torch.equal(x, y):
            out[k] = (x.double() - y.double()).abs().max().item()
    return out


def do_model(model_id, spec, out_root, args, manifest, patch_log, device_for_init):
    family = spec["family"]
    t0 = time.time()
    _, model_cls = hf_classes(family)
    cfg = build_config(spec)
    if device_for_init == "cpu":
        model = model_cls(cfg)
    else:
        with torch.device(device_for_init):
            model = model_cls(cfg)
    model.eval()
    init_weights(model, spec, device=device_for_init)
    model = model.to(torch.float32)

    native_dir = os.path.join(out_root, "models", model_id)
    hub_dir = os.path.join(out_root, "models", model_id + "_hub")
    for d in (native_dir, hub_dir):
        if os.path.exists(d):
            shutil.rmtree(d)

    # ---- native layout
    save_kw = {}
    if spec.get("native_max_shard_size"):
        save_kw["max_shard_size"] = spec["native_max_shard_size"]
    model.save_pretrained(native_dir, **save_kw)
    disk_rows, disk_files = list_disk_keys(native_dir)
    native_index = os.path.exists(os.path.join(native_dir, "model.safetensors.index.json"))
    if family == "radio" and spec["cpe_align_corners"]:
        p = os.path.join(native_dir, "config.json")
        with open(p) as f:
            c = json.load(f)
        c["cpe_align_corners"] = True
        write_json(p, c)
    with open(os.path.join(native_dir, "config.json")) as f:
        native_config = json.load(f)

    # reload exactly as a user would; it must reproduce the in-memory model
    reloaded = load_native(spec, native_dir, torch.float32, attn="eager")
    rt = state_diff(model, reloaded)
    if rt:
        raise RuntimeError(f"{model_id}: save_pretrained/from_pretrained round trip changed tensors: {rt}")
    del reloaded

    # ---- hub layout (from the in-memory model)
    if "hub" in args.layouts:
        if family == "radio":
            hub_t, skipped = radio_hub_tensors(model, spec)
            hub_cfg = radio_hub_config(model_id, spec, model.config)
        else:
            hub_t, skipped = internvit_hub_tensors(model, spec)
            hub_cfg = internvit_hub_config(spec, model.config)
        hub_t = {k: v.cpu() for k, v in hub_t.items()}
        hub_files = write_safetensors_sharded(hub_t, hub_dir, spec["hub_shards"])
        write_json(os.path.join(hub_dir, "config.json"), hub_cfg)
        hub_check = None if args.full else check_hub_with_hf(spec, model, native_config, hub_t)
    else:
        hub_t, skipped, hub_files, hub_check = {}, [], None, None

    c = model.config
    if family == "radio":
        dims = {"hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
                "num_attention_heads": c.num_attention_heads, "mlp_hidden": int(c.hidden_size * c.mlp_ratio),
                "patch_size": c.patch_size, "max_img_size": c.max_img_size, "pos_grid": c.max_img_size // c.patch_size,
                "num_cls_tokens": c.num_cls_tokens, "num_registers": c.num_registers,
                "summary_idxs": list(c.summary_idxs), "qkv_bias": c.qkv_bias, "layerscale": spec["layerscale"],
                "hidden_act": c.hidden_act, "layer_norm_eps": c.layer_norm_eps,
                "norm_mean": list(c.norm_mean), "norm_std": list(c.norm_std)}
    else:
        ps = c.patch_size if isinstance(c.patch_size, int) else list(c.patch_size)[0]
        im = c.image_size if isinstance(c.image_size, int) else list(c.image_size)[0]
        dims = {"hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
                "num_attention_heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
                "patch_size": ps, "image_size": im, "pos_grid": im // ps, "norm_type": c.norm_type,
                "use_qk_norm": c.use_qk_norm, "attention_bias": c.attention_bias, "layerscale": True,
                "hidden_act": c.hidden_act, "layer_norm_eps": c.layer_norm_eps,
                "use_mean_pooling": getattr(c, "use_mean_pooling", None)}
    entry = {
        "family": family,
        "seed": spec["seed"],
        "layouts": {"native": f"models/{model_id}"},
        "config": dims,
        "native_config_json": native_config,
        "in_memory_state_dict": [[k, str(v.dtype), list(v.shape)] for k, v in model.state_dict().items()],
        "save_pretrained_keys": {"count": len(disk_rows), "keys": disk_rows},
        "sharded": {"native": disk_files if native_index else None, "hub": hub_files},
        "hub_check": hub_check,
        "native_key_style": ("original RADIO names (radio_model.*, fused attn.qkv)"
                             if any(r[0].startswith("radio_model.") for r in disk_rows) else "transformers module names"),
        "layerscale_keys_on_disk": [r[0] for r in disk_rows if ("layer_scale" in r[0] or "lambda" in r[0])
                                    and (".0." in r[0])],
    }
    if hub_t:
        entry["layouts"]["hub"] = f"models/{model_id}_hub"
        entry["hub_keys"] = sorted(hub_t)
        entry["hub_not_written_identity_layerscale"] = skipped
    if family == "radio":
        entry["cpe_align_corners"] = bool(spec["cpe_align_corners"])
    manifest["models"][model_id] = entry
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    attn = run_model(model_id, spec, native_dir, out_root,
                     truth_device=args.truth_device, f32_device=args.f32_device,
                     gpu=args.gpu, manifest=manifest, patch_log=patch_log)
    manifest["attention"][model_id] = attn
    log(f"[{model_id}] done in {time.time() - t0:.1f}s; native files {disk_files}; hub files {hub_files}")


def check_hub_with_hf(spec, model, native_config, hub_t):
    """Try to load the hub tensors into HF (native config.json + hub weights) and
    compare with the model; transformers' conversion mapping may or may not know the
    original names.  Informational only."""
    res = {}
    with tempfile.TemporaryDirectory() as td:
        cfg = dict(native_config)
        cfg.pop("cpe_align_corners", None)
        write_json(os.path.join(td, "config.json"), cfg)
        save_file(hub_t, os.path.join(td, "model.safetensors"))
        try:
            m2 = load_native(spec, td, torch.float32, attn="eager")
            d = state_diff(model.cpu(), m2)
            res["what"] = ("RadioModel/InternVLVisionModel.from_pretrained on (native config.json + hub-layout "
                           "weights): does transformers' own key conversion reproduce the model?")
            res["from_pretrained_raised"] = False
            res["reproduces_model"] = not d
            res["tensors_differing"] = len(d)
            # names only: tensors HF could not find are filled by its own (unseeded) init
            res["differing_tensors"] = sorted(d)[:12]
        except Exception as e:  # noqa: BLE001
            res["from_pretrained_raised"] = True
            res["reproduces_model"] = False
            res["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    return res


# --------------------------------------------------------------------------------------
# F.interpolate references
# --------------------------------------------------------------------------------------

def gen_interp(path):
    tensors, meta = {}, {}
    for mode, lst in (("bilinear", INTERP_BILINEAR), ("bicubic", INTERP_BICUBIC)):
        for (hin, win), (hout, wout) in lst:
            for ac in (False, True):
                name = f"{mode}_{hin}x{win}_to_{hout}x{wout}_ac{int(ac)}"
                g = seeded(SEEDS["interp_base"], name)
                x = torch.randn((1, INTERP_CHANNELS, hin, win), generator=g, dtype=torch.float32)
                y = F.interpolate(x, size=(hout, wout), mode=mode, align_corners=ac, antialias=False)
                tensors[f"{name}.input"] = x[0].contiguous()
                tensors[f"{name}.output"] = y[0].contiguous()
                meta[name] = json.dumps({"mode": mode, "align_corners": ac, "in": [hin, win], "out": [hout, wout]})
    save_file(tensors, path, metadata=meta)
    return sorted(meta)


# --------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------

def discover(out_dir):
    import inspect
    import transformers

    os.makedirs(out_dir, exist_ok=True)
    log("torch", torch.__version__, "transformers", transformers.__version__, "python", sys.version)
    log("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    from transformers import InternVLVisionConfig, RadioConfig

    log("\n== RadioConfig() ==\n" + json.dumps(RadioConfig().to_dict(), indent=1, default=str))
    log("\n== InternVLVisionConfig() ==\n" + json.dumps(InternVLVisionConfig().to_dict(), indent=1, default=str))
    for mid, spec in TINY_MODELS.items():
        cfg = build_config(spec)
        _, mcls = hf_classes(spec["family"])
        m = mcls(cfg)
        log(f"\n== {mid}: config ==\n" + json.dumps(cfg.to_dict(), indent=1, default=str))
        log(f"\n== {mid}: module tree ==\n{m}")
        log(f"\n== {mid}: state_dict ==")
        for k, v in m.state_dict().items():
            log(f"  {k} {tuple(v.shape)} {v.dtype}")
        log(f"== {mid}: buffers (all) ==")
        for k, v in m.named_buffers():
            log(f"  {k} {tuple(v.shape)} {v.dtype}")
        with tempfile.TemporaryDirectory() as td:
            m.save_pretrained(td)
            rows, files = list_disk_keys(td)
            log(f"== {mid}: save_pretrained files {sorted(os.listdir(td))} ==")
            for r in rows:
                log("  ", r)
            with open(os.path.join(td, "config.json")) as f:
                log(f.read())
    # source of the installed modules, for reading
    import transformers.models.internvl.configuration_internvl as ci
    import transformers.models.internvl.modeling_internvl as mi
    import transformers.models.radio.configuration_radio as cr
    import transformers.models.radio.modeling_radio as mr
    for mod in (mr, cr, mi, ci):
        shutil.copy(inspect.getsourcefile(mod), os.path.join(out_dir, os.path.basename(inspect.getsourcefile(mod))))
    try:
        import transformers.conversion_mapping as cm
        src = inspect.getsource(cm)
        shutil.copy(inspect.getsourcefile(cm), os.path.join(out_dir, "conversion_mapping.py"))
        lines = src.splitlines()
        for i, line in enumerate(lines):
            if "radio" in line.lower() or "internvl" in line.lower():
                log(f"conversion_mapping L{i + 1}: {line}")
    except Exception as e:  # noqa: BLE001
        log("conversion_mapping not readable:", e)
    from transformers.activations import ACT2FN
    log("ACT2FN['gelu'] =", ACT2FN["gelu"], getattr(ACT2FN["gelu"], "act", None))


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def print_table(manifest):
    log("\nHF self-error vs float64 truth (last_hidden_state)")
    log(f"{'case':36s} {'prec':5s} {'rel_l2':>10s} {'mean_cos':>12s} {'min_cos':>12s} {'max_abs':>10s}")
    for cid, e in manifest["hf_self_error"].items():
        for tag, v in e.items():
            log(f"{cid:36s} {tag:5s} {v['rel_l2']:10.3e} {v['mean_cos']:12.9f} {v['min_cos']:12.9f} {v['max_abs']:10.3e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--full", action="store_true", help="full-size random-weight models (GPU, large output)")
    ap.add_argument("--models", default=None, help="comma-separated model ids to generate (default: all)")
    ap.add_argument("--sizes", default=None, help="comma-separated HxW filters, e.g. 224x224,432x640")
    ap.add_argument("--layouts", default=None, help="native,hub (default: both for tiny, native for --full)")
    ap.add_argument("--no-gpu", action="store_true", help="skip the f16/bf16 CUDA runs")
    ap.add_argument("--discover", action="store_true", help="print what the installed transformers does, exit")
    args = ap.parse_args()

    transformers = check_versions()
    if args.discover:
        discover(args.out)
        return

    torch.manual_seed(0)  # HF's own init draws from the global generator before we overwrite every weight
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    args.gpu = torch.cuda.is_available() and not args.no_gpu
    if not args.gpu and not args.no_gpu:
        raise SystemExit("no CUDA GPU: the f16/bf16 references need one (pass --no-gpu to skip them)")
    models = FULL_MODELS if args.full else TINY_MODELS
    if args.models:
        want = args.models.split(",")
        unknown = set(want) - set(models)
        if unknown:
            raise SystemExit(f"unknown model ids {sorted(unknown)}; known: {sorted(models)}")
        models = {k: v for k, v in models.items() if k in want}
    if args.sizes:
        keep = {tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")}
        models = {k: dict(v, cases=[c for c in v["cases"] if (c[0], c[1]) in keep]) for k, v in models.items()}
    args.layouts = (args.layouts or ("native" if args.full else "native,hub")).split(",")
    args.truth_device = "cuda" if args.full else "cpu"
    args.f32_device = "cuda" if args.full else "cpu"
    init_device = "cuda" if args.full else "cpu"

    out_root = args.out
    os.makedirs(out_root, exist_ok=True)
    manifest = {
        "generator": "scripts/gen_fixtures.py",
        "command": "python3 scripts/gen_fixtures.py " + " ".join(sys.argv[1:]),
        "canonical_command": "PYTHONUNBUFFERED=1 python3 scripts/gen_fixtures.py --out tests/fixtures"
        + (" --full" if args.full else ""),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if args.gpu else None,
        "cpu": platform.processor() or platform.machine(),
        "torch_num_threads": torch.get_num_threads(),
        "mode": "full" if args.full else "tiny",
        "seeds": dict(SEEDS, models={k: v["seed"] for k, v in models.items()}),
        "precisions": {
            "truth": f"float64 on {args.truth_device}; weights are the float32 checkpoint values widened to "
                     "float64; eager attention; KeepFloat64 patch (see patches)",
            "hf.f32": f"float32 on {args.f32_device}, eager attention, TF32 off",
            "hf.f16": "from_pretrained(native dir, dtype=torch.float16).to('cuda'); pixel_values.to('cuda').to(float16); "
                      "default attention implementation",
            "hf.bf16": "same with torch.bfloat16",
        },
        "weight_init": "Linear/Conv weight N(0, 1/fan_in); biases N(0, 0.1^2); LayerNorm/RMSNorm/qk-norm weight "
                       "1 + 0.2 N(0,1); LayerNorm bias N(0, 0.1^2); position embeddings N(0, 0.5^2); cls/register "
                       "tokens and InternViT class embedding N(0,1); LayerScale U[0.2, 1.5] (radio_v4: exactly 1)",
        "patches": {
            "f64_keep_float64": {
                "what": "float64 truth run only: a TorchFunctionMode makes Tensor.float()/.half()/.bfloat16() and "
                        "Tensor.to(<float32|float16|bfloat16>) no-ops on float64 tensors, so the HF upcasts "
                        "(RADIO input conditioner and position-embedding resize; InternVL RMSNorm and qk-norm) "
                        "stay in float64. Counts of rewritten calls and any op that still produced a "
                        "non-float64 floating tensor are listed per model.",
            },
            "radio_cpe_align_corners_true": {
                "what": "radio_v2 only, in every run (f64/f32/f16/bf16): inside the RADIO patch-embedding forward, "
                        "bilinear F.interpolate is called with align_corners=True instead of HF's hard-coded False "
                        "(the older NVlabs CPE). Counts of patched calls per run are listed.",
            },
        },
        "independent_check_what": "scripts/fixtures_reference.py recomputes every case in float64 from the "
                                  "hub-layout files alone (no transformers); rel_l2/max_abs vs truth.*",
        "attention": {},
        "models": {},
        "cases": {},
        "hf_self_error": {},
        "independent_check": {},
    }
    patch_log = {"f64_keep_float64": {}, "radio_cpe_align_corners_true": {}}
    failures = {}
    for mid, spec in models.items():
        try:
            do_model(mid, spec, out_root, args, manifest, patch_log, init_device)
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            failures[mid] = f"{type(e).__name__}: {e}"
    for k, v in patch_log.items():
        manifest["patches"][k]["per_model"] = v
    if not args.full:
        manifest["interp"] = {"file": "interp.safetensors", "channels": INTERP_CHANNELS, "dtype": "float32",
                              "device": "cpu", "antialias": False,
                              "cases": gen_interp(os.path.join(out_root, "interp.safetensors"))}
    manifest["native_config_extension_load_errors"] = EXTENSION_LOAD_ERRORS[:3]
    if failures:
        manifest["failures"] = failures
    write_json(os.path.join(out_root, "MANIFEST.json"), manifest)
    print_table(manifest)
    if failures:
        log("FAILURES:", json.dumps(failures, indent=1))
        sys.exit(1)


if __name__ == "__main__":
    main()
