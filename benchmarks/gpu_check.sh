#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool): the CUDA path of every task, `fast`'s time
# to accuracy, and the image studies' `cpu` budget recipes (their accuracy, not their CPU time).
#
#   bash benchmarks/gpu_check.sh DATA_DIR   # DATA_DIR holds cifar10/train.tar.gz
#
# The machine has its own torch (no pip there): nnlab runs from src/ with PYTHONPATH. Every
# step has its own time limit and writes under $OUT, so one failing step costs only itself;
# the first (a one-epoch `fast` run) stops the script, since everything after needs it.
set -u
DATA=${1:?data folder}/cifar10
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 NNLAB_CACHE_DIR=/tmp/nnlab-cache
RUNS=/tmp/gpu_runs
LOG=$OUT/steps.log
step() {  # step NAME SECONDS CMD...: run one step under a time limit, log its status and time
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$LOG"
    tail -n 25 "$OUT/$name.log"
    return $rc
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used --format=csv | tee "$LOG"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$LOG"

step smoke 200 python3 -m nnlab train image --model fast --data "$DATA" --out $RUNS/smoke \
    --quiet --set train.epochs=1 || exit 1

# the text tasks' CUDA path (cuDNN packed RNNs, CRF) on generated data, then evaluate/predict
step text 150 bash -c "
python3 -m nnlab train keyphrase --model bilstm-crf --data generated --out $RUNS/kp --quiet --epochs 2 &&
python3 -m nnlab evaluate $RUNS/kp && python3 -m nnlab predict $RUNS/kp 'Neural networks learn keyphrase extraction from text.' &&
python3 -m nnlab train similarity --model lstm --data generated --out $RUNS/sim --quiet --epochs 2 &&
python3 -m nnlab evaluate $RUNS/sim && python3 -m nnlab predict $RUNS/sim 'A man plays a guitar.' 'Someone is playing music.'"

# `fast` alone on the GPU: whole process and synchronized training seconds, 3 seeds
step fast 150 python3 benchmarks/time_to_accuracy.py --data "$DATA" --runs 3
cp benchmarks/results/time_to_accuracy.json $RUNS/ 2>/dev/null  # comes back in runs.tgz

# the image studies' `cpu` recipes side by side (their accuracy; wall times are shared)
step studies 330 bash -c "
python3 -m nnlab reproduce image-report-b --budget cpu --data $DATA --out $RUNS/report-b --quiet > $OUT/report-b.log 2>&1 &
python3 -m nnlab reproduce image-report-a --budget cpu --data $DATA --out $RUNS/report-a --quiet > $OUT/report-a.log 2>&1 &
wait"
python3 - <<'EOF' | tee "$OUT/studies.txt"
import json, pathlib
for p in sorted(pathlib.Path("/tmp/gpu_runs").glob("report-*/runs/*/summary.json")):
    s = json.loads(p.read_text())
    print(p.parents[2].name, p.parent.name, s.get("epochs_run"), round(s["val"]["accuracy"], 4),
          round(s.get("train_seconds", 0), 1), s.get("precision"))
EOF
tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.pt' -C /tmp gpu_runs 2>/dev/null
exit 0  # at most 8 files come back: the logs above and runs.tgz
