#!/usr/bin/env bash
# Tools for the non-Python hosts (Node, browser, C; issue 6), called by scripts/setup-dev.sh.
#   1. npm packages from the committed package-lock.json (onnxruntime-node/-web, playwright-core): required when
#      npm exists (its failure fails the setup); without npm the Node and browser tests skip with a reason.
#   2. Debian's Chromium for the browser test, installed with apt only when that is quick (as root, <= 120 s;
#      about 20 s measured here); otherwise the browser test skips with a reason.
#   3. The C example (examples/c/build.sh: onnxruntime_c_api.h from Debian's libonnxruntime-dev, then gcc);
#      when the header cannot be had the C test skips with a reason.
# NCSN_SKIP_HOSTS=1 skips all three; NCSN_SKIP_SYSTEM_PACKAGES=1 skips the apt step only.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${NCSN_SKIP_HOSTS:-0}" = 1 ]; then
  echo "setup-hosts: skipped (NCSN_SKIP_HOSTS=1)"
  exit 0
fi

if command -v npm >/dev/null 2>&1; then
  # onnxruntime-node's post-install would download CUDA binaries (no network for that); its CPU binary is bundled.
  ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error
else
  echo "setup-hosts: npm not found: the Node and browser tests will skip"
fi

if [ -x /usr/bin/chromium ]; then
  :
elif [ "${NCSN_SKIP_SYSTEM_PACKAGES:-0}" = 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-hosts: /usr/bin/chromium missing and apt is not usable here: the browser test will skip"
else
  start=$SECONDS
  if timeout 120 bash -c 'apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null'; then
    echo "setup-hosts: installed chromium in $((SECONDS - start)) s"
  else
    echo "setup-hosts: chromium could not be installed within 120 s: the browser test will skip"
  fi
fi

if ! bash examples/c/build.sh; then
  echo "setup-hosts: examples/c not built: the C test will skip or report why"
fi
