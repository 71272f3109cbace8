#!/usr/bin/env python3
"""Checks vitrine's compiled CUDA kernels against PyTorch on a real GPU.

Run on a machine with an NVIDIA GPU, PyTorch and the driver library:

    scripts/compile-kernels.sh cuda .dev/kernels          # on the build machine
    python3 scripts/check_kernels_cuda.py --kernels .dev/kernels/cuda [--out DIR]

The kernels are loaded the way the Rust side loads them (driver API,
cuModuleLoadData on the fatbin, and again on the compute_80 PTX so the JIT
path is covered too) and launched through cuLaunchKernel with plain
arguments. PyTorch only provides inputs and references.

Every case poisons its output with NaN and surrounds it with guard memory
(and, for strided outputs, the gaps between rows) whose bits must be
unchanged afterwards, so unwritten elements and out-of-bounds writes fail.

Two references per case:
  ref64   the op's formula in float64 from the same (rounded) inputs; for
          the resizes, with PyTorch's float32 index and weight math, so that
          only the arithmetic precision differs;
  torch   PyTorch's own operator in the kernel's dtype (the parity target).
Gates: f32 NMSE(out, ref64) <= 1e-12 (1e-10 for attention's long fp32
sums); f16/bf16 error beyond the final rounding <= 2^-16 of max|ref| and
NMSE at the pure-rounding level (RMSNorm, which rounds twice by
definition: at most 2 ulp from its float64 twin); bit-exact ops (casts,
copies, un-normalised patchify) bit-exact. PyTorch-op differences are
reported, not gated.

Under compute-sanitizer pass --no-native: PyTorch 2.11's own flash SDPA
kernel trips memcheck on its own buffers.
"""
import argparse
import ctypes
import itertools
import math
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

DEV = torch.device("cuda")
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
GUARD = 1031  # elements of poison after every output buffer
NMSE_F32 = 1e-12
NMSE_F32_ATTN = 1e-10
# f16/bf16: error beyond the final rounding, relative to max|ref| (see record).
EXCESS_HALF = 2.0 ** -16
# Pure final-rounding NMSE is ~4e-8 (f16) and ~3e-6 (bf16) on these inputs.
NMSE_HALF = {"f16": 1e-7, "bf16": 6e-6}


# --------------------------------------------------------------------------
# Driver API through ctypes: the same calls the Rust side makes.
# --------------------------------------------------------------------------
class Driver:
    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")
        L = self.lib
        vp = ctypes.c_void_p
        L.cuGetErrorName.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        L.cuModuleLoadData.argtypes = [ctypes.POINTER(vp), vp]
        L.cuModuleGetFunction.argtypes = [ctypes.POINTER(vp), vp, ctypes.c_char_p]
        L.cuLaunchKernel.argtypes = [vp] + [ctypes.c_uint] * 7 + [vp, vp, vp]
        L.cuCtxGetCurrent.argtypes = [ctypes.POINTER(vp)]
        torch.zeros(1, device=DEV)
        torch.cuda.synchronize()  # PyTorch made the primary context current
        ctx = vp()
        self.check(L.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
        if not ctx.value:
            raise RuntimeError("no current CUDA context")

    def check(self, rc, what):
        if rc != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(rc, ctypes.byref(name))
            raise RuntimeError(f"{what} failed: {name.value.decode() if name.value else rc}")

    def load(self, path):
        with open(path, "rb") as f:
            data = f.read()
        buf = ctypes.create_string_buffer(data)  # NUL-terminated, as PTX text must be
        mod = ctypes.c_void_p()
        self.check(self.lib.cuModuleLoadData(ctypes.byref(mod), buf), f"cuModuleLoadData({path})")
        return mod

    def function(self, mod, name):
        fn = ctypes.c_void_p()
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(fn), mod, name.encode()),
                   f"cuModuleGetFunction({name})")
        return fn

    def launch(self, fn, grid, block, args):
        params = (ctypes.c_void_p * len(args))(
            *[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])
        torch.cuda.synchronize()
        self.check(self.lib.cuLaunchKernel(fn, grid, 1, 1, block, 1, 1, 0, None, params, None),
                   "cuLaunchKernel")
        self.check(self.lib.cuCtxSynchronize(), "kernel execution (cuCtxSynchronize)")


def P(t):
    return ctypes.c_void_p(t.data_ptr() if t is not None else None)


def I(x):
    return ctypes.c_int(int(x))


def L(x):
    return ctypes.c_long(int(x))


def F32(x):
    return ctypes.c_float(float(x))


