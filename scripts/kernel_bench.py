#!/usr/bin/env python3
"""Op-level benchmark: vitrine's compiled CUDA kernels against PyTorch on the same tensors.

Runs on the GPU machine (PyTorch there, no Rust needed). Loads our kernel
images (fatbin or cubin) through the CUDA driver API with ctypes, launches
them on PyTorch's current stream on tensors PyTorch allocated, and times both
sides with CUDA events in one process:

  * fused attention on the shapes the encoders run (packed sequences, q/k/v as
    column slices of one [T, 3D] buffer, as the model calls it), against
    `F.scaled_dot_product_attention` with the flash backend on [B, H, N, d];
  * exact GELU and LayerNorm on the MLP and residual-stream shapes.

Each of our results is also checked against an fp32 PyTorch computation
(max abs error, next to PyTorch's own half-precision error), so a fast but
wrong variant shows up at once.

  python3 scripts/kernel_bench.py KERNEL_DIR [--variant NAME=attention.cubin ...]

KERNEL_DIR holds attention.fatbin, elementwise.fatbin, norm.fatbin
(scripts/compile-kernels.sh cuda OUT writes them to OUT/cuda). Each
--variant is another attention image to time alongside (experiments).
"""
import argparse
import ctypes
import json
import math
import os

import torch
import torch.nn.functional as F

CUDA = ctypes.CDLL("libcuda.so.1")


def check(rc, what):
    if rc != 0:
        name = ctypes.c_char_p()
        CUDA.cuGetErrorName(rc, ctypes.byref(name))
        raise RuntimeError(f"{what}: {name.value.decode() if name.value else rc}")


class Module:
    def __init__(self, path):
        self.data = open(path, "rb").read()
        self.handle = ctypes.c_void_p()
        check(CUDA.cuModuleLoadData(ctypes.byref(self.handle), self.data), f"load {path}")
        self.path = path

    def function(self, name):
        f = ctypes.c_void_p()
        rc = CUDA.cuModuleGetFunction(ctypes.byref(f), self.handle, name.encode())
        return f if rc == 0 else None


def launch(func, grid, block, args, smem=0):
    """args: (ctype value) list in kernel-signature order; smem: dynamic shared bytes."""
    params = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    check(CUDA.cuLaunchKernel(func, grid, 1, 1, block, 1, 1, smem, stream, params, None), "launch")


def ptr(t):
    return ctypes.c_uint64(t.data_ptr())


