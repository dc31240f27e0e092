#!/usr/bin/env python3
"""PyTorch twin of examples/compare_norms: the same network, recipe and data files.

The yardstick for normlab's accuracy (and, in bench/, speed). Needs Debian's python3-torch:

    /usr/bin/python3 bench/peer/compare_norms_torch.py --data-dir ../shared/data/cifar10-subset \
        --seeds 3 --out runs/torch-cifar

Reads CIFAR-10's binary version (cifar-10-batches-bin/) or Fashion-MNIST IDX files (gzip), trains
the 43,600-parameter CNN of ../shared/design/comparison-recipe.md once per norm and seed, and writes
metrics.csv and results.json in the same layout as compare_norms.

With --eval-model, it instead loads a normlab model_<norm>_s<seed>.safetensors into the twin and
prints its test accuracy as one JSON line (the normlab names are mapped to the twin's):

    /usr/bin/python3 bench/peer/compare_norms_torch.py --data-dir ../shared/data/cifar10-subset \
        --eval-model runs/compare_norms/model_gn_s0.safetensors
"""
import re
import argparse
import csv
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


# ---------------------------------------------------------------- data
def read_cifar_file(path):
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 3073:
        sys.exit(f"{path}: size {raw.size} is not a multiple of 3073")
    rec = raw.reshape(-1, 3073)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        sys.exit(f"{path}: label above 9")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar(data_dir):
    d = os.path.join(data_dir, "cifar-10-batches-bin")
    parts = [read_cifar_file(os.path.join(d, f"data_batch_{i}.bin")) for i in range(1, 6)]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = read_cifar_file(os.path.join(d, "test_batch.bin"))
    return xtr, ytr, xte, yte, CIFAR_MEAN, CIFAR_STD


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion(data_dir):
    def p(name):
        return os.path.join(data_dir, name)
    xtr = read_idx(p("train-images-idx3-ubyte.gz"))[:, None]
    ytr = read_idx(p("train-labels-idx1-ubyte.gz")).astype(np.int64)
    xte = read_idx(p("t10k-images-idx3-ubyte.gz"))[:, None]
    yte = read_idx(p("t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    return xtr, ytr, xte, yte, FMNIST_MEAN, FMNIST_STD


def normalise(x_u8, mean, std):
    x = x_u8.astype(np.float32) / 255.0
    m = np.array(mean, np.float32)[None, :, None, None]
    s = np.array(std, np.float32)[None, :, None, None]
    return (x - m) / s


def augment(x, rng, crop_pad, mean, std):
    """Pad-4 random crop and horizontal flip, per sample, on normalised float32 images. The border
    is black (0 before normalising, torchvision's RandomCrop(32, padding=4) before Normalize), the
    mean colour (0 after normalising) or the image reflected at its edge (numpy's "reflect")."""
    n, c, h, w = x.shape
    if crop_pad == "reflect":
        padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)), mode="reflect")
    else:
        fill = np.zeros(c, np.float32)
        if crop_pad == "black":
            fill = (np.float32(0) - np.array(mean, np.float32)) / np.array(std, np.float32)
        padded = np.broadcast_to(fill[None, :, None, None], (n, c, h + 8, w + 8)).copy()
        padded[:, :, 4:4 + h, 4:4 + w] = x
    out = np.empty_like(x)
    offs = rng.integers(0, 9, size=(n, 2))
    flips = rng.random(n) < 0.5
    for i in range(n):
        dy, dx = offs[i]
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out


# ---------------------------------------------------------------- model
def make_norm(kind, c):
    if kind == "bn":
        return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)
    if kind == "gn":
        return nn.GroupNorm(4, c)
    if kind == "ln":
        return nn.GroupNorm(1, c)  # LayerNorm over (C, H, W) with a per-channel affine
    raise ValueError(kind)


