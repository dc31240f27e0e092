#!/usr/bin/env python3
"""One training step of the comparison network, normlab against PyTorch, in one run.

    /usr/bin/python3 bench/peer/train_step_vs_torch.py --bin build/bench/bench_train_step --threads 2

Runs build/bench/bench_train_step (normlab) and the identical step in PyTorch (the network of
compare_norms_torch.py: forward, NLL loss, backward, SGD with momentum and weight decay) with the
same thread count, batch sizes and number of warm-up and timed steps, one after the other so the
two never share the cores, and prints: norm, batch, normlab img/s, PyTorch img/s, ratio. The rate
is the batch over the median step time. Needs Debian's python3-torch.

    python3 bench/peer/train_step_vs_torch.py --device cuda --bin build/bench/bench_train_step

does the same on a GPU (scripts/gpu-check.sh runs it there): PyTorch eager in its default layout
and in channels_last, cudnn.benchmark on (what a user who cares about speed sets), each step
ending with loss.item() as normlab's does with its loss read-back; the ratio is against the
faster of PyTorch's two layouts.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_norms_torch import Net  # noqa: E402


def torch_step_rate(kind, batch, warmup, steps, device="cpu", channels_last=False):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = Net(kind).to(device=device, memory_format=fmt)
    model.train()
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.arange(batch, device=device) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        opt.step()
        loss.item()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return batch / times[len(times) // 2]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="build/bench/bench_train_step", help="normlab's benchmark binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--norms", default="bn,gn,ln")
    ap.add_argument("--batches", default="128,512")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate the two frameworks this many times and keep each one's best round")
    args = ap.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin}: not found; build it with cmake -DNORMLAB_BUILD_BENCH=ON")
    torch.set_num_threads(args.threads)
    gpu = args.device == "cuda"
    if gpu:
        if not torch.cuda.is_available():
            sys.exit("--device cuda: PyTorch sees no GPU here")
        torch.backends.cudnn.benchmark = True
    # On the CPU PyTorch's default layout only (channels_last measured separately in
    # docs/performance.md); on a GPU both, since which one wins depends on the card.
    layouts = (False, True) if gpu else (False,)
    ours, theirs = {}, {}
    for _ in range(args.rounds):
        cmd = [args.bin, "--json", "--threads", str(args.threads), "--norms", args.norms,
               "--batches", args.batches, "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--device", args.device]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            key = (r["norm"], r["batch"])
            ours[key] = max(ours.get(key, 0.0), r["img_per_s"])
        for b in (int(s) for s in args.batches.split(",")):
            for n in args.norms.split(","):
                for cl in layouts:
                    theirs[(n, b, cl)] = max(theirs.get((n, b, cl), 0.0),
                                             torch_step_rate(n, b, args.warmup, args.steps, args.device, cl))
    where = (f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"
             if gpu else f"{cpu_model()}, {os.cpu_count()} cores; {args.threads} threads each; torch {torch.__version__}")
    print(f"# {where}; median of {args.steps} steps after {args.warmup} warm-up, best of {args.rounds} round(s)")
    if gpu:
        print("| norm | batch | normlab img/s | PyTorch img/s (NCHW) | PyTorch img/s (channels_last) | ratio to PyTorch's best |")
        print("|---|---|---|---|---|---|")
    else:
        print("| norm | batch | normlab img/s | PyTorch img/s | ratio |")
        print("|---|---|---|---|---|")
    for (n, b), v in ours.items():
        ts = [theirs[(n, b, cl)] for cl in layouts]
        cols = " | ".join(f"{t:.1f}" for t in ts)
        print(f"| {n} | {b} | {v:.1f} | {cols} | {v / max(ts):.2f}x |")


if __name__ == "__main__":
    main()
