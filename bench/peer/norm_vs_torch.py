#!/usr/bin/env python3
"""PyTorch's own GroupNorm kernels on the rows of bench_norm_cuda that cuDNN has no engine for.

    python3 bench/peer/norm_vs_torch.py --device cuda --json norm_vs_torch.json \
        [--normlab bench_norm_cuda.json --md norm_vs_torch.md]

cuDNN has no GroupNorm (and its graph LayerNorm's affine is per element, not per channel), so the
GN4 and LN rows of bench_norm_cuda (GroupNorm with 4 groups, and with 1: LayerNorm over C, H, W)
are timed here against the kernels PyTorch runs for them: aten's native_group_norm and
native_group_norm_backward, in NCHW and in channels_last (aten has a kernel for each), called
directly so that the time is the kernel's and not autograd's. Same shapes and names as
bench/norm_cases.h, the L2 flushed before every timed call (a write of twice its size), CUDA
events around the call, median of --iters. fwd_eval is the same op as fwd_train for GroupNorm:
both rows are timed, as bench_norm_cuda times both.

With --normlab (bench_norm_cuda's JSON from the same run) it writes a table: each row's normlab
time, PyTorch's faster layout, and normlab's speed-up. --device cpu runs the same code on the CPU
with the batch cut to --cpu-batch (scripts/gpu-check.sh's dry run: proves the table is made; the
times mean nothing).
"""
import argparse
import json
import statistics
import sys
import time

import torch

KINDS = {"GN4": 4, "LN": 1}  # bench/norm_cases.h: kNormKindName, norm_groups
PASSES = ["fwd_train", "fwd_eval", "bwd"]
BATCHES = [128, 512]
SHAPES = [(32, 32 * 32), (32, 16 * 16), (24, 8 * 8)]  # (C, H*W)


def case_name(kind, pass_, n, c, hw):
    return f"{kind}/{pass_}/{n}x{c}x{hw}"


def side(hw):
    s = int(round(hw**0.5))
    if s * s != hw:
        raise SystemExit(f"norm_vs_torch: H*W = {hw} is not a square")
    return s


class Timer:
    """Median time of a call, the L2 flushed before each, on the CUDA device or the CPU."""

    def __init__(self, device, iters):
        self.device, self.iters = device, iters
        if device.type == "cuda":
            # L2_cache_size is in the device properties of recent PyTorch; 64 MiB covers any GPU's.
            l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 << 20)
            self.flush = torch.empty(2 * max(l2, 1 << 20), dtype=torch.uint8, device=device)

    def __call__(self, fn):
        fn()  # warm-up: kernel selection, allocations
        times = []
        for _ in range(self.iters):
            if self.device.type == "cuda":
                self.flush.zero_()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def time_row(timer, device, kind, pass_, n, c, hw):
    groups, s = KINDS[kind], side(hw)
    out = {}
    for layout, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(n, c, s, s, generator=g).to(device).contiguous(memory_format=fmt)
        dy = torch.randn(n, c, s, s, generator=g).to(device).contiguous(memory_format=fmt)
        w = torch.rand(c, generator=g).add_(0.5).to(device)
        b = torch.randn(c, generator=g).to(device)
        _, mean, rstd = torch.ops.aten.native_group_norm(x, w, b, n, c, hw, groups, 1e-5)
        if pass_ == "bwd":
            fn = lambda: torch.ops.aten.native_group_norm_backward(  # noqa: E731
                dy, x, mean, rstd, w, n, c, hw, groups, [True, True, True])
        else:
            fn = lambda: torch.ops.aten.native_group_norm(x, w, b, n, c, hw, groups, 1e-5)  # noqa: E731
        out[layout] = timer(fn)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--cpu-batch", type=int, default=2, help="the batch of every row with --device cpu")
    ap.add_argument("--json", required=True, help="write the rows here")
    ap.add_argument("--normlab", help="bench_norm_cuda's JSON of the same run: the side-by-side table")
    ap.add_argument("--md", help="the side-by-side table (with --normlab)")
    a = ap.parse_args()
    if a.iters < 1:
        ap.error("--iters must be at least 1")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("norm_vs_torch: this PyTorch has no CUDA device (--device cpu for a dry run)")
    device = torch.device(a.device)
    timer = Timer(device, a.iters)
    rows = []
    for kind in KINDS:
        for pass_ in PASSES:
            for n in BATCHES:
                for c, hw in SHAPES:
                    ms = time_row(timer, device, kind, pass_, a.cpu_batch if a.device == "cpu" else n, c, hw)
                    best = min(ms, key=ms.get)
                    rows.append({"name": case_name(kind, pass_, n, c, hw) + "/torch", "ms": ms[best],
                                 "layout": best, "ms_by_layout": ms})
                    print(f"{rows[-1]['name']}: {ms[best] * 1e3:.1f} us ({best}; "
                          + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in ms.items()) + ")", flush=True)
    dev_name = torch.cuda.get_device_name(device) if a.device == "cuda" else "CPU (dry run: times mean nothing)"
    with open(a.json, "w") as f:
        json.dump({"device": dev_name, "torch": torch.__version__, "iters": a.iters, "rows": rows}, f, indent=1)
    if a.normlab and a.md:
        ours = {r["name"].rsplit("/", 1)[0]: r["ms"] for r in json.load(open(a.normlab))["rows"]
                if r["name"].endswith("/normlab")}
        with open(a.md, "w") as f:
            f.write(f"# GroupNorm rows: normlab against PyTorch {torch.__version__}'s aten kernels on {dev_name}\n\n")
            f.write("| row | normlab us | PyTorch us (faster layout) | normlab speed-up |\n|---|---|---|---|\n")
            for r in rows:
                key = r["name"].rsplit("/", 1)[0]
                if key in ours:
                    f.write(f"| {key} | {ours[key] * 1e3:.1f} | {r['ms'] * 1e3:.1f} ({r['layout']}) | "
                            f"{r['ms'] / ours[key]:.2f}x |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
