#!/usr/bin/env bash
# One command on a fresh Debian 12 or 13: install the build's packages, get ONNX Runtime's headers (Debian's
# libonnxruntime-dev: installed on 13; on 12 downloaded from the Debian 13 suite and unpacked here, never
# installed), build the library, the CLI, the examples and the tests against the onnxruntime wheel's
# library, and run the C++ tests.
#   runtime/cpp/build.sh [BUILD_DIR]     (default: runtime/cpp/build)
# The wheel is that of the Python on PATH (activate the venv first); CREPS_CMAKE_ARGS adds cmake options
# (e.g. -DCREPS_WITH_TENSORRT=ON -DTENSORRT_INCLUDE_DIR=... -DCUDA_INCLUDE_DIR=...).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$(mkdir -p "${1:-$here/build}" && cd "${1:-$here/build}" && pwd)"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

packages=(cmake g++ make pkg-config libpng-dev nlohmann-json3-dev libssl-dev libcli11-dev libgtest-dev)
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || packages+=(libonnxruntime-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

ort_include=/usr/include/onnxruntime
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
  # Debian 12 has no libonnxruntime-dev: fetch the Debian 13 package with a private sources list and
  # state, and unpack its headers into the build folder.
  ort="$build/onnxruntime-dev"
  if [ ! -f "$ort/usr/include/onnxruntime/onnxruntime_cxx_api.h" ]; then
    apt_dir="$build/apt-trixie"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/etc"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
      > "$apt_dir/etc/sources.list"
    opts=(-o "Dir::Etc::SourceList=$apt_dir/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o Dir::State::Status=/dev/null
          -o APT::Sandbox::User=root)
    apt-get "${opts[@]}" update -qq
    (cd "$apt_dir" && apt-get "${opts[@]}" download libonnxruntime-dev)
    rm -rf "$ort" && dpkg -x "$apt_dir"/libonnxruntime-dev_*.deb "$ort"
  fi
  ort_include="$ort/usr/include/onnxruntime"
fi

if ! capi="$(python -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')"
then
  echo "build.sh: the python on PATH has no onnxruntime: activate the creps venv" \
       "(pip install -e '.[ort]' in the creps checkout)" >&2
  exit 1
fi
ort_library="$(ls "$capi"/libonnxruntime.so.1.* 2>/dev/null | head -n 1)"
[ -n "$ort_library" ] || { echo "build.sh: no libonnxruntime.so.1.* in $capi" >&2; exit 1; }
echo "ONNX Runtime: headers $ort_include (API $(sed -n 's/^#define ORT_API_VERSION \([0-9]*\).*/\1/p' \
  "$ort_include/onnxruntime_c_api.h")), library $ort_library"

jobs="$(nproc)"
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$build/install" \
  -DONNXRUNTIME_INCLUDE_DIR="$ort_include" -DONNXRUNTIME_LIBRARY="$ort_library" \
  -DPython3_EXECUTABLE="$(command -v python)" ${CREPS_CMAKE_ARGS:-}
cmake --build "$build" -j "$jobs"
cmake --install "$build" > /dev/null
(cd "$build" && ctest --output-on-failure -j "$jobs")
