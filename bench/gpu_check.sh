#!/usr/bin/env bash
# The GPU check (issues 4 and 10): the runtime on the CUDA execution provider, for a session that is lent an H200:
# node placement per graph (profiling) next to the exporter's op audit, whether gpu_step.onnx was captured as a
# CUDA graph, max diff of every graph against CPU, and seconds per batch at B 1/16/64 for gpu_step CUDA graph /
# gpu_step IO binding / gpu_sampler / sampler / torch eager CUDA (target: CUDA-graph stepping >= 1.5x torch eager).
#
# The device image has torch (CUDA 13) and the CPU-only onnxruntime, no onnxruntime-gpu, and nothing can be
# fetched there. onnxruntime-gpu 1.31.1 (PyPI, built for CUDA 13 like the image's torch: it needs
# libcublas(Lt).so.13, libcudart.so.13, libcurand.so.10 and cuDNN 9, all in the image's nvidia-* packages)
# is a 256 MB wheel, over the 64 MiB a call can carry, so it travels slimmed, xz-compressed (~190 MB: the CUDA
# provider library alone is 284 MB, 177 MB as xz -6) and split into 55 MiB parts (Python's lzma both ends).
#
#   1. here (no GPU):      bash bench/gpu_check.sh prepare
#        writes bench/gpu_exports/ (small-conv + toy-gmm exports with all five graphs) and .whl/ort-gpu/part-*
#        (55 MiB each; ~5 min of xz),
#        adds both to .git/info/exclude and prints the device calls to make.
#   2. device, one call per part except the last, back to back (the machine is given back after 30 s idle):
#        run(command="bash bench/gpu_check.sh stage", carry=[".whl/ort-gpu/part-aa"], timeout_s=120)
#   3. device, last call:  run(command="bash bench/gpu_check.sh run", carry=[".whl/ort-gpu/part-XX", "bench/gpu_exports"],
#                              timeout_s=540)
#        assembles /tmp/site/onnxruntime, checks CUDA really answers, runs bench/bench_runtime_gpu.py;
#        $OUT/runtime_gpu.json and $OUT/gpu_check.log come back.
#   A warm machine keeps /tmp between calls; if it was given back in between, start again at step 2.
#   Check the script itself without a GPU: bash bench/gpu_check.sh dry-run   (every path on CPU, B 1/4, 1 repeat)
#   Device time: one stage call per part (~1 min each incl. start) + the run (~5 min: 2 models x 3 batches x 5 paths).
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=.whl/ort-gpu
PYTHON=${PYTHON:-.venv/bin/python}
STAGE=/tmp/ort-gpu-parts
ORT_VERSION=1.31.1

prepare() {
    local py=$PYTHON work
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qxF '/bench/gpu_exports/' .git/info/exclude || echo '/bench/gpu_exports/' >> .git/info/exclude
    rm -rf bench/gpu_exports  # always export with the exporter of this checkout
    "$py" bench/bench_runtime.py --workdir bench/gpu_exports --exports-only
    add_gpu_graphs "$py"
    work=$(mktemp -d)
    "$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$work" "onnxruntime-gpu==$ORT_VERSION"
    mkdir -p "$work/site"
    unzip -q "$work"/onnxruntime_gpu-*.whl -d "$work/site"
    # not needed by the Python binding (it links the core statically) nor by the CUDA provider
    rm -rf "$work"/site/onnxruntime/capi/libonnxruntime.so.* "$work"/site/onnxruntime/capi/libonnxruntime_providers_tensorrt.so \
        "$work"/site/onnxruntime/transformers "$work"/site/onnxruntime/quantization "$work"/site/onnxruntime/tools
    rm -rf "$PARTS" && mkdir -p "$PARTS"
    "$py" -c "import sys, tarfile; tarfile.open(sys.argv[1], 'w:xz', preset=6).add(sys.argv[2], arcname='.')" \
        "$work/ort.tar.xz" "$work/site"
    split -b 55M "$work/ort.tar.xz" "$PARTS/part-"
    rm -rf "$work"
    ls -la "$PARTS"
    local parts=("$PARTS"/part-*) last
    last=${parts[-1]}
    echo "device calls, back to back:"
    for part in "${parts[@]}"; do
        [[ $part == "$last" ]] && break
        echo "  run(command=\"bash bench/gpu_check.sh stage\", carry=[\"$part\"], timeout_s=120)"
    done
    echo "  run(command=\"bash bench/gpu_check.sh run\", carry=[\"$last\", \"bench/gpu_exports\"], timeout_s=540)"
}

add_gpu_graphs() {
    # gpu_step.onnx / gpu_sampler.onnx composed from each export's score.onnx when the exporter did not write them
    PYTHONPATH=$PWD:$PWD/runtime:$PWD/tests "$1" -c "
from pathlib import Path
from host_exports import with_all_graphs
for name in ('small-conv', 'toy-gmm'):
    print(name, sorted(p.name for p in with_all_graphs(Path('bench/gpu_exports') / name).glob('*.onnx')))"
}

stage() {
    mkdir -p "$STAGE"
    cp "$PARTS"/part-* "$STAGE"/
    ls -la "$STAGE"
}

cuda_library_path() {
    # the image's nvidia-* pip packages (cuBLAS, cuDNN, cuRAND, CUDA runtime) hold what the CUDA provider loads
    python3 - <<'EOF'
import glob, os, site
dirs = set()
for root in site.getsitepackages():
    dirs.update(os.path.dirname(path) for path in glob.glob(os.path.join(root, "nvidia", "**", "lib*.so*"), recursive=True))
print(":".join(sorted(dirs)))
EOF
}

run() {
    stage
    rm -rf /tmp/site && mkdir -p /tmp/site
    cat "$STAGE"/part-* > /tmp/ort.tar.xz
    python3 -c "import tarfile; tarfile.open('/tmp/ort.tar.xz').extractall('/tmp/site', filter='data')"
    export PYTHONPATH=/tmp/site:$PWD/runtime:$PWD:$PWD/bench PYTHONUNBUFFERED=1
    LD_LIBRARY_PATH="$(cuda_library_path):${LD_LIBRARY_PATH:-}"
    export LD_LIBRARY_PATH
    nvidia-smi -L || true
    python3 -c "import onnxruntime as o, torch; print(o.__version__, o.__file__, o.get_available_providers(), torch.__version__)"
    mkdir -p "${OUT:=/tmp/out}"
    timeout 480 python3 bench/bench_runtime_gpu.py --exports bench/gpu_exports --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
}

dry_run() {
    [[ -d bench/gpu_exports/small-conv ]] || "$PYTHON" bench/bench_runtime.py --workdir bench/gpu_exports --exports-only
    add_gpu_graphs "$PYTHON"
    PYTHONPATH=$PWD/runtime:$PWD:$PWD/bench "$PYTHON" bench/bench_runtime_gpu.py --exports bench/gpu_exports \
        --out "${OUT:-/tmp/ncsn-gpu-dry-run}" --dry-run-on-cpu --batches 1,4 --repeats 1
}

case "${1:-run}" in
    prepare) prepare ;;
    stage) stage ;;
    run) run ;;
    dry-run) dry_run ;;
    *) echo "usage: bash bench/gpu_check.sh prepare|stage|run|dry-run" >&2; exit 2 ;;
esac
