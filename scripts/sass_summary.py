#!/usr/bin/env python3
"""The instruction mix of every CUDA kernel, read from its SASS, for bench/gpu_model.

    scripts/sass_summary.py --cuobjdump PATH OBJ... > sass-summary.json
    scripts/sass_summary.py --sass-text FILE > sass-summary.json   (cuobjdump -sass's output, saved)

Runs `cuobjdump -sass` on each object nvcc built (scripts/check-nvcc.sh) and writes, per
architecture and kernel (demangled as ptxas-summary.txt names it):
  - "instructions": the kernel's static instruction count and "classes": the count per class;
  - "loops": every loop (a backward branch and the instructions between its target and it), with
    its instruction count, class counts, global loads ("ldg") and the bytes they load per thread
    per trip ("ldg_bytes"), barriers ("bar"), and whether it holds no other loop ("innermost");
  - "outside_loops": the instructions in no loop.
A CALL counts as one instruction: in these kernels calls reach slow paths (a float division's
denormal case, a 64-bit division whose operands do not fit in 32 bits) that normally do not run.
The model (docs/gpu-model.md) multiplies these per-trip counts by the memory requests the cuemu
profiler measures on the same shapes. Static counts only: no dual issue, no divergence.
"""
import argparse
import json
import os
import re
import subprocess
import sys

LINE = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]\s+)?([A-Z0-9_]+)((?:\.[A-Z0-9_]+)*)\s*(.*?);")
FUNC = re.compile(r"^\s+Function : (\S+)", re.M)
ARCH = re.compile(r"^arch = (sm_\d+)")
TARGET = re.compile(r"0x([0-9a-f]+)")

CLASSES = [
    ("tensor", {"HMMA", "IMMA", "DMMA", "HGMMA", "BMMA"}),
    ("fp32", {"FFMA", "FADD", "FMUL", "FMNMX", "FSETP", "FSEL", "FCHK", "FSET", "FRND", "FSWZADD", "HFMA2", "HADD2", "HMUL2"}),
    ("sfu", {"MUFU"}),
    ("ldg", {"LDG", "LD"}),
    ("stg", {"STG", "ST", "RED", "ATOM", "ATOMG"}),
    ("lds", {"LDS", "LDSM"}),
    ("sts", {"STS"}),
    ("bar", {"BAR"}),
    ("shfl", {"SHFL"}),
    ("control", {"BRA", "BSSY", "BSYNC", "EXIT", "RET", "CALL", "WARPSYNC", "NOP", "BREAK", "JMP"}),
]
CLASS_OF = {op: name for name, ops in CLASSES for op in ops}


def op_class(op):
    if op in CLASS_OF:
        return CLASS_OF[op]
    # Everything else issues on the integer/uniform/conversion pipes or moves data: IMAD, IADD3,
    # LOP3, ISETP, SHF, LEA, SEL, MOV, I2F, F2I, ULDC, S2R, ...
    return "int"


def load_bytes(mods):
    for width, b in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if width in mods:
            return b
    return 4


def summarise(instrs):
    """instrs: [(addr, op, mods, operands)] of one function."""
    index = {a: i for i, (a, _, _, _) in enumerate(instrs)}
    classes = {}
    for _, op, _, _ in instrs:
        c = op_class(op)
        classes[c] = classes.get(c, 0) + 1

    loops = []
    for a, op, mods, operands in instrs:
        if op != "BRA":
            continue
        m = TARGET.search(operands)
        if not m:
            continue
        t = int(m.group(1), 16)
        # `BRA self` after the last EXIT is padding, not a loop.
        if t < a and t in index:
            loops.append((t, a))
    loops = sorted(set(loops))
    out = []
    for s, e in loops:
        body = instrs[index[s] : index[e] + 1]
        c, n, ldg, ldg_bytes = {}, 0, 0, 0
        for _, op, mods, operands in body:
            cls = op_class(op)
            c[cls] = c.get(cls, 0) + 1
            n += 1
            if cls == "ldg":
                ldg += 1
                ldg_bytes += load_bytes(mods)
        innermost = not any((s2, e2) != (s, e) and s <= s2 and e2 <= e for s2, e2 in loops)
        out.append(
            {"start": s, "end": e, "instructions": n, "classes": c, "ldg": ldg, "ldg_bytes": ldg_bytes,
             "bar": c.get("bar", 0), "innermost": innermost}
        )
    outside = sum(1 for a, _, _, _ in instrs if not any(s <= a <= e for s, e in loops))
    return {"instructions": len(instrs), "outside_loops": outside, "classes": classes, "loops": out}


def parse(text, demangled):
    result, arch, name, instrs = {}, None, None, []

    def flush():
        if name is not None and arch is not None:
            result.setdefault(arch, {})[demangled.get(name, name)] = summarise(instrs)

    for line in text.splitlines():
        m = ARCH.match(line)
        if m:
            flush()
            arch, name, instrs = m.group(1), None, []
            continue
        m = FUNC.match(line)
        if m:
            flush()
            name, instrs = m.group(1), []
            continue
        m = LINE.match(line)
        if m and name is not None:
            instrs.append((int(m.group(1), 16), m.group(3), m.group(4), m.group(5)))
    flush()
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuobjdump", help="the cuobjdump binary")
    ap.add_argument("--sass-text", help="read cuobjdump -sass output from this file instead")
    ap.add_argument("objects", nargs="*", help="objects nvcc built")
    args = ap.parse_args()
    if bool(args.sass_text) == bool(args.cuobjdump and args.objects):
        ap.error("give either --cuobjdump PATH and objects, or --sass-text FILE")
    text = open(args.sass_text).read() if args.sass_text else ""
    # cuobjdump runs nvdisasm, which the toolkit wheels keep beside it.
    env = dict(os.environ)
    if args.cuobjdump:
        env["PATH"] = os.path.dirname(os.path.abspath(args.cuobjdump)) + os.pathsep + env.get("PATH", "")
    for obj in args.objects if not args.sass_text else []:
        r = subprocess.run([args.cuobjdump, "-sass", obj], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            sys.exit(f"sass_summary: cuobjdump failed on {obj}: {r.stderr.strip()}")
        text += r.stdout
    names = sorted(set(FUNC.findall(text)))
    r = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
    demangled = dict(zip(names, r.stdout.splitlines()))
    summary = parse(text, demangled)
    if not summary:
        sys.exit("sass_summary: no kernels found in the SASS")
    json.dump(summary, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
