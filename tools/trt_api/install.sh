#!/usr/bin/env bash
# Install the real TensorRT Python bindings (10.x and 11.x) beside stub runtime libraries, so that the
# API conformance tests (tests/trt/api) can check our code against the real classes on a CPU machine.
#
#   .trt-api/trt10/  tensorrt_bindings 10.x + tensorrt/ shim + lib/libnv*.so.10 stubs
#   .trt-api/trt11/  tensorrt_bindings 11.x + tensorrt/ shim + lib/libnv*.so.11 stubs
#
# Run from the repository root. Idempotent: a version already installed (and its stubs) is kept.
# Use: PYTHONPATH=.trt-api/trt11 LD_LIBRARY_PATH=.trt-api/trt11/lib python -c "import tensorrt"
set -euo pipefail

TRT10_VERSION="${TRT10_VERSION:-10.16.1.11}"
TRT11_VERSION="${TRT11_VERSION:-11.4.0.106}"
PYTHON="${PYTHON:-.venv/bin/python}"
CC="${CC:-gcc}"
ROOT=".trt-api"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

install_one() {
    local major="$1" version="$2"
    local target="$ROOT/trt$major"
    local stamp="$target/.installed-$version"
    if [ ! -f "$stamp" ]; then
        rm -rf "$target"
        "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
            --target "$target" "tensorrt-cu12-bindings==$version"
        touch "$stamp"
    fi
    mkdir -p "$target/tensorrt" "$target/lib"
    cp "$HERE/tensorrt_shim/__init__.py" "$target/tensorrt/__init__.py"
    # One stub library per real one, named and versioned as the bindings' NEEDED entries ask.
    local lib flag
    for spec in nvinfer:STUB_NVINFER nvonnxparser:STUB_NVONNXPARSER nvinfer_plugin:STUB_NVINFER_PLUGIN; do
        lib="lib${spec%%:*}.so.$major"
        flag="${spec##*:}"
        if [ ! -f "$target/lib/$lib" ] || [ "$HERE/stubs.c" -nt "$target/lib/$lib" ]; then
            "$CC" -shared -fPIC -O1 -D"$flag" -Wl,-soname,"$lib" -o "$target/lib/$lib" "$HERE/stubs.c"
        fi
    done
    # Prove it: the real module imports against the stubs and reports its version.
    PYTHONPATH="$target" LD_LIBRARY_PATH="$target/lib" "$PYTHON" -c \
        "import tensorrt as trt; assert trt.__version__ == '$version', trt.__version__; print('tensorrt', trt.__version__, 'API ready in $target')"
}

mkdir -p "$ROOT"
install_one 10 "$TRT10_VERSION"
install_one 11 "$TRT11_VERSION"