def timed(fn, warmup=3, reps=15, inner=10):
    """Median over `reps` replays of a CUDA graph holding `inner` calls, per
    call: kernels of a few microseconds are then timed on the device, not
    behind Python's launch overhead. Both sides are timed this way."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(inner):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / inner)
    times.sort()
    return times[len(times) // 2]


def column_block_map(t, rows, width, ld, d):
    """The Hopper kernel's TMA map over a head-sliced matrix (as vitrine-gpu's
    ColumnBlockMap): {8 columns, rows, column blocks}, boxes of 64 rows × one
    head; encoded 64-byte aligned, returned as the 128 bytes to pass."""
    raw = (ctypes.c_uint64 * 24)()
    at = ctypes.addressof(raw) + (-ctypes.addressof(raw)) % 64
    check(CUDA.cuTensorMapEncodeTiled(
        ctypes.c_void_p(at), 1, 3, ctypes.c_void_p(t.data_ptr()),
        (ctypes.c_uint64 * 3)(8, rows, width // 8), (ctypes.c_uint64 * 2)(ld * 2, 16),
        (ctypes.c_uint32 * 3)(8, 64, d // 8), (ctypes.c_uint32 * 3)(1, 1, 1), 0, 0, 0, 0), "tensor map")
    out = (ctypes.c_uint64 * 16)()
    ctypes.memmove(out, at, 128)
    return out


def attention_case(mods, name, seqs, seqlen, heads, d, dtype):
    dev = "cuda"
    width = heads * d
    total = seqs * seqlen
    torch.manual_seed(0)
    qkv = torch.randn(total, 3 * width, device=dev, dtype=dtype)
    q, k, v = qkv[:, :width], qkv[:, width : 2 * width], qkv[:, 2 * width :]
    cu = torch.arange(0, total + 1, seqlen, device=dev, dtype=torch.int32)
    scale = d ** -0.5
    flops = 4.0 * seqs * heads * seqlen * seqlen * d

    def bhnd(x):
        return x.view(seqs, seqlen, heads, d).transpose(1, 2)

    ref = F.scaled_dot_product_attention(bhnd(q).float(), bhnd(k).float(), bhnd(v).float())
    ref = ref.transpose(1, 2).reshape(total, width)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        torch_fn = lambda: F.scaled_dot_product_attention(bhnd(q), bhnd(k), bhnd(v))
        theirs = torch_fn().transpose(1, 2).reshape(total, width)
        t_torch = timed(torch_fn)
    rows = [
        {
            "case": name, "impl": "torch-flash", "ms": round(t_torch, 4),
            "tflops": round(flops / t_torch / 1e9, 1),
            "max_abs_err": float((theirs.float() - ref).abs().max()),
        }
    ]
    sfx = {torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
    padded = next(p for p in (32, 64, 80, 96, 128) if p >= d)
    # Entry points: vt_flash_attention_<dt>_d<HD>_m<MT> (4 tile groups), and
    # for experiments lab_d<HD>_g<G>m<MT>_b<min blocks> (G tile groups).
    # Each config: (name, tag, rows per block, threads, dynamic shared bytes).
    configs = [(f"vt_flash_attention_{sfx}_d{padded}_m{mt}", f"m{mt}", 64 * mt, 128, 0) for mt in (1, 2)]
    configs += [(f"lab_d{padded}_g{g}m{mt}_b{b}", f"g{g}m{mt}b{b}", 16 * g * mt, 32 * g, 0)
                for g in (2, 4, 8) for mt in (1, 2) for b in (1, 2, 3, 4, 6)]
    # Hopper (sm_90a): vt_flash_attention_wg_<dt>_d<HD>_w<WG>, WG consumer
    # warpgroups (64·WG rows) and a producer warpgroup per block, a ring of 4
    # K/V tiles of 64 keys and their two mbarriers in dynamic shared memory,
    # then the consumers' Q tiles (64 rows of HD + 8 elements each) and their
    # two mbarriers; WG per head dim as in kernels/attention.cu; after the
    # shared arguments use_tma and TMA maps over Q, K and V. Persistent at
    # d64 and d80 (one block per multiprocessor, as vitrine-gpu's plan).
    for wg in {64: (3,), 80: (3,), 128: (3,)}.get(padded, ()):
        q_tiles = wg * 64 * (padded + 8) * 2 + 16
        configs.append((f"vt_flash_attention_wg_{sfx}_d{padded}_w{wg}", f"wgmma-w{wg}", 64 * wg, 128 * (wg + 1),
                        4 * (2 * 64 * padded * 2 + 16) + q_tiles))
    for label, mod in mods:
        for fname, tag, rows_per_block, threads, smem in configs:
            f = mod.function(fname)
            if f is None:
                continue
            if smem > 48 * 1024:
                check(CUDA.cuFuncSetAttribute(f, 8, smem), "max dynamic shared memory")
            out = torch.empty(total, width, device=dev, dtype=dtype)
            grid = seqs * heads * math.ceil(seqlen / rows_per_block)
            if fname.startswith("vt_flash_attention_wg_") and padded in (64, 80):
                grid = min(grid, torch.cuda.get_device_properties(0).multi_processor_count)
            args = [ptr(q), ctypes.c_int32(3 * width), ptr(k), ctypes.c_int32(3 * width), ptr(v),
                    ctypes.c_int32(3 * width), ptr(out), ctypes.c_int32(width), ptr(cu),
                    ctypes.c_int32(seqs), ctypes.c_int32(seqlen), ctypes.c_int32(heads),
                    ctypes.c_int32(d), ctypes.c_float(scale)]
            if fname.startswith("vt_flash_attention_wg_"):
                tma = d == padded
                args += [ctypes.c_int32(int(tma))] + [
                    column_block_map(x, total, width, 3 * width, d) if tma else (ctypes.c_uint64 * 16)()
                    for x in (q, k, v)]
            run = lambda: launch(f, grid, threads, args, smem)
            t = timed(run)
            run()
            torch.cuda.synchronize()
            rows.append({
                "case": name, "impl": f"{label}/{tag}", "ms": round(t, 4),
                "tflops": round(flops / t / 1e9, 1),
                "max_abs_err": float((out.float() - ref).abs().max()),
                "vs_torch": round(t_torch / t, 3),
            })
    return rows


def gelu_case(mods, rows_, cols, dtype):
    x = torch.randn(rows_, cols, device="cuda", dtype=dtype) * 3
    sfx = {torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
    n = x.numel()
    gb = 2 * n * x.element_size() / 1e9
    ref = F.gelu(x.float())
    t_torch = timed(lambda: F.gelu(x))
    case = f"gelu {rows_}x{cols}"
    out = [{"case": case, "impl": "torch", "ms": round(t_torch, 4), "GB/s": round(gb / t_torch * 1e3),
            "max_abs_err": float((F.gelu(x).float() - ref).abs().max())}]
    for label, mod in mods:
        f = mod.function(f"vt_gelu_{sfx}")
        if f is None:
            continue
        # the backend's grid (one thread per element, capped), and one per 16-byte pack
        for gname, grid in (("grid-n", min(math.ceil(n / 256), 65535)),
                            ("grid-packs", math.ceil(n / 8 / 256))):
            y = torch.empty_like(x)
            args = [ptr(x), ptr(y), ctypes.c_int64(n)]
            t = timed(lambda: launch(f, grid, 256, args))
            out.append({"case": case, "impl": f"{label}/{gname}", "ms": round(t, 4),
                        "GB/s": round(gb / t * 1e3), "max_abs_err": float((y.float() - ref).abs().max()),
                        "vs_torch": round(t_torch / t, 3)})
    return out


def layer_norm_case(mods, rows_, cols, dtype):
    x = torch.randn(rows_, cols, device="cuda", dtype=dtype)
    w = torch.randn(cols, device="cuda", dtype=dtype)
    b = torch.randn(cols, device="cuda", dtype=dtype)
    sfx = {torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
    gb = 2 * x.numel() * x.element_size() / 1e9
    ref = F.layer_norm(x.float(), (cols,), w.float(), b.float(), 1e-6)
    t_torch = timed(lambda: F.layer_norm(x, (cols,), w, b, 1e-6))
    case = f"layernorm {rows_}x{cols}"
    out = [{"case": case, "impl": "torch", "ms": round(t_torch, 4), "GB/s": round(gb / t_torch * 1e3),
            "max_abs_err": float((F.layer_norm(x, (cols,), w, b, 1e-6).float() - ref).abs().max())}]
    for label, mod in mods:
        f = mod.function(f"vt_layer_norm_warp_{sfx}")
        if f is None:
            continue
        warps = 4
        y = torch.empty_like(x)
        grid = min(math.ceil(rows_ / warps), 65535)
        args = [ptr(x), ctypes.c_int32(cols), ptr(w), ptr(b), ptr(y), ctypes.c_int32(cols),
                ctypes.c_int32(rows_), ctypes.c_int32(cols), ctypes.c_float(1e-6)]
        t = timed(lambda: launch(f, grid, 32 * warps, args))
        out.append({"case": case, "impl": label, "ms": round(t, 4), "GB/s": round(gb / t * 1e3),
                    "max_abs_err": float((y.float() - ref).abs().max()), "vs_torch": round(t_torch / t, 3)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernel_dir")
    ap.add_argument("--variant", action="append", default=[], help="NAME=path to another attention image")
    ap.add_argument("--ew-variant", action="append", default=[],
                    help="NAME=path to another image with vt_gelu_*/vt_layer_norm_warp_*")
    ap.add_argument("--only", choices=["attention", "elementwise", "all"], default="all")
    args = ap.parse_args()
    torch.zeros(1, device="cuda")  # make PyTorch's (primary) context current
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__}))
    rows = []
    if args.only in ("attention", "all"):
        mods = [("vitrine", Module(os.path.join(args.kernel_dir, "attention.fatbin")))]
        for v in args.variant:
            label, path = v.split("=", 1)
            mods.append((label, Module(path)))
        cases = [
            ("RADIO-H 512² b32", 32, 1034, 16, 80),
            ("RADIO-H 1024² b4", 4, 4106, 16, 80),
            ("InternViT-300M 448² b32", 32, 1025, 16, 64),
            ("RADIO-H 224² b1", 1, 206, 16, 80),
            ("RADIO-H 512² b1", 1, 1034, 16, 80),
            ("RADIO-H 1024² b1", 1, 4106, 16, 80),
            ("InternViT-300M 448² b1", 1, 1025, 16, 64),
            ("InternViT-300M 448² b2", 2, 1025, 16, 64),
            ("InternViT-300M 448² b3", 3, 1025, 16, 64),
            ("InternViT-300M 224² b1", 1, 257, 16, 64),
            ("InternViT-300M 224² b8", 8, 257, 16, 64),
            ("InternViT-6B 448² b8", 8, 1025, 25, 128),
            ("InternViT-6B 448² b1", 1, 1025, 25, 128),
            ("InternViT-6B 448² b2", 2, 1025, 25, 128),
        ]
        for name, seqs, n, h, d in cases:
            rows += attention_case(mods, name, seqs, n, h, d, torch.float16)
    if args.only in ("elementwise", "all"):
        extra = [(v.split("=", 1)[0], Module(v.split("=", 1)[1])) for v in args.ew_variant]
        ew = [("vitrine", Module(os.path.join(args.kernel_dir, "elementwise.fatbin")))] + extra
        nm = [("vitrine", Module(os.path.join(args.kernel_dir, "norm.fatbin")))] + extra
        rows += gelu_case(ew, 33088, 5120, torch.float16)
        rows += layer_norm_case(nm, 33088, 1280, torch.float16)
    for r in rows:
        print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main()
