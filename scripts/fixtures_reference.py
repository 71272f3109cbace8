"""Independent float64 forward passes of RADIO and InternViT, read from the HUB layout.

Used by gen_fixtures.py as a cross-check: it does not touch transformers at all, only
the hub-layout safetensors + config.json this project writes, and follows the
semantics in shared/notes/reference-semantics.md.  If it agrees with the HF float64
truth to ~1e-12, then (a) the hub layout written by gen_fixtures.py is complete and
correctly named/ordered, and (b) the forward semantics the Rust engine implements
(same as this file) are the ones HF computes.
"""

from __future__ import annotations

import json
import math
import os

import torch
import torch.nn.functional as F

EPS = 1e-6


def load_dir(d):
    """All tensors of a (possibly sharded) safetensors folder, plus its config.json."""
    from safetensors import safe_open

    tensors = {}
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(d, fn), framework="pt") as f:
                for k in f.keys():
                    assert k not in tensors, k
                    tensors[k] = f.get_tensor(k)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    return tensors, cfg


def _rms(x, w, eps=EPS):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _ln(x, w, b, eps=EPS):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def _attention(x, wqkv, bqkv, wo, bo, heads, qn=None, kn=None):
    bsz, n, d = x.shape
    qkv = x @ wqkv.T
    if bqkv is not None:
        qkv = qkv + bqkv
    q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
    if qn is not None:  # qk-norm over the full width, before the head split
        q, k = _rms(q, qn), _rms(k, kn)
    dh = d // heads

    def split(t):
        return t.reshape(bsz, n, heads, dh).permute(0, 2, 1, 3)

    q, k, v = split(q), split(k), split(v)
    p = torch.softmax((q @ k.transpose(-1, -2)) * dh ** -0.5, dim=-1)
    o = (p @ v).permute(0, 2, 1, 3).reshape(bsz, n, d)
    return o @ wo.T + bo


def _mlp(x, w1, b1, w2, b2):
    return F.gelu(x @ w1.T + b1) @ w2.T + b2


def radio_forward(tensors, cfg, pixels):
    """pixels: float64 [B,3,H,W] in [0,1]. Returns dict(last_hidden_state, summary, features)."""
    T = {k: (v.double() if v.is_floating_point() else v) for k, v in tensors.items()}
    args = cfg["args"]
    heads = args["num_heads"]
    ac = bool(args.get("cpe_align_corners", False))
    pg = "radio_model.model.patch_generator."
    x = (pixels - T["radio_model.input_conditioner.norm_mean"]) / T["radio_model.input_conditioner.norm_std"]
    w_emb = T[pg + "embedder.weight"]
    d, kdim = w_emb.shape
    p = int(round(math.sqrt(kdim / 3)))
    b, c, hh, ww = x.shape
    h, w = hh // p, ww // p
    tok = x.reshape(b, c, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, c * p * p) @ w_emb.T
    pos = T[pg + "pos_embed"]
    r = math.isqrt(pos.shape[1])
    grid = pos.reshape(1, r, r, d).permute(0, 3, 1, 2)
    m = max(h, w)
    grid = F.interpolate(grid, size=(m, m), mode="bilinear", align_corners=ac)[:, :, :h, :w]
    tok = tok + grid.reshape(1, d, h * w).permute(0, 2, 1)
    prefix = T[pg + "cls_token.token"]
    x = torch.cat([prefix.unsqueeze(0).expand(b, -1, -1), tok], 1)
    nblocks = 1 + max(int(k.split(".")[3]) for k in T if k.startswith("radio_model.model.blocks."))
    for i in range(nblocks):
        s = f"radio_model.model.blocks.{i}."
        ls1 = T.get(s + "ls1.gamma")
        ls2 = T.get(s + "ls2.gamma")
        a = _attention(_ln(x, T[s + "norm1.weight"], T[s + "norm1.bias"]), T[s + "attn.qkv.weight"],
                       T.get(s + "attn.qkv.bias"), T[s + "attn.proj.weight"], T[s + "attn.proj.bias"], heads)
        x = x + (a * ls1 if ls1 is not None else a)
        f = _mlp(_ln(x, T[s + "norm2.weight"], T[s + "norm2.bias"]), T[s + "mlp.fc1.weight"],
                 T[s + "mlp.fc1.bias"], T[s + "mlp.fc2.weight"], T[s + "mlp.fc2.bias"])
        x = x + (f * ls2 if ls2 is not None else f)
    names = []
    for t in args["teachers"]:
        if t["name"] not in names:
            names.append(t["name"])
    ncls = len(names) if args.get("cls_token_per_teacher", True) else 1
    sidx = T["radio_model.summary_idxs"].tolist()
    summary = x[:, :ncls][:, sidx].flatten(1)
    features = x[:, prefix.shape[0]:]
    return {"last_hidden_state": x, "summary": summary, "features": features}


def internvit_forward(tensors, cfg, pixels):
    """pixels: float64 [B,3,H,W], already ImageNet-normalised. Returns dict(last_hidden_state)."""
    T = {k: v.double() for k, v in tensors.items()}
    heads = cfg["num_attention_heads"]
    norm_type = cfg.get("norm_type", "rms_norm")  # legacy configs without the key mean RMSNorm
    eps = cfg.get("layer_norm_eps", EPS)
    wc = T["embeddings.patch_embedding.weight"]
    d, _, p, _ = wc.shape
    b, _, hh, ww = pixels.shape
    h, w = hh // p, ww // p
    tok = F.conv2d(pixels, wc, T["embeddings.patch_embedding.bias"], stride=p).flatten(2).transpose(1, 2)
    pos = T["embeddings.position_embedding"]
    g = math.isqrt(pos.shape[1] - 1)
    if not (h * w == g * g and hh == ww):  # transformers' shortcut; elsewhere an exact identity anyway
        grid = pos[:, 1:].reshape(1, g, g, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, d)], 1)
    x = torch.cat([T["embeddings.class_embedding"].expand(b, -1, -1), tok], 1) + pos

    def norm(t, s):
        if norm_type == "rms_norm":
            return _rms(t, T[s + ".weight"], eps)
        return _ln(t, T[s + ".weight"], T[s + ".bias"], eps)

    nlayers = 1 + max(int(k.split(".")[2]) for k in T if k.startswith("encoder.layers."))
    for i in range(nlayers):
        s = f"encoder.layers.{i}."
        a = _attention(norm(x, s + "norm1"), T[s + "attn.qkv.weight"], T.get(s + "attn.qkv.bias"),
                       T[s + "attn.proj.weight"], T[s + "attn.proj.bias"], heads,
                       T.get(s + "attn.q_norm.weight"), T.get(s + "attn.k_norm.weight"))
        x = x + a * T[s + "ls1"]
        f = _mlp(norm(x, s + "norm2"), T[s + "mlp.fc1.weight"], T[s + "mlp.fc1.bias"],
                 T[s + "mlp.fc2.weight"], T[s + "mlp.fc2.bias"])
        x = x + f * T[s + "ls2"]
    return {"last_hidden_state": x}


def forward(family, hub_dir, pixels):
    tensors, cfg = load_dir(hub_dir)
    with torch.no_grad():
        if family == "radio":
            return radio_forward(tensors, cfg, pixels.double())
        return internvit_forward(tensors, cfg, pixels.double())
