#!/usr/bin/env python3
"""The step-by-step parity fixture: the PyTorch twin of the comparison network
(bench/peer/compare_norms_torch.py) trained 100 SGD + OneCycle steps of the recipe (max lr 0.1)
on the first 3,200 images of the real CIFAR-10 subset, 32 fresh images per step, for BatchNorm,
GroupNorm and LayerNorm, from initial weights that normlab then loads.

    /usr/bin/python3 tests/golden/make_trajectory.py ../shared/data/cifar10-subset

Each trajectory is run in float64 (the exact trajectory, up to float64 rounding) and in float32
five times: once as PyTorch users run it and four times with rounding-level perturbations (weights
and every batch scaled by 1 + 1e-7 * N(0, 1), a different stream each), the spread any float32
implementation with its own summation orders can be expected to show. At this learning rate the
training is chaotic: the float32 runs leave the float64 one by 1e-4 within 5-20 steps and by
percents later, so no float32 implementation can follow any reference to 1e-4 for 100 steps.
tests/test_trajectory.cpp therefore holds normlab to the float64 trajectory within
max(1e-4, 8x the float32 ensemble's largest deviation so far): strict while the dynamics allow it
(where a wrong eps or a wrong momentum cycle shows at once), as loose as PyTorch itself later.

Writes tests/golden/trajectory.safetensors (the initial weights under normlab's names, and per
norm the float64 run's final parameters and BatchNorm buffers, stored as float32) and
tests/golden/trajectory.json (both runs' per-step losses, each final tensor's float32-vs-float64
deviation over the ensemble, the recipe and the normalisation). The recipe is compare_norms' (trainer.cpp): SGD
momentum 0.95 cycled by OneCycleLR between 0.85 and 0.95, weight decay 5e-4, cosine annealing,
pct_start 0.3, div 25, final div 1e4; the loss is the mean NLL of log-softmax. Dropout is off and
there is no augmentation.
"""
import json
import os
import re
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench", "peer"))
from compare_norms_torch import CIFAR_MEAN, CIFAR_STD, Net, normalise, read_cifar_file  # noqa: E402

STEPS, BATCH, MAX_LR, SEED = 100, 32, 0.1, 0
IMAGES = STEPS * BATCH


def normlab_name(key):
    """The twin's state_dict key -> normlab's name (the inverse of compare_norms_torch.twin_name)."""
    m = re.fullmatch(r"c(\d+)\.(conv|norm)\.(.+)", key)
    if m:
        n = int(m.group(1))
        body = ".body" if n in (4, 5, 8, 9) else ""  # the residual blocks
        return f"C{n}{body}.{m.group(2)}.{m.group(3)}"
    return {"t1.weight": "c3.weight", "t2.weight": "c6.weight", "head.weight": "c10.weight"}[key]


def state(model):
    return {normlab_name(k): v.detach().clone() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.numpy())
        dtype = {np.dtype("float32"): "F32", np.dtype("int32"): "I32"}[a.dtype]
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def train(kind, x, y, init_model, dtype, perturb=None):
    """perturb: None, or a seed: weights and every batch scaled by 1 + 1e-7 * N(0, 1)."""
    model = Net(kind)
    model.load_state_dict(init_model.state_dict())
    model = model.to(dtype)
    g = None
    if perturb is not None:
        g = torch.Generator().manual_seed(perturb)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + 1e-7 * torch.randn(p.shape, generator=g, dtype=dtype))
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=MAX_LR / 25, momentum=0.95, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=MAX_LR, total_steps=STEPS)
    losses = []
    for step in range(STEPS):
        b = step * BATCH
        xb = x[b:b + BATCH].to(dtype)
        if g is not None:
            xb = xb * (1 + 1e-7 * torch.randn(xb.shape, generator=g, dtype=dtype))
        opt.zero_grad()
        loss = F.nll_loss(model(xb), y[b:b + BATCH])
        loss.backward()
        opt.step()
        if step + 1 < STEPS:
            sched.step()
        losses.append(loss.item())
    return losses, state(model)


def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "data", "cifar10-subset")
    parts = [read_cifar_file(os.path.join(data_dir, "cifar-10-batches-bin", f"data_batch_{i}.bin")) for i in range(1, 6)]
    x_u8 = np.concatenate([p[0] for p in parts])[:IMAGES]
    y = torch.from_numpy(np.concatenate([p[1] for p in parts])[:IMAGES])
    assert len(x_u8) == IMAGES, f"the subset has {len(x_u8)} training images, {IMAGES} needed"
    # float32 as numpy computes it: (u8 / 255 - mean) / std, every operation in float32.
    x = torch.from_numpy(np.ascontiguousarray(normalise(x_u8, CIFAR_MEAN, CIFAR_STD)))
    torch.set_num_threads(2)
    tensors, meta = {}, {"losses32": {}, "losses64": {}, "envelope32": {}, "final_dev32": {}}
    for kind in ("bn", "gn", "ln"):
        torch.manual_seed(SEED)
        init_model = Net(kind)
        s0 = state(init_model)
        if not tensors:
            tensors.update({"init/" + k: v for k, v in s0.items()})
        # Every norm starts from the same conv weights (norm weights 1, biases 0).
        for k, v in s0.items():
            assert torch.equal(v, tensors["init/" + k]), k
        l64, f64 = train(kind, x, y, init_model, torch.float64)
        runs32 = [train(kind, x, y, init_model, torch.float32, perturb) for perturb in (None, 1, 2, 3, 4)]
        l32 = runs32[0][0]
        # The ensemble's envelope: at each step the largest relative deviation any float32 run
        # showed from float64 at that step or before.
        envelope, worst = [], 0.0
        for step in range(STEPS):
            worst = max([worst] + [abs(r[0][step] - l64[step]) / abs(l64[step]) for r in runs32])
            envelope.append(worst)
        meta["losses32"][kind], meta["losses64"][kind], meta["envelope32"][kind] = l32, l64, envelope
        meta["final_dev32"][kind] = {
            k: max(((r[1][k].double() - f64[k]).norm() / f64[k].norm().clamp_min(1e-30)).item() for r in runs32)
            for k in f64}
        tensors.update({f"{kind}/final/" + k: v.float() for k, v in f64.items()})
        first = next((i for i, e in enumerate(envelope) if e > 1e-4), None)
        print(f"{kind}: loss {l64[0]:.4f} -> {l64[-1]:.4f}; float32 ensemble vs float64: largest loss deviation "
              f"{envelope[-1]:.1e}, first above 1e-4 at step {first}", flush=True)
    write_safetensors(os.path.join(HERE, "trajectory.safetensors"), tensors)
    meta.update({"generator": "tests/golden/make_trajectory.py", "torch": torch.__version__, "steps": STEPS,
                 "batch": BATCH, "images": IMAGES, "max_lr": MAX_LR, "seed": SEED,
                 "data": "the first IMAGES training images of cifar10-subset (data_batch_1..5 in order)",
                 "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)})
    with open(os.path.join(HERE, "trajectory.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