SFX = list(DTYPES)
EXPECTED = {
    "norm": [f"vt_{op}_{t}" for op in ("layer_norm", "rms_norm") for t in SFX],
    "elementwise": [f"vt_{op}_{t}" for op in ("gelu", "residual", "broadcast_rows", "copy2d") for t in SFX]
    + [f"vt_cast_{a}_to_{b}" for a in SFX for b in SFX if a != b],
    "resize": [f"vt_resize_{m}_{t}" for m in ("bilinear", "bicubic") for t in SFX],
    "patchify": [f"vt_patchify_{t}" for t in SFX],
    "attention": [f"vt_attention_{t}" for t in SFX],
}


class Kernels:
    """All entry points of one build variant (fatbin or PTX)."""

    def __init__(self, drv, kdir, variant):
        self.drv, self.variant = drv, variant
        ext = ".fatbin" if variant == "fatbin" else ".compute_80.ptx"
        self.fns = {}
        for f, names in EXPECTED.items():
            mod = drv.load(os.path.join(kdir, f + ext))
            for n in names:
                self.fns[n] = drv.function(mod, n)

    def __call__(self, name, grid, block, *args):
        assert block % 32 == 0 and grid >= 1
        self.drv.launch(self.fns[name], int(grid), int(block), list(args))


# --------------------------------------------------------------------------
# Output canvases: NaN poison, guard tail, untouched-bits check.
# --------------------------------------------------------------------------
class Canvas:
    """A flat NaN-filled buffer; the kernel writes a (rows, cols, ld) view."""

    def __init__(self, dtype, rows, cols, ld=None, fill=None):
        ld = cols if ld is None else ld
        self.rows, self.cols, self.ld = rows, cols, ld
        n = (rows - 1) * ld + cols if rows > 0 else 0
        self.buf = torch.full((n + GUARD,), float("nan"), dtype=dtype, device=DEV)
        if fill is not None:
            self.view()[:] = fill
        self.before = self.buf.clone()

    def view(self, t=None):
        t = self.buf if t is None else t
        return t.as_strided((self.rows, self.cols), (self.ld, 1), 0)

    def untouched_violations(self):
        mask = torch.ones(self.buf.numel(), dtype=torch.bool, device=DEV)
        self.view(mask)[:] = False
        iv = INT_VIEW[self.buf.dtype]
        a = self.buf.view(iv)[mask]
        b = self.before.view(iv)[mask]
        return int((a != b).sum().item())


def ordered_bits(t):
    """Float bit patterns mapped to integers whose difference counts ulps."""
    t = t.contiguous()
    if t.dtype == torch.float32:
        b = t.view(torch.int32).to(torch.int64)
        mag = b & 0x7FFFFFFF
    else:
        b = t.view(torch.int16).to(torch.int64)
        mag = b & 0x7FFF
    return torch.where(b < 0, -mag, mag)


def max_ulp(a, b):
    na, nb = torch.isnan(a), torch.isnan(b)
    d = (ordered_bits(a) - ordered_bits(b)).abs()
    d = torch.where(na & nb, torch.zeros_like(d), d)
    d = torch.where(na ^ nb, torch.full_like(d, 1 << 40), d)
    return int(d.max().item()) if d.numel() else 0


def nmse(out, ref):
    o, r = out.double(), ref.double()
    fin = torch.isfinite(r) & torch.isfinite(o)
    if fin.sum() == 0:
        return 0.0, 0.0
    diff = (o - r)[fin]
    den = (r[fin] ** 2).mean().item()
    mse = (diff ** 2).mean().item()
    return (mse / den if den > 0 else mse), diff.abs().max().item()


RESULTS = []


NATIVE = True


def try_native(fn):
    """PyTorch's own op, or None where it does not support the case."""
    if not NATIVE:
        return None
    try:
        return fn()
    except Exception as exc:  # a missing PyTorch kernel is not our failure
        print(f"  (no PyTorch reference: {type(exc).__name__}: {exc})")
        return None


def ulp_spacing(ref64, dtype):
    """Distance between adjacent values of `dtype` around each |ref64|."""
    mant, emin = {torch.float16: (10, -14), torch.bfloat16: (7, -126), torch.float32: (23, -126)}[dtype]
    e = torch.floor(torch.log2(ref64.abs().clamp_min(2.0 ** emin)))
    return torch.exp2(e - mant)


