#!/usr/bin/env python3
"""Writes the PyTorch golden fixtures the C++ tests compare against.

Needs Debian's python3-torch (run with /usr/bin/python3); the fixtures are committed, so the
test suite itself never needs torch. Inputs are float32 values; PyTorch computes in float64 from
them, so the fixtures hold the exact answer to float64 precision.

    /usr/bin/python3 tests/golden/make_golden.py   # rewrites tests/golden/*.json
"""
import json
import os

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


def t32(*shape, gen, scale=1.0, shift=0.0):
    """A float32-representable tensor, returned as float64 for exact reference arithmetic."""
    return (torch.randn(*shape, generator=gen) * scale + shift).float().double()


def enc(t):
    return {"shape": list(t.shape), "data": [float(v) for v in t.detach().reshape(-1).tolist()]}


def run(name, op, attrs, inputs, fn, grad_of, gen):
    """fn(inputs) -> dict of outputs with 'y' first; grads are taken of y w.r.t. grad_of."""
    leaves = {k: v.clone().requires_grad_(k in grad_of) for k, v in inputs.items()}
    outs = fn(leaves)
    y = outs["y"]
    gy = t32(*y.shape, gen=gen) if y.dim() > 0 else torch.tensor(1.0, dtype=torch.float64)
    y.backward(gy)
    return {
        "name": name,
        "op": op,
        "attrs": attrs,
        "inputs": {k: enc(v) for k, v in inputs.items()},
        "grad_output": enc(gy),
        "outputs": {k: enc(v) for k, v in outs.items()},
        "grads": {k: enc(leaves[k].grad) for k in grad_of},
    }


