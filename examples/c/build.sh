#!/usr/bin/env bash
# Build examples/c/build/ncsn_sample.
#
# The onnxruntime C API header (onnxruntime_c_api.h) comes from Debian's libonnxruntime-dev package, downloaded
# with apt into examples/c/build/ at build time (never installed system-wide, never committed). Debian 13 (trixie)
# carries it; on a release without it (Debian 12, bookworm) apt reads trixie's package list into a private state
# folder (examples/c/build/apt) from the Debian mirror this machine's apt is already configured with.
# The library itself is not linked: ncsn_sample dlopen()s libonnxruntime.so.* (e.g. the one inside the onnxruntime
# Python wheel), so any onnxruntime with C API version >= the header's works.
#
# Exit status: 0 built; 3 the header or gcc is unavailable (the caller may skip); other: a build error.
set -euo pipefail
cd "$(dirname "$0")"
BUILD=build
INCLUDE=$BUILD/include
HEADER=$INCLUDE/onnxruntime_c_api.h
CC=${CC:-gcc}

command -v "$CC" >/dev/null 2>&1 || { echo "ncsn_sample: $CC not found (apt-get install gcc)" >&2; exit 3; }

fetch_header() {
  local debs=$BUILD/deb
  mkdir -p "$debs" "$INCLUDE"
  rm -f "$debs"/libonnxruntime-dev_*.deb
  # 1. this machine's own apt sources (Debian 13+ has the package)
  if (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root libonnxruntime-dev) >/dev/null 2>&1; then
    :
  else
    # 2. trixie's package list in a private apt state, from the mirror configured on this machine
    local mirror=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
      mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
      mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
    fi
    [ -n "$mirror" ] || { echo "ncsn_sample: no Debian mirror configured for apt" >&2; return 1; }
    local state=$BUILD/apt
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/sources"
    printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" > "$state/sources/trixie.sources"
    local opts=(-q -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$PWD/$state/sources"
                -o "Dir::State::Lists=$PWD/$state/lists" -o "Dir::Cache=$PWD/$state/cache"
                -o "Dir::State::status=/dev/null" -o "APT::Sandbox::User=root")
    apt-get "${opts[@]}" update >/dev/null 2>&1 || { echo "ncsn_sample: apt-get update of trixie's package list failed" >&2; return 1; }
    (cd "$debs" && apt-get "${opts[@]}" download libonnxruntime-dev) >/dev/null 2>&1 \
      || { echo "ncsn_sample: apt-get download libonnxruntime-dev failed" >&2; return 1; }
  fi
  local deb
  deb=$(ls "$debs"/libonnxruntime-dev_*.deb | head -n 1)
  dpkg-deb -x "$deb" "$debs/root"
  cp "$debs"/root/usr/include/onnxruntime/*.h "$INCLUDE"/
  echo "ncsn_sample: header from $(basename "$deb")" >&2
}

if [ ! -f "$HEADER" ]; then
  fetch_header || { echo "ncsn_sample: onnxruntime_c_api.h unavailable (Debian's libonnxruntime-dev could not be downloaded)" >&2; exit 3; }
fi
"$CC" -O2 -std=c11 -Wall -Wextra -I"$INCLUDE" ncsn_sample.c json.c verify.c -o "$BUILD/ncsn_sample" -ldl -lm
echo "built examples/c/$BUILD/ncsn_sample"