def record(op, dt, variant, desc, out, ref64, *, canvas=None, native=None, exact=False,
           ulp_limit=None, nmse_limit=NMSE_F32):
    """Compares one kernel output; appends a row to RESULTS.

    f16/bf16 outputs are judged by their error beyond the final rounding:
    excess = max(0, |out - ref64| - ulp/2) / max|ref64|. A correct kernel
    leaves only fp32-level error there (~1e-7); a wrong rounding or a
    missed term shows up at the 1e-4..1e-2 level. (Plain ulp counts are
    useless near zero, where fp32 cancellation spans many small-value ulps.)
    """
    dtype = DTYPES[dt]
    out = out.clone()
    ref64 = ref64.double()
    ref_t = ref64.to(dtype)
    nan_out, nan_ref = torch.isnan(out), torch.isnan(ref_t)
    nan_mismatch = int((nan_out ^ nan_ref).sum().item())
    unwritten = max(int(nan_out.sum().item() - nan_ref.sum().item()), 0)
    e, mabs = nmse(out, ref64)
    fin = torch.isfinite(ref64) & torch.isfinite(out.double())
    scale = ref64[fin].abs().max().item() if fin.any() else 1.0
    scale = scale if scale > 0 else 1.0
    iv = INT_VIEW[dtype]
    same = (out.contiguous().view(iv) == ref_t.contiguous().view(iv)) | (nan_out & nan_ref)
    n_same = int(same.sum().item())
    eq = n_same / same.numel() if same.numel() else 1.0
    ulp, excess = None, None
    if dtype != torch.float32:
        ulp = max_ulp(out, ref_t)
        err = (out.double() - ref64).abs() - 0.5 * ulp_spacing(ref64, dtype)
        excess = (err[fin].clamp_min(0).max().item() / scale) if fin.any() else 0.0
    nat_e = nat_rel = None
    if native is not None:
        nat_e, nat_abs = nmse(out, native)
        nat_rel = nat_abs / scale
    oob = canvas.untouched_violations() if canvas is not None else 0
    if exact:
        ok = n_same == same.numel()
    elif dtype == torch.float32:
        ok = e <= nmse_limit
    elif ulp_limit is not None:
        ok = ulp <= ulp_limit
    else:
        ok = excess <= EXCESS_HALF and e <= NMSE_HALF[dt]
    ok = ok and oob == 0 and nan_mismatch == 0
    RESULTS.append(dict(op=op, dt=dt, var=variant, desc=desc, nmse=e, maxabs=mabs, rel=mabs / scale,
                        eq=eq, ulp=ulp, excess=excess, nat_nmse=nat_e, nat_rel=nat_rel, oob=oob,
                        unwritten=unwritten, nan=nan_mismatch, ok=ok))


def failed_row(op, dt, variant, desc):
    return dict(op=op, dt=dt, var=variant, desc=desc, nmse=float("nan"), maxabs=float("nan"),
                rel=float("nan"), eq=0.0, ulp=None, excess=None, nat_nmse=None, nat_rel=None, oob=0,
                unwritten=0, nan=0, ok=False)


def guarded(fn, op, dt, variant, desc):
    try:
        fn()
    except Exception as exc:  # one broken case must not hide the others
        traceback.print_exc()
        RESULTS.append(failed_row(op, dt, variant, desc + f" EXC {type(exc).__name__}: {exc}"))


