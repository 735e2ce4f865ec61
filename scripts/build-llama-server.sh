#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the llama.cpp source vendored in the PyPI sdist
# llama-cpp-python==0.3.36, with cmake and ninja from PyPI, into <cache>/llama-server/.
#
#   bash scripts/build-llama-server.sh <cache-dir>
#
# `lqae-eval` runs this very script (it is compiled into the binary) when a few-shot suite
# names no LLM URL and the server is not built yet; `lqae-eval fetch llama-server` runs it
# on its own. About 13 minutes on 2 cores, once; the sdist is verified by sha256 first.
set -euo pipefail
CACHE=${1:?usage: build-llama-server.sh <cache-dir>}
PY=${LQAE_PYTHON:-python3}
VERSION=0.3.36
SDIST=llama_cpp_python-$VERSION.tar.gz
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
DL=$CACHE/downloads
OUT=$CACHE/llama-server
TOOLS=$CACHE/build-tools
JOBS=${LQAE_BUILD_JOBS:-$(nproc)}
# Bump when the build options change: lqae-eval rebuilds a server whose SOURCE differs.
BUILD=2
# GGML_NATIVE=OFF keeps the binary portable; without SIMD flags it would be scalar SSE and
# ~10x slower, so x86-64 builds target AVX2/FMA/F16C (every x86 machine of this project).
CPU_FLAGS=""
if [ "$(uname -m)" = x86_64 ]; then
  CPU_FLAGS="-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
fi
mkdir -p "$DL"

verify() { echo "$SDIST_SHA256  $DL/$SDIST" | sha256sum -c --status; }
if [ ! -f "$DL/$SDIST" ] || ! verify; then
  echo "build-llama-server: downloading the llama-cpp-python==$VERSION sdist with pip" >&2
  "$PY" -m pip download --no-deps --no-binary llama-cpp-python --disable-pip-version-check -q \
    -d "$DL" "llama-cpp-python==$VERSION"
fi
if ! verify; then
  echo "build-llama-server: $DL/$SDIST does not have sha256 $SDIST_SHA256; removed it, run again" >&2
  rm -f "$DL/$SDIST"
  exit 1
fi

if [ ! -x "$TOOLS/bin/cmake" ] || [ ! -x "$TOOLS/bin/ninja" ]; then
  echo "build-llama-server: installing cmake and ninja from PyPI into $TOOLS" >&2
  rm -rf "$TOOLS"
  "$PY" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install --disable-pip-version-check -q cmake==4.4.5 ninja==1.13.2
fi

WORK=$(mktemp -d "$CACHE/.llama-build-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
tar -xzf "$DL/$SDIST" -C "$WORK" "llama_cpp_python-$VERSION/vendor/llama.cpp"
SRC=$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp
echo "build-llama-server: configuring llama.cpp (log: $WORK/build.log)" >&2
PATH=$TOOLS/bin:$PATH
{
  cmake -S "$SRC" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF $CPU_FLAGS
  echo "build-llama-server: compiling with $JOBS jobs" >&2
  cmake --build "$WORK/build" --target llama-server -j "$JOBS"
} >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; exit 1; }
"$WORK/build/bin/llama-server" --version >/dev/null 2>&1 || {
  echo "build-llama-server: the built llama-server does not run" >&2; exit 1; }

# Into place atomically: a half-built server is never seen.
STAGE=$(mktemp -d "$CACHE/.llama-server-XXXXXX")
install -m 755 "$WORK/build/bin/llama-server" "$STAGE/llama-server"
echo "llama-cpp-python==$VERSION build $BUILD sdist sha256 $SDIST_SHA256 flags ${CPU_FLAGS:-none}" >"$STAGE/SOURCE"
rm -rf "$OUT"
mv "$STAGE" "$OUT"
echo "build-llama-server: $OUT/llama-server ready" >&2
