#!/usr/bin/env bash
# The GPU checks of a session that is lent a GPU machine (docs/results.md, "GPU runs"): one
# prepared command, about 8 minutes, for the `device` tool's one-call budget.
#
# Here, once:   python experiments/device_carry.py pack     (.devcarry/: MiniLM as fp16, the data)
# There:        run(command="bash experiments/device_checks.sh", carry=[".devcarry"], timeout_s=570)
# Locally, to check this script itself on the CPU with the smoke profile (a minute):
#               DEVICE=cpu PROFILE=smoke OUT=/tmp/devout bash experiments/device_checks.sh
#
# 1. tests/test_gpu.py: GradCache, exact resume, CPU-vs-GPU training, bf16 autocast, evaluation,
#    all on CUDA (skipped everywhere else);
# 2. the full fine-tuning reference of issue 12 (every layer trained, early stopping on dev): the
#    paper's GCL and the binary baseline, seeds 0-2, six runs of experiments/results_table.py side
#    by side on the one GPU, each its own table, merged into one report at the end. The MiniLM they
#    start from is the carried fp16 copy (device_carry.py): compare arms within this table only.
# Everything comes back as $OUT/device_results.tar.gz plus the logs' tails in $OUT.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-fullft}
ARMS=${ARMS:-gcl binary-thresholded-random}
SEEDS=${SEEDS:-0 1 2}
TABLE_S=${TABLE_S:-420}   # the table's share of the call; runs not finished by then are left out
OUT=${OUT:?set OUT to the folder whose files come back}
W=${WORK:-/tmp/gcl_device}
mkdir -p "$OUT" "$W"
PY=$(command -v python3 || command -v python)
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$OUT/steps.txt"; }

stamp "start on $(uname -n): $($PY -c 'import torch, sys; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')"
(nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1

TEXT_MODEL=()
if [ "$PROFILE" != smoke ]; then
  $PY experiments/device_carry.py unpack --to "$W" > /dev/null || { stamp "unpack failed"; exit 1; }
  export GCL_DATA_DIR="$PWD/.devcarry/data"
  TEXT_MODEL=(--text-model "$W/minilm")
fi

stamp "1. tests/test_gpu.py"
GCL_TEST_DEVICE=$DEVICE timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py > "$W/test_gpu.log" 2>&1
stamp "   rc $? : $(tail -1 "$W/test_gpu.log")"

stamp "2. $PROFILE table on $DEVICE: arms [$ARMS] seeds [$SEEDS], side by side"
pids=()
for arm in $ARMS; do
  for seed in $SEEDS; do
    name="$arm-s$seed"
    mkdir -p "$W/tables/$name" "$W/cache/$name"
    GCL_CACHE_DIR="$W/cache/$name" OMP_NUM_THREADS=2 timeout "$TABLE_S" \
      $PY experiments/results_table.py --profile "$PROFILE" --device "$DEVICE" "${TEXT_MODEL[@]}" \
      --arms "$arm" --seeds "$seed" --out "$W/tables/$name" --work "$W/work" > "$W/tables/$name.log" 2>&1 &
    pids+=($!)
  done
done
for p in "${pids[@]}"; do wait "$p"; done
stamp "   done: $(cat "$W"/tables/*/runs.jsonl 2>/dev/null | wc -l) runs recorded"

mkdir -p "$W/table"
cat "$W"/tables/*/runs.jsonl > "$W/table/runs.jsonl" 2>/dev/null
mkdir -p "$W/table/per_query"
cp "$W"/tables/*/per_query/* "$W/table/per_query/" 2>/dev/null
$PY experiments/results_table.py --report --out "$W/table" > "$W/report.log" 2>&1
stamp "   report rc $?"

for f in "$W"/tables/*.log; do echo "=== $f"; tail -5 "$f"; done > "$OUT/table_logs.txt"
tar czf "$OUT/device_results.tar.gz" --exclude="*.safetensors" -C "$W" table test_gpu.log tables 2>/dev/null
cp "$W/test_gpu.log" "$OUT/" 2>/dev/null
stamp "end"
