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
pct_start 0.3, div 25, final div 1e4; the loss is the mean NLL of log-softmax.

Each norm is trained twice. "plain": dropout off, no augmentation, the images in file order.
"aug": the recipe's dropout (0.05) and augmentation (random crop from the 4-padded image,
horizontal flip) on, through identical inputs: this script replays normlab's own random streams
(Philox4x32-10, core/include/normlab/core/kernel/philox.h, and nl::Generator's use of it), so
PyTorch sees exactly the shuffled, cropped, flipped batches normlab's DataLoader makes (seed 0,
epoch 0) and drops exactly the elements normlab's fused norm epilogue drops (a Generator seeded
DROPOUT_SEED, one reservation per dropout layer in forward order). normlab's side is its
production path, loader and fused kernels included; nothing is injected into it.

    /usr/bin/python3 tests/golden/make_trajectory.py DATA_DIR [--out DIR]

--out writes the fixture elsewhere (bench/peer/trajectory_live.sh checks normlab against a fresh
one made with whatever torch is installed).
"""
import copy
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
LOADER_SEED, DROPOUT_SEED, DROPOUT, PAD = 0, 1, 0.05, 4
# The crop's border (nl::data::CropPad): black, mean or reflect. The committed fixture holds black;
# the test reads it from trajectory.json and sets the loader to match.
CROP_PAD = os.environ.get("NORMLAB_TRAJECTORY_CROP_PAD", "black")
M32 = 0xFFFFFFFF


# --- normlab's random streams, replayed --------------------------------------------------------

def philox_block(block, seed):
    """Philox4x32-10 of counter (block lo, block hi, 0, 0) under key (seed lo, seed hi): four u32."""
    c = [block & M32, block >> 32, 0, 0]
    k0, k1 = seed & M32, seed >> 32
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & M32, (p0 >> 32) ^ c[3] ^ k1, p0 & M32]
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c


def philox_bits(seed, offset, n):
    """philox_bits(seed, offset, i) for i < n, vectorised: element i is lane i % 4 of block offset + i / 4."""
    block = np.uint64(offset) + np.arange((n + 3) // 4, dtype=np.uint64)
    c0, c1 = block & np.uint64(M32), block >> np.uint64(32)
    c2, c3 = np.zeros_like(c0), np.zeros_like(c0)
    k0, k1 = seed & M32, seed >> 32
    m = np.uint64(M32)
    for _ in range(10):
        p0, p1 = np.uint64(0xD2511F53) * c0, np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & m, (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & m
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return np.stack([c0, c1, c2, c3], axis=1).reshape(-1)[:n].astype(np.uint32)


class Generator:
    """nl::Generator (core/src/rng.cpp): a host stream of Philox blocks, and reservations for kernels."""

    def __init__(self, seed, offset=0):
        self.seed, self.counter, self.buf = seed, offset, []

    def next_u32(self):
        if not self.buf:
            self.buf = philox_block(self.counter, self.seed)
            self.counter += 1
        return self.buf.pop(0)

    def next_below(self, n):
        limit = (0x100000000 // n) * n - 1
        while True:
            r = self.next_u32()
            if r <= limit:
                return r % n

    def reserve(self, n):
        self.buf = []
        first = self.counter
        self.counter += (n + 3) // 4
        return first


def keep_threshold(p):
    """philox_keep_threshold: ceil(p * 2^24) with p as a float32."""
    t = float(np.float32(p)) * 16777216.0
    f = int(t)
    return f + 1 if f < t else f


def loader_epoch0(x_u8, y, mean, std):
    """nl::data::DataLoader (nn/src/data/loader.cpp), shuffle and augment on, epoch 0: the images
    in its order, cropped and flipped as it does, normalised with its float32 formula."""
    n = len(y)
    g = Generator(LOADER_SEED, 0)  # epoch 0 starts at offset 0 * kEpochStride
    order = list(range(n))
    for i in range(n, 1, -1):
        j = g.next_below(i)
        order[i - 1], order[j] = order[j], order[i - 1]
    out = np.zeros((n, 3, 32, 32), np.float32)
    scale = np.float32(1) / (np.float32(255) * np.asarray(std, np.float32))
    shift = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    # The border: black is pixel 0 through the same formula (-shift), the mean colour exactly 0.
    fill = -shift if CROP_PAD == "black" else np.zeros(3, np.float32)
    reflect = lambda i: np.where(i < 0, -i, np.where(i > 31, 62 - i, i))  # edge pixel not repeated
    for k, idx in enumerate(order):
        dy = g.next_below(2 * PAD + 1) - PAD
        dx = g.next_below(2 * PAD + 1) - PAD
        flip = g.next_u32() & 1
        # out[h, w] = image[h + dy, (flip ? 31 - w : w) + dx], normalised with the loader's formula
        rows = np.arange(32) + dy
        cols = (31 - np.arange(32) if flip else np.arange(32)) + dx
        if CROP_PAD == "reflect":
            rows, cols = reflect(rows), reflect(cols)
        inside = ((rows >= 0) & (rows < 32))[:, None] & ((cols >= 0) & (cols < 32))[None, :]
        img = x_u8[idx][:, np.clip(rows, 0, 31)][:, :, np.clip(cols, 0, 31)]
        norm = img.astype(np.float32) * scale[:, None, None] - shift[:, None, None]
        out[k] = np.where(inside[None], norm, fill[:, None, None])
    return torch.from_numpy(out), y[torch.tensor(order)]


def dropout_masks(model, x):
    """Per step, per dropout layer in forward order, the keep mask normlab's fused epilogue draws
    from a Generator seeded DROPOUT_SEED (one reservation of the layer's element count each)."""
    model = copy.deepcopy(model).eval()  # a forward in training mode would move BatchNorm's running statistics
    shapes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(out.shape)))
             for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    with torch.no_grad():
        model(x[:BATCH].float())
    for h in hooks:
        h.remove()
    g, thr, masks = Generator(DROPOUT_SEED), keep_threshold(DROPOUT), []
    for _ in range(STEPS):
        step = []
        for shape in shapes:
            n = int(np.prod(shape))
            bits = philox_bits(DROPOUT_SEED, g.reserve(n), n)
            step.append(torch.from_numpy((bits >> np.uint32(8)) >= thr).reshape(shape))
        masks.append(step)
    return masks


