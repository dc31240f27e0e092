#!/usr/bin/env python3
"""Side-by-side table of normlab runs and their PyTorch twin's, with Welch's t-test per norm.

    /usr/bin/python3 bench/peer/compare_results.py NORMLAB... --torch TORCH... [--crop-pad mean]

NORMLAB: compare_norms results.json files, or normlab_study study.csv files (each row one run;
--crop-pad keeps the rows of one padding). TORCH: the twin's results.json files. Several files
per side are pooled (e.g. seeds 0-4 and 5-9 run as two jobs); a (norm, seed) seen twice counts
once. Prints, per norm, the mean ± sample std of the final test accuracy over seeds for both, the
difference of means and Welch's unequal-variance t-test (two-sided, scipy.stats.ttest_ind with
equal_var=False; Debian's python3-scipy). A p-value only says whether the difference can be told
from the seed-to-seed noise at this number of seeds.
"""
import argparse
import csv
import json
import statistics

from scipy import stats

TITLES = {"bn": "BatchNorm", "gn": "GroupNorm", "ln": "LayerNorm", "in": "InstanceNorm", "frn": "FRN + TLU",
          "gn+ws": "GN+WS", "rms": "RMSNorm", "gbn": "Ghost BatchNorm", "brn": "Batch Renorm"}


def read_normlab(path, crop_pad):
    """{norm: {seed: final test accuracy}} of the finished runs in one file."""
    out = {}
    if path.endswith(".csv"):
        with open(path) as f:
            for row in csv.DictReader(f):
                if row["status"] != "ok" or (crop_pad and row.get("crop_pad") != crop_pad):
                    continue
                out.setdefault(row["norm"], {})[int(row["seed"])] = float(row["final_test_acc"])
        return out
    with open(path) as f:
        results = json.load(f)
    pad = results.get("config", {}).get("crop_pad", "black")
    if crop_pad and pad != crop_pad:
        raise SystemExit(f"{path}: crop padding {pad}, not {crop_pad}")
    for key, n in results["norms"].items():
        for r in n["runs"]:
            if r.get("status", "ok") == "ok":
                out.setdefault(key, {})[int(r["seed"])] = float(r["final"]["test_acc"])
    return out


def read_torch(path, crop_pad):
    with open(path) as f:
        results = json.load(f)
    pad = results["config"].get("crop_pad", "black")
    if crop_pad and pad != crop_pad:
        raise SystemExit(f"{path}: crop padding {pad}, not {crop_pad}")
    out = {}
    for r in results["runs"]:
        out.setdefault(r["norm"], {})[int(r["seed"])] = float(r["final"]["test_acc"])
    return out


def pooled(paths, reader, crop_pad):
    out = {}
    for p in paths:
        for norm, seeds in reader(p, crop_pad).items():
            out.setdefault(norm, {}).update(seeds)
    return out


def fmt(values):
    if len(values) > 1:
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
    return f"{values[0]:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("normlab", nargs="+", help="compare_norms results.json or normlab_study study.csv files")
    ap.add_argument("--torch", nargs="+", required=True, help="the twin's results.json files")
    ap.add_argument("--crop-pad", choices=["black", "mean", "reflect"], help="use (and require) this padding")
    args = ap.parse_args()
    ours = pooled(args.normlab, read_normlab, args.crop_pad)
    theirs = pooled(args.torch, read_torch, args.crop_pad)
    print("| norm | normlab final test acc (%) | PyTorch twin (%) | difference (pp) | Welch's t | df | p |")
    print("|---|---|---|---|---|---|---|")
    for key in ours:
        if key not in theirs:
            continue
        a, b = list(ours[key].values()), list(theirs[key].values())
        diff = statistics.mean(a) - statistics.mean(b)
        t = df = p = float("nan")
        if len(a) > 1 and len(b) > 1:
            res = stats.ttest_ind(a, b, equal_var=False)
            t, p = float(res.statistic), float(res.pvalue)
            va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
            df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        print(f"| {TITLES.get(key, key)} | {fmt(a)} (n = {len(a)}) | {fmt(b)} (n = {len(b)}) | {diff:+.2f} | "
              f"{t:.2f} | {df:.1f} | {p:.3f} |")


if __name__ == "__main__":
    main()