def variant_cases(gen):
    """The norm family beyond PyTorch's modules: InstanceNorm2d from torch, the others written out
    from their papers' equations (autograd differentiates them; detach() where a paper stops the
    gradient). Attrs name the nl::NormSpec the C++ test builds."""
    cases = []
    N, C, H, W = 5, 6, 5, 7

    def common(shift=0.4):
        return {
            "x": t32(N, C, H, W, gen=gen, scale=1.5, shift=shift),
            "gamma": t32(C, gen=gen, scale=0.5, shift=1.0),
            "beta": t32(C, gen=gen, scale=0.5),
        }

    # InstanceNorm (affine): torch's own op.
    inputs = common()
    fn = lambda L: {"y": F.instance_norm(L["x"], weight=L["gamma"], bias=L["beta"], eps=1e-5)}
    cases.append(run("instance_norm", "normalize", {"spec": "in", "eps": 1e-5}, inputs, fn,
                     ["x", "gamma", "beta"], gen))

    # RMSNorm over (C, H, W) per sample with a per-channel affine.
    def rms(L):
        x = L["x"]
        ms = (x * x).mean(dim=(1, 2, 3), keepdim=True)
        return {"y": x / torch.sqrt(ms + 1e-5) * L["gamma"].view(1, -1, 1, 1) + L["beta"].view(1, -1, 1, 1)}
    cases.append(run("rms_norm", "normalize", {"spec": "rms", "eps": 1e-5}, common(), rms,
                     ["x", "gamma", "beta"], gen))

    # Ghost BatchNorm (Hoffer et al. 2017): F.batch_norm on each micro-batch of 2 samples in
    # order (2, 2, 1), the running statistics updated by each.
    inputs = common()
    inputs["running_mean"] = t32(C, gen=gen, scale=0.5)
    inputs["running_var"] = t32(C, gen=gen).abs() + 0.5

    def gbn(L):
        rm, rv = L["running_mean"].detach().clone(), L["running_var"].detach().clone()
        ys = [F.batch_norm(chunk, rm, rv, L["gamma"], L["beta"], training=True, momentum=0.1, eps=1e-5)
              for chunk in L["x"].split(2, dim=0)]
        return {"y": torch.cat(ys), "running_mean": rm, "running_var": rv}
    cases.append(run("ghost_batch_norm_2", "normalize", {"spec": "gbn", "ghost_batch": 2, "eps": 1e-5},
                     inputs, gbn, ["x", "gamma", "beta"], gen))

    # Batch Renormalization (Ioffe 2017, Algorithm 1): r and d from the moving statistics, clipped
    # and treated as constants; moving averages updated with the batch's (unbiased) statistics.
    inputs = common()
    inputs["running_mean"] = t32(C, gen=gen, scale=0.6, shift=0.5)
    inputs["running_var"] = torch.exp(t32(C, gen=gen, scale=0.8, shift=0.8)).float().double()
    r_max, d_max, eps = 1.5, 0.5, 1e-5

    def brn(L):
        x, rm, rv = L["x"], L["running_mean"].detach().clone(), L["running_var"].detach().clone()
        mu = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        sigma = torch.sqrt(var + eps)
        sigma_run = torch.sqrt(rv + eps)
        r = torch.clamp(sigma / sigma_run, 1.0 / r_max, r_max).detach()
        d = torch.clamp((mu - rm) / sigma_run, -d_max, d_max).detach()
        xhat = (x - mu.view(1, -1, 1, 1)) / sigma.view(1, -1, 1, 1) * r.view(1, -1, 1, 1) + d.view(1, -1, 1, 1)
        y = xhat * L["gamma"].view(1, -1, 1, 1) + L["beta"].view(1, -1, 1, 1)
        m = x.numel() // C
        with torch.no_grad():
            rm.mul_(0.9).add_(0.1 * mu)
            rv.mul_(0.9).add_(0.1 * var * m / (m - 1))
        return {"y": y, "running_mean": rm, "running_var": rv}
    cases.append(run("batch_renorm", "normalize", {"spec": "brn", "r_max": r_max, "d_max": d_max, "eps": eps},
                     inputs, brn, ["x", "gamma", "beta"], gen))

    # Filter Response Normalization + TLU (Singh & Krishnan 2019, eqs. 1-3):
    # nu^2 = mean over (H, W) of x^2, y = max(gamma * x / sqrt(nu^2 + eps) + beta, tau).
    inputs = common(shift=0.2)
    inputs["tau"] = t32(C, gen=gen, scale=0.3, shift=-0.2)

    def frn(L):
        x = L["x"]
        nu2 = (x * x).mean(dim=(2, 3), keepdim=True)
        z = x / torch.sqrt(nu2 + 1e-6) * L["gamma"].view(1, -1, 1, 1) + L["beta"].view(1, -1, 1, 1)
        return {"y": torch.max(z, L["tau"].view(1, -1, 1, 1))}
    cases.append(run("frn_tlu", "normalize", {"spec": "frn", "eps": 1e-6}, inputs, frn,
                     ["x", "gamma", "beta", "tau"], gen))

    # Weight Standardization (Qiao et al. 2019) before a 3x3 convolution, each filter over
    # (C, R, S) with the biased variance inside the root (see nn::Conv2d::weight_standardization).
    inputs = {"x": t32(2, 3, 6, 5, gen=gen), "w": t32(4, 3, 3, 3, gen=gen, scale=0.3, shift=0.1)}

    def ws(L):
        w = L["w"]
        flat = w.reshape(4, -1)
        mean = flat.mean(dim=1, keepdim=True)
        var = flat.var(dim=1, unbiased=False, keepdim=True)
        w_hat = ((flat - mean) / torch.sqrt(var + 1e-5)).reshape(w.shape)
        return {"y": F.conv2d(L["x"], w_hat, padding=1)}
    cases.append(run("ws_conv2d", "ws_conv2d", {"eps": 1e-5, "padding": 1}, inputs, ws, ["x", "w"], gen))
    return cases


def conv_cases(gen):
    cases = []
    for name, (n, c, h, w, k, r, stride, pad, bias) in {
        "conv2d_3x3_s1_p1_bias": (2, 3, 7, 6, 4, 3, 1, 1, True),
        "conv2d_3x3_s2_p0_nobias": (2, 3, 7, 6, 5, 3, 2, 0, False),
        "conv2d_1x1": (3, 6, 5, 7, 4, 1, 1, 0, False),
        "conv2d_5x5_s2_p2": (1, 2, 9, 8, 3, 5, 2, 2, True),
    }.items():
        inputs = {"x": t32(n, c, h, w, gen=gen), "w": t32(k, c, r, r, gen=gen, scale=0.3)}
        if bias:
            inputs["b"] = t32(k, gen=gen)
        fn = lambda L, s=stride, p=pad: {"y": F.conv2d(L["x"], L["w"], L.get("b"), stride=s, padding=p)}
        cases.append(run(name, "conv2d", {"stride": stride, "padding": pad}, inputs, fn,
                         list(inputs), gen))
    return cases


