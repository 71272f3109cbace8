"""End-to-end calls in PyTorch, the counterpart of `bench_gpu`'s `e2e_ms`.

What a caller of `Encoder::forward_pixels` waits for, done the way a PyTorch
user would: fp32 pixels in host memory go to the GPU and are cast to the
model dtype (`pixel_values.to("cuda").to(dtype)`), the HF model runs, and the
outputs vitrine returns (`last_hidden_state`, and for RADIO `summary` and
`features`) come back to the host as fp32 (`.float().cpu()`), checked for
NaN/Inf as vitrine checks every output. Wall clock around the whole call,
median of `--repeats` calls after two warm-ups; one JSON line per case.

Same models as scripts/torch_baseline.py (HF RadioModel with its default
config, InternVLVisionModel's default, SDPA, random weights):

    python3 scripts/torch_e2e.py [--repeats 7]
"""

import argparse
import json
import time

import torch

CASES = [("radio", 1, 224, 224), ("radio", 32, 512, 512), ("radio", 8, 432, 640),
         ("radio", 4, 1024, 1024), ("internvl", 32, 448, 448)]


def call(model, host_px, dtype, radio):
    px = host_px.to("cuda").to(dtype)
    out = model(px)
    outs = [out.last_hidden_state] + ([out.summary, out.features] if radio else [])
    host = [t.float().cpu() for t in outs]
    if not all(bool(torch.isfinite(t).all()) for t in host):
        raise RuntimeError("non-finite output")
    return host


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    from transformers import InternVLVisionConfig, InternVLVisionModel, RadioConfig, RadioModel

    dtype = torch.float16
    models = {
        "radio": RadioModel._from_config(RadioConfig(), attn_implementation="sdpa", torch_dtype=dtype),
        "internvl": InternVLVisionModel._from_config(InternVLVisionConfig(), attn_implementation="sdpa",
                                                     torch_dtype=dtype),
    }
    models = {k: m.cuda().eval() for k, m in models.items()}
    for kind, batch, h, w in CASES:
        model = models[kind]
        host_px = torch.rand(batch, 3, h, w)
        times = []
        with torch.inference_mode():
            for i in range(a.repeats + 2):
                t0 = time.perf_counter()
                result = call(model, host_px, dtype, kind == "radio")
                del result
                if i >= 2:
                    times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        print(json.dumps({"kind": f"{kind}_e2e", "dtype": str(dtype), "batch": batch, "h": h, "w": w,
                          "e2e_ms": times[len(times) // 2], "e2e_ms_min": times[0], "e2e_ms_max": times[-1]}),
              flush=True)


if __name__ == "__main__":
    main()
