#!/usr/bin/env bash
# The final model_<norm>_s<seed>.safetensors of compare_norms loads into the PyTorch twin
# (bench/peer) and gives the same test predictions count. Needs Debian's python3-torch; without
# it the test says it skipped and passes.
#   tests/scripts/test_twin_loads_model.sh COMPARE_NORMS_BIN SOURCE_DIR CIFAR_SUBSET
set -euo pipefail
bin=$1 src=$2 subset=$3
if ! /usr/bin/python3 -c 'import torch' 2> /dev/null; then
  echo "skipped: /usr/bin/python3 has no torch (apt-get install python3-torch to run this test)"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" --data-dir "$subset" --epochs 2 --limit-train 512 --threads 1 --device cpu --no-progress --out "$work/out" > "$work/log" 2>&1 ||
  { cat "$work/log"; exit 1; }
status=0
for norm in bn gn ln; do
  want=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['norms'][sys.argv[2]]['runs'][0]['final']['test_correct'])" "$work/out/results.json" "$norm")
  got=$(/usr/bin/python3 "$src/bench/peer/compare_norms_torch.py" --data-dir "$subset" --threads 1 \
          --eval-model "$work/out/model_${norm}_s0.safetensors" | tail -n 1 |
        /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['test_correct'])")
  if [ "$want" = "$got" ]; then
    echo "ok   $norm: normlab and the twin both classify $got test images correctly"
  else
    echo "FAIL $norm: normlab $want correct, the twin $got with the same weights"
    status=1
  fi
done
exit $status
