#!/usr/bin/env python3
"""Turns bench_norm's JSON into a markdown table: normlab against oneDNN per norm, pass and shape.

    build/bench/bench_norm --threads 2 --benchmark_format=json > norm.json
    python3 bench/norm_table.py norm.json
"""
import json
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        kind, pas, shape, impl = b["name"].split("/")[:4]
        rows.setdefault((kind, pas, shape), {})[impl] = (b["real_time"], b.get("bytes_per_second", 0), b.get("label", ""))
    ctx = data["context"]
    print(f"# {ctx.get('num_cpus')} CPUs at {ctx.get('mhz_per_cpu')} MHz, threads: {ctx.get('threads')}; "
          "GB/s = minimum bytes moved (fwd: x + y, bwd: x + dy + dx) per second")
    print("| norm | pass | N x C x H x W | normlab ms | normlab GB/s | oneDNN ms | oneDNN GB/s | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for (kind, pas, shape), r in rows.items():
        if "normlab" not in r or "onednn" not in r:
            continue
        (t0, b0, _), (t1, b1, _) = r["normlab"], r["onednn"]
        print(f"| {kind} | {pas} | {shape} | {t0:.2f} | {b0 / 1e9:.1f} | {t1:.2f} | {b1 / 1e9:.1f} | {t1 / t0:.2f}x |")


if __name__ == "__main__":
    main()
