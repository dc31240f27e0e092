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
    path = os.path.join(HERE, "onecycle.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"torch_version": torch.__version__, "cases": schedule_cases()}, f)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
