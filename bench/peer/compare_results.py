#!/usr/bin/env python3
"""Side-by-side table of a compare_norms run and its PyTorch twin (both results.json).

    python3 bench/peer/compare_results.py runs/nl/results.json runs/torch/results.json

Prints, per norm, the mean ± sample std of the final test accuracy over seeds for both, their
difference, and the mean wall time per run. Standard library only.
"""
import json
import statistics
import sys


def per_norm_torch(results):
    out = {}
    for run in results["runs"]:
        out.setdefault(run["norm"], []).append(run)
    return out


def fmt(values):
    if len(values) > 1:
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
    return f"{values[0]:.2f}"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        ours = json.load(f)
    with open(sys.argv[2]) as f:
        torch = json.load(f)
    theirs = per_norm_torch(torch)
    print("| norm | normlab final test acc (%) | PyTorch final test acc (%) | difference (pp) | normlab s/run | PyTorch s/run |")
    print("|---|---|---|---|---|---|")
    for key, n in ours["norms"].items():
        a = [r["final"]["test_acc"] for r in n["runs"]]
        runs = theirs.get(key, [])
        b = [r["final"]["test_acc"] for r in runs]
        if not b:
            continue
        diff = statistics.mean(a) - statistics.mean(b)
        ta = statistics.mean(r["seconds"] for r in n["runs"])
        tb = statistics.mean(r["seconds"] for r in runs)
        print(f"| {n['title']} | {fmt(a)} (n={len(a)}) | {fmt(b)} (n={len(b)}) | {diff:+.2f} | {ta:.0f} | {tb:.0f} |")


if __name__ == "__main__":
    main()
