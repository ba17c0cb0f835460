#!/bin/sh
# Compile the TensorRT backend against one set of public headers, without linking (the TensorRT and CUDA
# libraries need not be here): catches a call that a TensorRT release lacks, or deprecates, before a user
# on that release does. Run it once per release line (10.3 for JetPack 6, and 11.x):
#   runtime/cpp/scripts/check_trt_headers.sh TRT_INCLUDE_DIR CUDA_INCLUDE_DIR [BUILD_DIR]
# TRT_INCLUDE_DIR: NVIDIA/TensorRT's include/ at that release; CUDA_INCLUDE_DIR: the include/ of the
# nvidia-cuda-runtime-cu12 wheel. Writes BUILD_DIR/trt_backend.o (default: a temporary folder).
set -eu
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 TRT_INCLUDE_DIR CUDA_INCLUDE_DIR [BUILD_DIR]" >&2
    exit 2
fi
trt=$1 cuda=$2
for header in "$trt/NvInferRuntime.h" "$trt/NvInferVersion.h" "$cuda/cuda_runtime_api.h"; do
    [ -f "$header" ] || { echo "$0: no $header" >&2; exit 2; }
done
here=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -eq 3 ]; then build=$3; mkdir -p "$build"; else build=$(mktemp -d); trap 'rm -rf "$build"' EXIT; fi
version=$(awk '/^#define (NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? [0-9]/ {printf "%s%s", sep, $3; sep="."}' \
    "$trt/NvInferVersion.h")
# The TensorRT and CUDA headers are -isystem (their own warnings are theirs); a deprecated member that
# trt_backend.cpp calls still warns at the call, and -Werror fails the check.
${CXX:-g++} -std=c++17 -Wall -Wextra -Wpedantic -Werror -DCREPS_WITH_TENSORRT \
    -I"$here/src" -I"$here/include" -isystem "$trt" -isystem "$cuda" \
    -c "$here/src/trt_backend.cpp" -o "$build/trt_backend.o"
echo "trt_backend.cpp compiles against TensorRT $version headers ($trt) and CUDA headers ($cuda)"
