#!/usr/bin/env bash
# Create .venv with the package (editable) and what the main job needs: the export (torch) and CPU runtime extras.
# torch==2.13.0 is pinned first: on these machines it is a local CPU wheel, while an unpinned torch would pull a
# multi-GB CUDA build. Elsewhere pick your torch build first, then install ".[export,cpu]".
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -e ".[export,cpu]"
