#!/usr/bin/env bash
# "the SASS summary finds loops, their loads and barriers": scripts/sass_summary.py on a
# hand-written listing in cuobjdump's format (two kernels: a grid-stride loop with two 16-byte
# loads per trip and a k-loop with a barrier, 4-byte loads and two tensor-core instructions),
# against the counts read off the listing by hand. The GPU model's issue and latency terms rest
# on these counts (docs/gpu-model.md).
#   test_sass_summary.sh SOURCE_DIR
set -euo pipefail
src=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/k.sass" << 'SASS'
Fatbin elf code:
================
arch = sm_90
code version = [1,8]

	code for sm_90
		Function : _ZN2nl4cuda10add_kernelElPKfS2_Pf
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
        /*0020*/                   ISETP.GE.AND P0, PT, R0, UR4, PT ;
        /*0030*/               @P0 EXIT ;
        /*0040*/                   LDG.E.128 R4, desc[UR6][R2.64] ;
        /*0050*/                   LDG.E.128 R8, desc[UR6][R12.64] ;
        /*0060*/                   FADD R4, R4, R8 ;
        /*0070*/                   STG.E.128 desc[UR6][R14.64], R4 ;
        /*0080*/                   IADD3 R0, R0, UR5, RZ ;
        /*0090*/                   ISETP.GE.AND P0, PT, R0, UR4, PT ;
        /*00a0*/              @!P0 BRA 0x40 ;
        /*00b0*/                   EXIT ;
        /*00c0*/                   BRA 0xc0;
		Function : _ZN2nl4cuda25implicit_gemm_tf32_kernelINS0_9ConvFwdOpEEEvT_lPf
        /*0000*/                   S2R R0, SR_TID.X ;
        /*0010*/                   IMAD R2, R0, 0x4, RZ ;
        /*0020*/                   LDG.E R4, desc[UR6][R2.64] ;
        /*0030*/                   LDG.E R5, desc[UR6][R6.64] ;
        /*0040*/                   LDG.E.U8 R9, desc[UR6][R10.64] ;
        /*0050*/                   STS [R2], R4 ;
        /*0060*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0070*/                   LDS R12, [R2] ;
        /*0080*/                   HMMA.1684.F32.TF32 R16, R12, R14, R16 ;
        /*0090*/                   HMMA.1684.F32.TF32 R20, R12, R15, R20 ;
        /*00a0*/               @P1 CALL.REL.NOINC 0x100 ;
        /*00b0*/                   ISETP.NE.AND P0, PT, R0, RZ, PT ;
        /*00c0*/               @P0 BRA 0x20 ;
        /*00d0*/                   EXIT ;
        /*0100*/                   IMAD.HI.U32 R3, R3, R4, RZ ;
        /*0110*/                   RET.REL.NODEC R20 0x0 ;
SASS
python3 "$src/scripts/sass_summary.py" --sass-text "$work/k.sass" > "$work/s.json"
python3 - "$work/s.json" << 'PY'
import json, sys
s = json.load(open(sys.argv[1]))["sm_90"]
add = s["nl::cuda::add_kernel(long, float const*, float const*, float*)"]
gemm = s["void nl::cuda::implicit_gemm_tf32_kernel<nl::cuda::ConvFwdOp>(nl::cuda::ConvFwdOp, long, float*)"]
fail = []
def expect(what, got, want):
    if got != want:
        fail.append(f"{what}: {got!r}, expected {want!r}")
expect("add: instructions", add["instructions"], 13)
expect("add: loops (the BRA to itself after EXIT is not one)", len(add["loops"]), 1)
l = add["loops"][0]
expect("add: loop span", (l["start"], l["end"]), (0x40, 0xa0))
expect("add: loop instructions", l["instructions"], 7)
expect("add: loads per trip", (l["ldg"], l["ldg_bytes"]), (2, 32))
expect("add: stores per trip", l["classes"].get("stg"), 1)
expect("add: outside loops", add["outside_loops"], 6)
g = gemm["loops"][0]
expect("gemm: loops", len(gemm["loops"]), 1)
expect("gemm: loop instructions (a CALL counts once)", g["instructions"], 11)
expect("gemm: loads per trip, bytes", (g["ldg"], g["ldg_bytes"]), (3, 9))
expect("gemm: barriers per trip", g["bar"], 1)
expect("gemm: tensor-core instructions", g["classes"].get("tensor"), 2)
expect("gemm: shared loads and stores", (g["classes"].get("lds"), g["classes"].get("sts")), (1, 1))
expect("gemm: innermost", g["innermost"], True)
if fail:
    print("sass_summary: " + "; ".join(fail))
    sys.exit(1)
print("sass_summary: the hand-counted loops, loads, barriers and classes match")
PY
