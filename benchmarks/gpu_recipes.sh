#!/usr/bin/env bash
# A recipe search for the image studies' `cpu` budget on a lent GPU (the device tool): the
# same epochs as the CPU budget, so the accuracy carries over; runs share the GPU in lanes,
# so their wall times are not throughput figures. Selection is on validation only.
#   bash benchmarks/gpu_recipes.sh DATA_DIR SECONDS
set -u
DATA=${1:?data folder}/cifar10
LIMIT=${2:-300}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 NNLAB_CACHE_DIR=/tmp/nnlab-cache
RUNS=/tmp/gpu_runs
SGD="optim.name=sgd optim.lr=0.1 optim.momentum=0.9 optim.nesterov=true optim.weight_decay=5e-4 schedule.name=warmup-linear schedule.warmup_epochs=1 schedule.final_lr_ratio=0"
B="model.batch_norm=true train.epochs=20 train.label_smoothing=0.1 $SGD"
R="train.epochs=8 train.label_smoothing=0.1 $SGD"
t() {  # t NAME CONFIG KEY=VALUE...: one training run (CONFIG "-": the `fast` model's recipe)
    local name=$1 cfg=$2 a args=(); shift 2
    if [ "$cfg" = - ]; then args=(--model fast); else args=(--config "experiments/image/$cfg.toml"); fi
    for a in "$@"; do args+=(--set "$a"); done
    python3 -m nnlab train image "${args[@]}" --data "$DATA" --out "$RUNS/$name" --quiet \
        > "$RUNS/$name.log" 2>&1
}
mkdir -p $RUNS
# warm the decoded-image cache once, so the lanes do not all decode the JPEGs
python3 -m nnlab train image --model fast --data "$DATA" --out $RUNS/warm --quiet --set train.epochs=1 > /dev/null 2>&1
lane1() { t b-classic-sgd classic-cnn $B; t b-classic-sgd-noaug classic-cnn $B data.augment=none; t fast-e24 - train.epochs=24; }
lane2() { t b-dropout-sgd classic-cnn-dropout $B; t b-dropout-sgd-noaug classic-cnn-dropout $B data.augment=none; t fast-wide-e20 - "model.widths=[128,384,384]" train.epochs=20; }
lane3() { t b-gap-sgd classic-cnn-gap $B; t b-gap-sgd-noaug classic-cnn-gap $B data.augment=none; t a-cnn-cropflip cnn-augment train.epochs=15 data.augment=crop-flip; }
lane4() { t b-gapdrop-sgd classic-cnn-gap-dropout $B; t b-gapdrop-sgd-noaug classic-cnn-gap-dropout $B data.augment=none; t a-plain18-sgd plain18 $R; }
lane5() { t a-resnet18aug-sgd resnet18-augment $R; t a-resnet18-sgd resnet18 $R; }
export -f t lane1 lane2 lane3 lane4 lane5
export DATA RUNS B R
timeout "$LIMIT" bash -c "lane1 & lane2 & lane3 & lane4 & lane5 & wait"
python3 - <<'PY' | tee "$OUT/recipes.txt"
import json, pathlib
for p in sorted(pathlib.Path("/tmp/gpu_runs").glob("*/metrics.jsonl")):
    rows = [json.loads(x) for x in p.read_text().splitlines()]
    if not rows:
        continue
    best = max(r["val_accuracy"] for r in rows)
    done = (p.parent / "summary.json").exists()
    tta = json.loads((p.parent / "summary.json").read_text())["val"]["accuracy"] if done else None
    print(f"{p.parent.name:24s} epochs {len(rows):2d} done={done!s:5s} last {rows[-1]['val_accuracy']:.4f} "
          f"best {best:.4f} final {tta} train_acc {rows[-1]['train_accuracy']:.3f}")
PY
tar czf "$OUT/recipes.tgz" --exclude='*.safetensors' --exclude='*.pt' -C /tmp gpu_runs 2>/dev/null
exit 0