class MaskedDropout(torch.nn.Module):
    """Dropout whose keep masks come from a list, in call order: y = x * mask / (1 - p)."""

    def __init__(self, p, feed):
        super().__init__()
        self.p, self.feed = p, feed

    def forward(self, x):
        mask = self.feed.pop(0)
        assert mask.shape == x.shape, (mask.shape, x.shape)
        return x * mask.to(x.dtype) * (1.0 / (1.0 - self.p))



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


def train(kind, x, y, init_model, dtype, perturb=None, masks=None):
    """perturb: None, or a seed: weights and every batch scaled by 1 + 1e-7 * N(0, 1).
    masks: None (dropout off), or per step the keep mask of every dropout layer."""
    model = Net(kind)
    model.load_state_dict(init_model.state_dict())
    model = model.to(dtype)
    feed = []
    for block in model.modules():
        if isinstance(getattr(block, "drop", None), torch.nn.Dropout):
            block.drop = MaskedDropout(block.drop.p, feed) if masks is not None else torch.nn.Identity()
    g = None
    if perturb is not None:
        g = torch.Generator().manual_seed(perturb)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + 1e-7 * torch.randn(p.shape, generator=g, dtype=dtype))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=MAX_LR / 25, momentum=0.95, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=MAX_LR, total_steps=STEPS)
    losses = []
    for step in range(STEPS):
        b = step * BATCH
        xb = x[b:b + BATCH].to(dtype)
        if g is not None:
            xb = xb * (1 + 1e-7 * torch.randn(xb.shape, generator=g, dtype=dtype))
        if masks is not None:
            feed[:] = list(masks[step])
        opt.zero_grad()
        loss = F.nll_loss(model(xb), y[b:b + BATCH])
        assert not feed, "a dropout mask was not used"
        loss.backward()
        opt.step()
        if step + 1 < STEPS:
            sched.step()
        losses.append(loss.item())
    return losses, state(model)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--out")]
    out_dir = HERE
    if "--out" in sys.argv:
        out_dir = sys.argv[sys.argv.index("--out") + 1]
        args.remove(out_dir)
    data_dir = args[0] if args else os.path.join(HERE, "..", "..", "..", "shared", "data", "cifar10-subset")
    parts = [read_cifar_file(os.path.join(data_dir, "cifar-10-batches-bin", f"data_batch_{i}.bin")) for i in range(1, 6)]
    x_u8 = np.concatenate([p[0] for p in parts])[:IMAGES]
    y = torch.from_numpy(np.concatenate([p[1] for p in parts])[:IMAGES]).long()
    assert len(x_u8) == IMAGES, f"the subset has {len(x_u8)} training images, {IMAGES} needed"
    # plain: float32 as numpy computes it, (u8 / 255 - mean) / std, every operation in float32.
    x_plain = torch.from_numpy(np.ascontiguousarray(normalise(x_u8, CIFAR_MEAN, CIFAR_STD)))
    x_aug, y_aug = loader_epoch0(x_u8.reshape(IMAGES, 3, 32, 32), y, CIFAR_MEAN, CIFAR_STD)
    torch.set_num_threads(2)
    tensors, meta = {}, {"losses32": {}, "losses64": {}, "envelope32": {}, "final_dev32": {}}
    masks = None
    for mode in ("plain", "aug"):
        for kind in ("bn", "gn", "ln"):
            key = kind if mode == "plain" else kind + "/aug"
            x, yy = (x_plain, y) if mode == "plain" else (x_aug, y_aug)
            torch.manual_seed(SEED)
            init_model = Net(kind)
            s0 = state(init_model)
            if not tensors:
                tensors.update({"init/" + k: v for k, v in s0.items()})
            # Every norm starts from the same conv weights (norm weights 1, biases 0).
            for k, v in s0.items():
                assert torch.equal(v, tensors["init/" + k]), k
            if mode == "aug" and masks is None:
                masks = dropout_masks(init_model, x)
            m = masks if mode == "aug" else None
            l64, f64 = train(kind, x, yy, init_model, torch.float64, masks=m)
            runs32 = [train(kind, x, yy, init_model, torch.float32, perturb, masks=m) for perturb in (None, 1, 2, 3, 4)]
            l32 = runs32[0][0]
            # The ensemble's envelope: at each step the largest relative deviation any float32 run
            # showed from float64 at that step or before.
            envelope, worst = [], 0.0
            for step in range(STEPS):
                worst = max([worst] + [abs(r[0][step] - l64[step]) / abs(l64[step]) for r in runs32])
                envelope.append(worst)
            meta["losses32"][key], meta["losses64"][key], meta["envelope32"][key] = l32, l64, envelope
            meta["final_dev32"][key] = {
                k: max(((r[1][k].double() - f64[k]).norm() / f64[k].norm().clamp_min(1e-30)).item() for r in runs32)
                for k in f64}
            tensors.update({f"{key}/final/" + k: v.float() for k, v in f64.items()})
            first = next((i for i, e in enumerate(envelope) if e > 1e-4), None)
            print(f"{key}: loss {l64[0]:.4f} -> {l64[-1]:.4f}; float32 ensemble vs float64: largest loss deviation "
                  f"{envelope[-1]:.1e}, first above 1e-4 at step {first}", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "trajectory.safetensors"), tensors)
    meta.update({"generator": "tests/golden/make_trajectory.py", "torch": torch.__version__, "steps": STEPS,
                 "batch": BATCH, "images": IMAGES, "max_lr": MAX_LR, "seed": SEED,
                 "data": "the first IMAGES training images of cifar10-subset (data_batch_1..5 in order)",
                 "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD),
                 "aug": {"loader_seed": LOADER_SEED, "dropout_seed": DROPOUT_SEED, "dropout": DROPOUT, "pad": PAD,
                         "crop_pad": CROP_PAD,
                         "note": "normlab's DataLoader (shuffle, crop, flip; epoch 0) and a dropout Generator "
                                 "seeded dropout_seed, replayed here"}})
    with open(os.path.join(out_dir, "trajectory.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