def grid_for(n, block, cap=1 << 16):
    return max(1, min(cap, (n + block - 1) // block))


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------
def check_layer_norm(K, dt, g):
    dtype = DTYPES[dt]
    # (rows, cols, ld padding, block, grid); grid < rows exercises the row loop.
    for rows, cols, pad, block, grid in [(1, 1, 0, 32, 1), (5, 7, 3, 32, 5), (197, 48, 0, 64, 197),
                                         (197, 768, 16, 256, 50), (33, 1280, 0, 1024, 33),
                                         (17, 3200, 0, 128, 17), (3, 4097, 1, 1024, 2)]:
        desc = f"{rows}x{cols} ld+{pad} blk{block} grid{grid}"

        def run():
            ld = cols + pad
            xb = (torch.randn(rows, ld, generator=g, device=DEV) * 2 + 3).to(dtype)
            x = xb[:, :cols]
            w = (1 + 0.1 * torch.randn(cols, generator=g, device=DEV)).to(dtype)
            b = (0.1 * torch.randn(cols, generator=g, device=DEV)).to(dtype)
            eps = 1e-6
            ref = F.layer_norm(x.double(), (cols,), w.double(), b.double(), eps)
            nat = try_native(lambda: F.layer_norm(x, (cols,), w, b, eps))
            c = Canvas(dtype, rows, cols, ld + 5)
            K(f"vt_layer_norm_{dt}", grid, block, P(xb), I(ld), P(w), P(b), P(c.buf), I(c.ld), I(rows),
              I(cols), F32(eps))
            record("layer_norm", dt, K.variant, desc, c.view(), ref, canvas=c, native=nat)

        guarded(run, "layer_norm", dt, K.variant, desc)


def hf_rms_norm(x, w, eps):
    """transformers' InternViT RMSNorm, in the input dtype."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def check_rms_norm(K, dt, g):
    dtype = DTYPES[dt]
    eps = 1e-6

    def ref_of(x, w):
        x64 = x.double()
        n = (x64 * torch.rsqrt((x64 ** 2).mean(-1, keepdim=True) + eps)).to(dtype)
        return n.double() * w.double()

    for rows, cols, block, grid in [(1, 1, 32, 1), (5, 7, 32, 5), (197, 48, 64, 197),
                                    (33, 1280, 1024, 33), (17, 3200, 128, 9)]:
        desc = f"{rows}x{cols} blk{block} grid{grid}"

        def run():
            x = torch.randn(rows, cols, generator=g, device=DEV).to(dtype)
            w = (1 + 0.2 * torch.randn(cols, generator=g, device=DEV)).to(dtype)
            c = Canvas(dtype, rows, cols, cols + 3)
            K(f"vt_rms_norm_{dt}", grid, block, P(x), I(cols), P(w), P(c.buf), I(c.ld), I(rows),
              I(cols), F32(eps))
            record("rms_norm", dt, K.variant, desc, c.view(), ref_of(x, w), canvas=c,
                   native=try_native(lambda: hf_rms_norm(x, w, eps)), ulp_limit=2)

        guarded(run, "rms_norm", dt, K.variant, desc)

    # InternViT-6B qk-norm: in place on the q and k thirds of a fused qkv
    # buffer; the v third and the padding must not change.
    rows, D = 197, 3200
    desc = f"in-place qk-norm {rows}x{D} of qkv"

    def run_inplace():
        ld = 3 * D + 8
        qkv = torch.randn(rows, ld, generator=g, device=DEV).to(dtype)
        w = (1 + 0.2 * torch.randn(D, generator=g, device=DEV)).to(dtype)
        c = Canvas(dtype, rows, ld, ld, fill=qkv)  # whole buffer, untouched check on all of it
        refq, refk = ref_of(qkv[:, :D], w), ref_of(qkv[:, D:2 * D], w)
        for off in (0, D):
            sl = c.buf[off:]
            K(f"vt_rms_norm_{dt}", rows, 256, P(sl), I(ld), P(w), P(sl), I(ld), I(rows), I(D), F32(eps))
        out = c.view()
        # Only the q and k thirds may change: compare the rest bitwise.
        rest = torch.cat([out[:, 2 * D:], ], 1)
        same = bool((rest.contiguous().view(INT_VIEW[dtype]) ==
                     qkv[:, 2 * D:].contiguous().view(INT_VIEW[dtype])).all().item())
        tail = c.buf[rows * ld:]
        tail_ok = bool(torch.isnan(tail).all().item())
        record("rms_norm", dt, K.variant, desc, out[:, :2 * D], torch.cat([refq, refk], 1),
               native=try_native(lambda: torch.cat([hf_rms_norm(qkv[:, :D], w, eps),
                                                    hf_rms_norm(qkv[:, D:2 * D], w, eps)], 1)),
               ulp_limit=2)
        if not (same and tail_ok):
            RESULTS[-1]["oob"] += 1
            RESULTS[-1]["ok"] = False

    guarded(run_inplace, "rms_norm", dt, K.variant, desc)


def check_gelu(K, dt, g):
    dtype = DTYPES[dt]
    for n, block, grid in [(1, 32, 1), (1000, 256, 4), ((1 << 20) + 3, 256, None)]:
        grid = grid or grid_for(n, block, 1024)
        desc = f"n={n} blk{block} grid{grid}"

        def run():
            x = (3 * torch.randn(n, generator=g, device=DEV)).to(dtype)
            x64 = x.double()
            ref = 0.5 * x64 * (1 + torch.special.erf(x64 / math.sqrt(2)))
            c = Canvas(dtype, 1, n)
            K(f"vt_gelu_{dt}", grid, block, P(x), P(c.buf), L(n))
            record("gelu", dt, K.variant, desc, c.view()[0], ref, canvas=c, native=try_native(lambda: F.gelu(x)))

        guarded(run, "gelu", dt, K.variant, desc)


def check_residual(K, dt, g):
    dtype = DTYPES[dt]
    for rows, cols, with_gamma, inplace in [(197, 768, True, False), (197, 768, False, False),
                                            (7, 1280, True, True), (3, 5, True, False)]:
        desc = f"{rows}x{cols} gamma={with_gamma} inplace={inplace}"

        def run():
            x = torch.randn(rows, cols, generator=g, device=DEV).to(dtype)
            r = torch.randn(rows, cols, generator=g, device=DEV).to(dtype)
            gam = (0.1 * torch.randn(cols, generator=g, device=DEV)).to(dtype) if with_gamma else None
            ref = x.double() + (gam.double() if with_gamma else 1.0) * r.double()
            nat = try_native(lambda: x + (gam * r if with_gamma else r))
            n = rows * cols
            if inplace:
                c = Canvas(dtype, rows, cols, fill=x)
                K(f"vt_residual_{dt}", grid_for(n, 256), 256, P(c.buf), P(r), P(gam), P(c.buf), I(rows), I(cols))
            else:
                c = Canvas(dtype, rows, cols)
                K(f"vt_residual_{dt}", grid_for(n, 256), 256, P(x), P(r), P(gam), P(c.buf), I(rows), I(cols))
            record("residual", dt, K.variant, desc, c.view(), ref, canvas=c, native=nat)

        guarded(run, "residual", dt, K.variant, desc)


def check_broadcast_copy(K, dt, g):
    dtype = DTYPES[dt]
    desc = "broadcast 197x1280"

    def run_b():
        rows, cols = 197, 1280
        bias = torch.randn(cols, generator=g, device=DEV).to(dtype)
        c = Canvas(dtype, rows, cols)
        K(f"vt_broadcast_rows_{dt}", grid_for(rows * cols, 256), 256, P(bias), P(c.buf), I(rows), I(cols))
        ref = bias.double().expand(rows, cols)
        record("broadcast_rows", dt, K.variant, desc, c.view(), ref, canvas=c, exact=True)

    guarded(run_b, "broadcast_rows", dt, K.variant, desc)
    desc = "copy2d 37x100 ld 130->111"

    def run_c():
        rows, cols, lds, ldd = 37, 100, 130, 111
        src = torch.randn(rows, lds, generator=g, device=DEV).to(dtype)
        c = Canvas(dtype, rows, cols, ldd)
        K(f"vt_copy2d_{dt}", 7, 64, P(src), I(lds), P(c.buf), I(ldd), I(rows), I(cols))
        record("copy2d", dt, K.variant, desc, c.view(), src[:, :cols].double(), canvas=c, exact=True)

    guarded(run_c, "copy2d", dt, K.variant, desc)


def cast_inputs(g, n):
    f32 = torch.float32
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 65504.0, 65519.0,
                            65520.0, 1e-8, -3e-7, 6e-5, 3.3895e38, -3.3895e38, 1e-40, 1.0, -2.5],
                           dtype=f32)
    # Ties and near-ties for f32 -> bf16 rounding.
    ties = torch.tensor([0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF, 0xBF808000, 0x7F7F8000],
                        dtype=torch.int64).to(torch.int32).view(f32)
    rnd = torch.randn(n, dtype=f32) * torch.exp(4 * torch.randn(n, dtype=f32))
    return torch.cat([special, ties, rnd]).to(DEV)


def check_cast(K, g):
    base = cast_inputs(g, 100003)
    for a in SFX:
        for b in SFX:
            if a == b:
                continue
            desc = f"{a}->{b} n={base.numel()}"

            def run():
                x = base.to(DTYPES[a])
                n = x.numel()
                c = Canvas(DTYPES[b], 1, n)
                K(f"vt_cast_{a}_to_{b}", grid_for(n, 128, 97), 128, P(x), P(c.buf), L(n))
                want = x.to(DTYPES[b])
                record(f"cast_{a}_to", b, K.variant, desc, c.view()[0], want.double(), canvas=c, exact=True)

            guarded(run, f"cast_{a}_to", b, K.variant, desc)


# --- resize ------------------------------------------------------------------
def f32_scale(inp, out, align):
    if align and out <= 1:
        return torch.tensor(0.0, dtype=torch.float32)
    num = torch.tensor(float(inp - 1 if align else inp), dtype=torch.float32)
    den = torch.tensor(float(out - 1 if align else out), dtype=torch.float32)
    return num / den  # IEEE float32 division, as PyTorch computes it


def f32_source(inp, out, align):
    """PyTorch's source coordinate, float32 with a single rounding (fmaf)."""
    sc = f32_scale(inp, out, align).double()
    d = torch.arange(out, dtype=torch.float64)
    s = sc * d if align else sc * (d + 0.5) - 0.5  # exact in float64
    return s.float()


def linear_axis(inp, out, align):
    s = torch.clamp(f32_source(inp, out, align), min=0.0)
    i0 = torch.clamp(torch.floor(s), max=inp - 1)
    l1 = torch.clamp(s - i0, 0.0, 1.0)
    l0 = 1.0 - l1
    i0 = i0.long()
    i1 = torch.where(i0 < inp - 1, i0 + 1, i0)
    return torch.stack([i0, i1], 1), torch.stack([l0, l1], 1).double()


def cubic_axis(inp, out, align):
    A = -0.75
    s = f32_source(inp, out, align)
    i = torch.clamp(torch.floor(s), max=inp - 1)
    t = torch.clamp(s - i, 0.0, 1.0).double()
    u = 1.0 - t

    def near(x):
        return ((A + 2) * x - (A + 3)) * x * x + 1

    def far(x):
        return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A

    w = torch.stack([far(t + 1), near(t), near(u), far(u + 1)], 1)
    idx = torch.stack([torch.clamp(i.long() - 1 + k, 0, inp - 1) for k in range(4)], 1)
    return idx, w


def resize_ref64(x, mode, hout, wout, align):
    """[Hin, Win, C] -> [Hout, Wout, C] in float64 with PyTorch's float32 weights."""
    hin, win, _ = x.shape
    axis = linear_axis if mode == "bilinear" else cubic_axis
    iy, wy = axis(hin, hout, align)
    ix, wx = axis(win, wout, align)
    iy, wy, ix, wx = iy.to(DEV), wy.to(DEV), ix.to(DEV), wx.to(DEV)
    x64 = x.double()
    rows = x64[iy]  # [Hout, ky, Win, C]
    taps = rows[:, :, ix]  # [Hout, ky, Wout, kx, C]
    return torch.einsum("hk,wl,hkwlc->hwc", wy, wx, taps)


RESIZE_CASES = [
    # mode, C, Hin, Win, Hout, Wout, Hwin, Wwin, align
    ("bilinear", 64, 128, 128, 14, 14, 14, 14, 0),  # RADIO 224^2
    ("bilinear", 64, 128, 128, 48, 48, 32, 48, 0),  # RADIO 512x768: top-left window
    ("bilinear", 64, 128, 128, 48, 48, 48, 20, 1),
    ("bilinear", 1280, 128, 128, 37, 37, 37, 25, 0),
    ("bilinear", 3, 16, 16, 37, 23, 37, 23, 0),  # upsampling, non-square
    ("bilinear", 8, 20, 30, 7, 11, 7, 11, 1),
    ("bilinear", 5, 14, 14, 14, 14, 14, 14, 0),  # identity
    ("bilinear", 4, 5, 7, 1, 3, 1, 3, 0),  # an axis of size 1
    ("bilinear", 4, 1, 1, 3, 3, 3, 3, 1),
    ("bicubic", 64, 32, 32, 16, 16, 16, 16, 0),  # InternViT down
    ("bicubic", 1024, 32, 32, 40, 24, 40, 24, 0),  # InternViT non-square
    ("bicubic", 64, 32, 32, 37, 29, 37, 29, 1),
    ("bicubic", 64, 32, 32, 48, 48, 30, 48, 0),  # window
    ("bicubic", 3, 5, 7, 1, 3, 1, 3, 0),  # out == 1: s = -0.5
    ("bicubic", 3200, 16, 16, 16, 16, 16, 16, 0),  # identity, InternViT-6B width
    ("bicubic", 7, 3, 4, 11, 9, 11, 9, 1),  # upsampling with clamped taps
]


def check_resize(K, dt, g):
    dtype = DTYPES[dt]
    for mode, C, hin, win, hout, wout, hwin, wwin, align in RESIZE_CASES:
        desc = f"{mode} C{C} {hin}x{win}->{hout}x{wout}[:{hwin},:{wwin}] ac={align}"

        def run():
            x = torch.randn(hin, win, C, generator=g, device=DEV).to(dtype)
            ref = resize_ref64(x, mode, hout, wout, bool(align))[:hwin, :wwin]
            nat = try_native(lambda: F.interpolate(x.permute(2, 0, 1)[None], size=(hout, wout), mode=mode,
                                                   align_corners=bool(align))[0].permute(1, 2, 0)[:hwin, :wwin])
            n = hwin * wwin * C
            c = Canvas(dtype, 1, n)
            K(f"vt_resize_{mode}_{dt}", grid_for(n, 256), 256, P(x), P(c.buf), I(C), I(hin), I(win),
              I(hout), I(wout), I(hwin), I(wwin), I(align))
            record(f"resize_{mode}", dt, K.variant, desc, c.view()[0].view(hwin, wwin, C), ref, canvas=c,
                   native=nat)

        guarded(run, f"resize_{mode}", dt, K.variant, desc)


def check_patchify(K, dt, g):
    dtype = DTYPES[dt]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device=DEV)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device=DEV)
    for B, C, H, W, p, norm in [(2, 3, 224, 224, 16, True), (1, 3, 448, 448, 14, False),
                                (3, 3, 32, 48, 16, True), (1, 1, 14, 28, 7, False)]:
        desc = f"B{B} C{C} {H}x{W} p{p} norm={norm}"

        def run():
            x = torch.rand(B, C, H, W, generator=g, device=DEV).to(dtype)
            src = x
            if norm:
                src = ((x.float() - mean[:C].view(1, C, 1, 1)) / std[:C].view(1, C, 1, 1)).to(dtype)
            gh, gw = H // p, W // p
            want = src.view(B, C, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(B * gh * gw, C * p * p)
            rows, cols = want.shape
            c = Canvas(dtype, rows, cols)
            m, s = (mean, std) if norm else (None, None)
            K(f"vt_patchify_{dt}", grid_for(rows * cols, 256), 256, P(x), P(c.buf), P(m), P(s), I(B), I(C),
              I(H), I(W), I(p))
            # The plain copy must be bit-exact; the normalisation is a float32
            # subtract and divide on both sides, reported in ulps.
            record("patchify", dt, K.variant, desc, c.view(), want.double(), canvas=c, exact=not norm)

        guarded(run, "patchify", dt, K.variant, desc)


ATTN_CASES = [
    # seqlens, heads, head_dim, block, q multiplier, fused qkv
    ([1, 17, 197, 333], 1, 12, 128, 1.0, True),
    ([1, 17, 197, 333], 2, 16, 128, 1.0, True),
    ([1, 17, 197, 333], 12, 64, 128, 1.0, True),
    ([1, 17, 197, 333], 16, 72, 256, 1.0, True),
    ([1, 17, 197, 333], 16, 80, 128, 1.0, True),
    ([1, 17, 197, 333], 8, 128, 32, 1.0, True),
    ([5, 40], 2, 256, 64, 1.0, True),
    ([197], 12, 64, 128, 1.0, False),
    ([1], 3, 80, 32, 1.0, True),
    ([64, 3], 4, 64, 128, 8.0, True),  # peaked softmax
]


def check_attention(K, dt, g):
    dtype = DTYPES[dt]
    for lens, heads, hd, block, qmul, fused in ATTN_CASES:
        desc = f"lens={lens} h{heads} d{hd} blk{block}{' q*%g' % qmul if qmul != 1 else ''}{'' if fused else ' separate'}"

        def run():
            T, D = sum(lens), heads * hd
            cu = torch.tensor([0] + list(itertools.accumulate(lens)), dtype=torch.int32, device=DEV)
            if fused:
                ld = 3 * D + 5
                qkv = torch.randn(T, ld, generator=g, device=DEV)
                qkv[:, :D] *= qmul
                qkv = qkv.to(dtype)
                q, k, v = qkv[:, :D], qkv[:, D:2 * D], qkv[:, 2 * D:3 * D]
                lq = lk = lv = ld
            else:
                q = (qmul * torch.randn(T, D, generator=g, device=DEV)).to(dtype)
                k = torch.randn(T, D, generator=g, device=DEV).to(dtype)
                v = torch.randn(T, D, generator=g, device=DEV).to(dtype)
                lq = lk = lv = D
            scale = hd ** -0.5
            ref = torch.empty(T, D, dtype=torch.float64, device=DEV)
            nat = torch.empty(T, D, dtype=dtype, device=DEV)

            def sdpa(qn, kn, vn):
                return try_native(lambda: F.scaled_dot_product_attention(qn, kn, vn, scale=scale))
            for s in range(len(lens)):
                a, b = int(cu[s]), int(cu[s + 1])
                qs = q[a:b].double().view(b - a, heads, hd).transpose(0, 1)
                ks = k[a:b].double().view(b - a, heads, hd).transpose(0, 1)
                vs = v[a:b].double().view(b - a, heads, hd).transpose(0, 1)
                p = torch.softmax((qs @ ks.transpose(1, 2)) * scale, -1)
                ref[a:b] = (p @ vs).transpose(0, 1).reshape(b - a, D)
                # Contiguous copies: PyTorch's fused SDPA kernels reject (or, in
                # 2.11's flash path, mishandle) views with an odd row stride.
                qn = q[a:b].reshape(b - a, heads, hd).transpose(0, 1)[None].contiguous()
                kn = k[a:b].reshape(b - a, heads, hd).transpose(0, 1)[None].contiguous()
                vn = v[a:b].reshape(b - a, heads, hd).transpose(0, 1)[None].contiguous()
                o = sdpa(qn, kn, vn)
                if o is None:
                    nat = None
                elif nat is not None:
                    nat[a:b] = o[0].transpose(0, 1).reshape(b - a, D)
            c = Canvas(dtype, T, D, D + 3)
            warps = block // 32
            K(f"vt_attention_{dt}", grid_for(T * heads, warps), block, P(q), I(lq), P(k), I(lk), P(v), I(lv),
              P(c.buf), I(c.ld), P(cu), I(len(lens)), I(max(lens)), I(heads), I(hd), F32(scale))
            record("attention", dt, K.variant, desc, c.view(), ref, canvas=c, native=nat,
                   nmse_limit=NMSE_F32_ATTN)

        guarded(run, "attention", dt, K.variant, desc)


# --------------------------------------------------------------------------
def fmt(v, spec):
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return format(v, spec)


def report(out_dir):
    cols = ["op", "dt", "var", "ok", "nmse", "maxabs", "rel", "eq", "ulp", "excess", "nat_nmse", "nat_rel",
            "oob", "unwritten", "desc"]
    lines = ["\t".join(cols)]
    for r in RESULTS:
        lines.append("\t".join([r["op"], r["dt"], r["var"], "ok" if r["ok"] else "FAIL", fmt(r["nmse"], ".2e"),
                                fmt(r["maxabs"], ".2e"), fmt(r["rel"], ".2e"), fmt(r["eq"], ".4f"),
                                fmt(r["ulp"], "d"), fmt(r["excess"], ".2e"), fmt(r["nat_nmse"], ".2e"),
                                fmt(r["nat_rel"], ".2e"), str(r["oob"]), str(r["unwritten"]), r["desc"]]))
    full = "\n".join(lines) + "\n"
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "kernel_check.tsv"), "w") as f:
            f.write(full)

    fails = [r for r in RESULTS if not r["ok"]]
    if fails:
        print("\nFAILED CASES:")
        for r in fails:
            print(f"  {r['op']} {r['dt']} {r['var']}: {r['desc']} nmse={fmt(r['nmse'], '.2e')} "
                  f"excess={fmt(r['excess'], '.2e')} ulp={fmt(r['ulp'], 'd')} oob={r['oob']} "
                  f"unwritten={r['unwritten']} nan={r['nan']}")

    # Worst case per (op, dtype) over all shapes and both load paths.
    groups = {}
    for r in RESULTS:
        groups.setdefault((r["op"], r["dt"]), []).append(r)
    print("\nworst case per op and dtype, over shapes and load paths")
    print("  ref64: the formula in float64 on the same inputs; rel = max|out-ref|/max|ref|;")
    print("  eq: min fraction bit-equal to round(ref64); excess: error beyond the final rounding / max|ref|;")
    print("  torch: PyTorch's op in the kernel's dtype")
    print(f"{'op':<16}{'dt':<5}{'n':>4}{'fail':>5}{'nmse_ref64':>11}{'rel_ref64':>10}{'eq':>8}"
          f"{'excess':>9}{'nmse_torch':>11}{'rel_torch':>10}{'oob':>4}")
    for (op, dt), rs in groups.items():
        def worst(key, fn=max):
            vals = [r[key] for r in rs if r[key] is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]
            return fn(vals) if vals else None
        print(f"{op:<16}{dt:<5}{len(rs):>4}{sum(not r['ok'] for r in rs):>5}{fmt(worst('nmse'), '.1e'):>11}"
              f"{fmt(worst('rel'), '.1e'):>10}{fmt(worst('eq', min), '.4f'):>8}{fmt(worst('excess'), '.1e'):>9}"
              f"{fmt(worst('nat_nmse'), '.1e'):>11}{fmt(worst('nat_rel'), '.1e'):>10}{sum(r['oob'] for r in rs):>4}")
    n_ok = sum(r["ok"] for r in RESULTS)
    print(f"\n{n_ok} passed, {len(RESULTS) - n_ok} failed")
    return not fails


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", default=".dev/kernels/cuda", help="folder with NAME.fatbin and NAME.compute_80.ptx")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="folder for the full per-case table")
    ap.add_argument("--variants", default="fatbin,ptx")
    ap.add_argument("--ops", default="all", help="comma list: norm,gelu,residual,copy,cast,resize,patchify,attention")
    ap.add_argument("--dtypes", default="f32,f16,bf16")
    ap.add_argument("--no-native", action="store_true",
                    help="skip PyTorch-op references (e.g. under compute-sanitizer, which flags PyTorch's own kernels)")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    global NATIVE
    NATIVE = not args.no_native

    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  cuda {torch.version.cuda}")
    drv = Driver()
    drv_ver = ctypes.c_int()
    drv.lib.cuDriverGetVersion(ctypes.byref(drv_ver))
    print(f"driver API version {drv_ver.value}")
    ops = None if args.ops == "all" else set(args.ops.split(","))

    def want(o):
        return ops is None or o in ops

    t0 = time.time()
    for variant in args.variants.split(","):
        try:
            K = Kernels(drv, args.kernels, variant)
        except Exception as exc:
            traceback.print_exc()
            RESULTS.append(failed_row("load", "-", variant, f"EXC {exc}"))
            continue
        g = torch.Generator(device=DEV)
        g.manual_seed(args.seed)
        tv = time.time()
        for dt in args.dtypes.split(","):
            if want("norm"):
                check_layer_norm(K, dt, g)
                check_rms_norm(K, dt, g)
            if want("gelu"):
                check_gelu(K, dt, g)
            if want("residual"):
                check_residual(K, dt, g)
            if want("copy"):
                check_broadcast_copy(K, dt, g)
            if want("resize"):
                check_resize(K, dt, g)
            if want("patchify"):
                check_patchify(K, dt, g)
            if want("attention"):
                check_attention(K, dt, g)
        if want("cast"):
            torch.manual_seed(args.seed)
            check_cast(K, g)
        print(f"[{variant}] {sum(r['var'] == variant for r in RESULTS)} cases in {time.time() - tv:.1f} s")
    ok = report(args.out)
    print(f"total {time.time() - t0:.1f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