class Block(nn.Module):
    def __init__(self, cin, cout, kind, residual=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm = make_norm(kind, cout)
        self.drop = nn.Dropout(0.05)
        self.residual = residual

    def forward(self, x):
        y = self.drop(F.relu(self.norm(self.conv(x))))
        return x + y if self.residual else y


class Net(nn.Module):
    def __init__(self, kind, in_ch=3):
        super().__init__()
        self.c1 = Block(in_ch, 16, kind)
        self.c2 = Block(16, 32, kind)
        self.t1 = nn.Conv2d(32, 16, 1, bias=False)
        self.c3 = Block(16, 32, kind)
        self.c4 = Block(32, 32, kind, residual=True)
        self.c5 = Block(32, 32, kind, residual=True)
        self.t2 = nn.Conv2d(32, 16, 1, bias=False)
        self.c7 = Block(16, 24, kind)
        self.c8 = Block(24, 24, kind, residual=True)
        self.c9 = Block(24, 24, kind, residual=True)
        self.head = nn.Conv2d(24, 10, 1, bias=False)

    def forward(self, x):
        x = F.max_pool2d(self.t1(self.c2(self.c1(x))), 2)
        x = F.max_pool2d(self.t2(self.c5(self.c4(self.c3(x)))), 2)
        x = self.c9(self.c8(self.c7(x)))
        x = self.head(F.adaptive_avg_pool2d(x, 1)).flatten(1)
        return F.log_softmax(x, dim=1)


# ---------------------------------------------------------------- normlab models

def read_safetensors(path):
    """{name: numpy array} from a safetensors file: with the safetensors package when it is
    installed, otherwise by the format (8-byte little-endian header length, JSON, raw data)."""
    try:
        from safetensors.numpy import load_file
        return load_file(path)
    except ImportError:
        pass
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    dtypes = {"F32": "<f4", "I32": "<i4"}
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        b, e = v["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=dtypes[v["dtype"]]).reshape(v["shape"])
    return out


def twin_name(name):
    """normlab's parameter/buffer name -> the twin's state_dict key."""
    m = re.fullmatch(r"C(\d+)\.(?:body\.)?(conv|norm)\.(.+)", name)
    if m:
        return f"c{m.group(1)}.{m.group(2)}.{m.group(3)}"
    return {"c3.weight": "t1.weight", "c6.weight": "t2.weight", "c10.weight": "head.weight"}[name]


def eval_model(path, data):
    tensors = read_safetensors(path)
    kind = re.search(r"model_([a-z0-9+]+)_s\d+\.safetensors$", path).group(1)
    xtr, ytr, xte, yte, mean, std = data
    model = Net(kind, xtr.shape[1])
    state = model.state_dict()
    filled = set()
    for name, arr in tensors.items():
        key = twin_name(name)
        if key not in state or tuple(state[key].shape) != arr.shape:
            sys.exit(f"{path}: {name} -> {key} does not fit the twin ({tuple(state.get(key, torch.empty(0)).shape)})")
        state[key] = torch.from_numpy(arr.copy())
        filled.add(key)
    missing = [k for k in state if k not in filled and not k.endswith("num_batches_tracked")]
    if missing:
        sys.exit(f"{path}: no values for the twin's {', '.join(missing)}")
    model.load_state_dict(state)
    loss, correct = evaluate(model, xte, yte, 500)
    print(json.dumps({"model": path, "norm": kind, "test_loss": loss, "test_correct": correct,
                      "test_acc": 100.0 * correct / len(xte)}))


# ---------------------------------------------------------------- training
def evaluate(model, x, y, batch):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = model(torch.from_numpy(x[i:i + batch]))
            t = torch.from_numpy(y[i:i + batch])
            loss += F.nll_loss(out, t, reduction="sum").item()
            correct += (out.argmax(1) == t).sum().item()
    return loss / len(x), correct


def run(kind, seed, data, args, writer):
    xtr, ytr, xte, yte, mean, std = data
    in_ch = xtr.shape[1]
    torch.manual_seed(seed)
    model = Net(kind, in_ch)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=args.lr / 25, momentum=0.9, weight_decay=5e-4)
    steps = math.ceil(len(xtr) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs,
                                                steps_per_epoch=steps)
    rng = np.random.default_rng(seed)  # data order and augmentation, shared by the norms
    history = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        model.train()
        order = rng.permutation(len(xtr))
        tl, tc = 0.0, 0
        for b in range(steps):
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            xb = normalise(xtr[idx], mean, std)
            if args.augment:
                xb = augment(xb, rng, args.crop_pad, mean, std)
            yb = torch.from_numpy(ytr[idx])
            xb = torch.from_numpy(np.ascontiguousarray(xb))
            opt.zero_grad()
            out = model(xb)
            loss = F.nll_loss(out, yb)
            loss.backward()
            opt.step()
            sched.step()
            tl += loss.item() * len(idx)
            tc += (out.argmax(1) == yb).sum().item()
        test_loss, test_correct = evaluate(model, xte, yte, 500)
        secs = time.time() - t0
        row = dict(norm=kind, seed=seed, epoch=epoch, train_loss=tl / len(xtr),
                   train_acc=100.0 * tc / len(xtr), test_loss=test_loss,
                   test_acc=100.0 * test_correct / len(xte), seconds=secs)
        history.append(row)
        writer.writerow(row)
        print(f"[torch {kind} seed {seed}] epoch {epoch:2d} | train loss {row['train_loss']:.4f} "
              f"acc {row['train_acc']:.2f}% | test loss {test_loss:.4f} acc {test_correct}/{len(xte)} "
              f"({row['test_acc']:.2f}%) | {secs:.0f} s", flush=True)
    return params, history


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["cifar10", "fashion-mnist"], default="cifar10")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--norms", default="bn,gn,ln")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--crop-pad", choices=["black", "mean", "reflect"], default="reflect",
                    help="what fills the border of the random crop (compare_norms --crop-pad)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/torch")
    ap.add_argument("--eval-model", default=None, help="evaluate a normlab model_*.safetensors and exit")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.dataset == "cifar10":
        xtr, ytr, xte, yte, mean, std = load_cifar(args.data_dir or "data")
        args.augment = True
    else:
        xtr, ytr, xte, yte, mean, std = load_fashion(args.data_dir or "/usr/share/datasets/fashion-mnist")
        args.augment = False
    # Training images stay uint8 until a batch is drawn; test images are normalised once.
    data = (xtr, ytr, normalise(xte, mean, std), yte, mean, std)
    if args.eval_model:
        eval_model(args.eval_model, data)
        return
    print(f"torch {torch.__version__}, {args.threads} threads, {len(xtr)} train / {len(xte)} test images")
    os.makedirs(args.out, exist_ok=True)
    results = {"framework": f"torch {torch.__version__}", "config": vars(args), "runs": []}
    with open(os.path.join(args.out, "metrics.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["norm", "seed", "epoch", "train_loss", "train_acc",
                                               "test_loss", "test_acc", "seconds"])
        writer.writeheader()
        for seed in range(args.seed, args.seed + args.seeds):
            for kind in args.norms.split(","):
                params, hist = run(kind, seed, data, args, writer)
                f.flush()
                results["runs"].append({"norm": kind, "seed": seed, "parameters": params,
                                        "final": hist[-1], "seconds": sum(h["seconds"] for h in hist)})
    summary = {}
    for kind in args.norms.split(","):
        accs = [r["final"]["test_acc"] for r in results["runs"] if r["norm"] == kind]
        summary[kind] = {"mean_test_acc": float(np.mean(accs)),
                         "std_test_acc": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                         "n": len(accs)}
        print(f"{kind}: final test accuracy {summary[kind]['mean_test_acc']:.2f}% "
              f"± {summary[kind]['std_test_acc']:.2f} over {len(accs)} seed(s)")
    results["summary"] = summary
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