def norm_cases(gen):
    cases = []
    N, C, H, W = 3, 6, 5, 7
    for training in (True, False):
        inputs = {
            "x": t32(N, C, H, W, gen=gen, scale=2.0, shift=0.5),
            "gamma": t32(C, gen=gen, scale=0.5, shift=1.0),
            "beta": t32(C, gen=gen),
            "running_mean": t32(C, gen=gen),
            "running_var": t32(C, gen=gen).abs() + 0.5,
        }

        def fn(L, training=training):
            rm, rv = L["running_mean"].detach().clone(), L["running_var"].detach().clone()
            y = F.batch_norm(L["x"], rm, rv, L["gamma"], L["beta"], training=training,
                             momentum=0.1, eps=1e-5)
            return {"y": y, "running_mean": rm, "running_var": rv}

        cases.append(run(f"batch_norm_{'train' if training else 'eval'}", "batch_norm",
                         {"training": training, "momentum": 0.1, "eps": 1e-5}, inputs, fn,
                         ["x", "gamma", "beta"], gen))
    for groups in (1, 2, 3, 6):
        inputs = {
            "x": t32(N, C, H, W, gen=gen, scale=1.5, shift=-0.3),
            "gamma": t32(C, gen=gen, scale=0.5, shift=1.0),
            "beta": t32(C, gen=gen),
        }
        fn = lambda L, g=groups: {"y": F.group_norm(L["x"], g, L["gamma"], L["beta"], eps=1e-5)}
        cases.append(run(f"group_norm_G{groups}", "group_norm", {"groups": groups, "eps": 1e-5},
                         inputs, fn, ["x", "gamma", "beta"], gen))
    inputs = {"x": t32(5, 7, gen=gen, scale=3.0, shift=1.0), "gamma": t32(7, gen=gen),
              "beta": t32(7, gen=gen)}
    fn = lambda L: {"y": F.layer_norm(L["x"], (7,), L["gamma"], L["beta"], eps=1e-5)}
    cases.append(run("layer_norm_last_dim", "layer_norm", {"eps": 1e-5}, inputs, fn,
                     ["x", "gamma", "beta"], gen))
    return cases


def misc_cases(gen):
    cases = []
    x = t32(2, 3, 7, 6, gen=gen)
    cases.append(run("max_pool2d_2x2", "max_pool2d", {"kernel": 2, "stride": 2}, {"x": x},
                     lambda L: {"y": F.max_pool2d(L["x"], 2, 2)}, ["x"], gen))
    cases.append(run("max_pool2d_3x3_s2", "max_pool2d", {"kernel": 3, "stride": 2}, {"x": x},
                     lambda L: {"y": F.max_pool2d(L["x"], 3, 2)}, ["x"], gen))
    logits = t32(6, 10, gen=gen, scale=2.0)
    target = torch.randint(0, 10, (6,), generator=gen)

    def nll(L):
        logp = F.log_softmax(L["x"], dim=1)
        return {"y": F.nll_loss(logp, target), "logp": logp}

    case = run("log_softmax_nll", "log_softmax_nll", {}, {"x": logits}, nll, ["x"], gen)
    case["target"] = [int(v) for v in target.tolist()]
    cases.append(case)
    cases.append(run("log_softmax", "log_softmax", {}, {"x": logits},
                     lambda L: {"y": F.log_softmax(L["x"], dim=1)}, ["x"], gen))
    lin = {"x": t32(4, 5, gen=gen), "w": t32(3, 5, gen=gen), "b": t32(3, gen=gen)}
    cases.append(run("linear", "linear", {}, lin,
                     lambda L: {"y": F.linear(L["x"], L["w"], L["b"])}, ["x", "w", "b"], gen))
    return cases


def schedule_cases():
    """OneCycleLR with PyTorch's defaults: lr and momentum at every step of two schedules."""
    cases = []
    for max_lr, total in ((0.1, 41 * 20), (0.05, 37)):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=max_lr / 25, momentum=0.9)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total)
        lrs, moms = [], []
        for step in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            moms.append(opt.param_groups[0]["momentum"])
            opt.step()
            sched.step()
        cases.append({"max_lr": max_lr, "total_steps": total, "lr": lrs, "momentum": moms})
    return cases


def main():
    torch.set_default_dtype(torch.float64)
    gen = torch.Generator().manual_seed(20261124)
    for fname, cases in (("conv2d.json", conv_cases(gen)), ("norm.json", norm_cases(gen)),
                         ("misc.json", misc_cases(gen))):
        path = os.path.join(HERE, fname)
        with open(path + ".tmp", "w") as f:
            json.dump({"torch_version": torch.__version__, "cases": cases}, f)
        os.replace(path + ".tmp", path)
        print(f"wrote {path}: {len(cases)} cases")
    # Its own generator: the fixtures above stay what they were.
    vgen = torch.Generator().manual_seed(20261130)
    path = os.path.join(HERE, "norm_variants.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"torch_version": torch.__version__, "cases": variant_cases(vgen)}, f)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")
    path = os.path.join(HERE, "onecycle.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"torch_version": torch.__version__, "cases": schedule_cases()}, f)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
