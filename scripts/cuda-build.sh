#!/usr/bin/env bash
# The CUDA build recipe: a `lqae-eval` built with `--features cuda` on a machine without a GPU
# or a system CUDA toolkit, to be carried to a GPU machine that has the CUDA 13 driver and
# libraries (e.g. in its PyTorch environment) but no Rust toolchain. Run it from anywhere:
#
#   scripts/cuda-build.sh   # -> target-cuda/dist/{lqae-eval, lqae-eval.xz, cuda-libs/}
#
# What it needs here: python3 with pip (the package registry), cargo, gcc, about 2.5 GB under
# $LQAE_CACHE (default ~/.cache/lqae) for the toolkit, and 15-25 minutes on 2 cores cold.
#
# How it works, and why:
# - The toolkit is CUDA 13.0 from the registry's NVIDIA wheels (nvcc, nvvm, crt headers, cccl,
#   the runtime, and cuBLAS/cuRAND/NVRTC to link against), pinned in scripts/cuda-requirements.txt
#   and installed once into $LQAE_CACHE/cuda-13.0 with a completion marker. 13.0 rather than the
#   newest: candle's kernels are shipped as PTX that the GPU's driver compiles at load time, and
#   a driver only loads PTX from its own CUDA version or older, so the oldest CUDA 13 serves
#   every CUDA 13 driver. cudarc is told the version (CUDARC_CUDA_VERSION=13000) instead of
#   parsing `nvcc --version`.
# - The wheels lay the toolkit out as nvidia/cu13/{bin,include,lib} + nvidia/cu13/nvvm; the
#   linker wants unversioned names (libcublas.so), so the script adds those symlinks.
# - There is no libcuda (the driver) here: cudarc links `-lcuda`, so the script generates a
#   stub libcuda.so with the soname libcuda.so.1 that defines every driver entry point cudarc
#   declares. The binary then records NEEDED libcuda.so.1 and binds to the real driver there.
# - CUDA_COMPUTE_CAP=90 (H100/H200); override with CUDA_COMPUTE_CAP=80 etc.
# - The build goes to target-cuda/ (ignored by git), so the CPU build in target/ is untouched.
#
# On the GPU machine run the binary through scripts/lqae-gpu.sh, which unpacks it, finds the
# CUDA 13 libraries it needs (libcudart.so.13, libcublas.so.13, libcublasLt.so.13,
# libcurand.so.10) in the machine's Python packages or /usr/local/cuda, and sets LD_LIBRARY_PATH.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${LQAE_CACHE:-$HOME/.cache/lqae}"
req="$root/scripts/cuda-requirements.txt"
tk="$cache/cuda-13.0"
cap="${CUDA_COMPUTE_CAP:-90}"
target="${LQAE_CUDA_TARGET:-$root/target-cuda}"

# The install is redone when the pinned wheels change (or the layout below: bump "layout-1").
want="$( (cat "$req"; echo layout-1) | sha256sum | cut -d' ' -f1)"
if ! [ -f "$tk/.complete" ] || [ "$(cat "$tk/.complete")" != "$want" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/.cuda-13.0.lock"
  if ! flock -n 9; then
    echo "cuda-build: another install holds $cache/.cuda-13.0.lock; waiting" >&2
    flock 9
  fi
  if ! [ -f "$tk/.complete" ] || [ "$(cat "$tk/.complete")" != "$want" ]; then
    echo "cuda-build: installing the CUDA 13.0 toolkit wheels ($req) into $tk" >&2
    rm -rf "$tk"
    python3 -m pip install -q --no-cache-dir --no-deps --target "$tk/py" -r "$req"
    cu="$tk/py/nvidia/cu13"
    for d in bin include nvvm; do
      [ -e "$cu/$d" ] || { echo "cuda-build: $cu/$d is missing after the install; the wheels' layout changed (see $req)" >&2; exit 1; }
    done
    # The linker's unversioned names.
    mkdir -p "$tk/link"
    for l in cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13 cudart.so.13; do
      [ -f "$cu/lib/lib$l" ] || { echo "cuda-build: $cu/lib/lib$l is missing after the install" >&2; exit 1; }
      ln -sf "$cu/lib/lib$l" "$tk/link/lib${l%%.so.*}.so"
    done
    # The driver stub: every cu* entry point cudarc's bindings name, as an empty function.
    sys="$(cargo metadata --format-version 1 --manifest-path "$root/Cargo.toml" --features cuda 2>/dev/null \
      | python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="cudarc"))')"
    sys="$(dirname "$sys")/src/driver/sys/mod.rs"
    grep -o 'load::<_F>("cu[A-Za-z0-9_]*")' "$sys" | sed 's/.*("\(.*\)")/\1/' | sort -u \
      | awk '{print "void " $1 "(void) {}"}' > "$tk/libcuda-stub.c"
    n=$(wc -l < "$tk/libcuda-stub.c")
    [ "$n" -gt 100 ] || { echo "cuda-build: found only $n driver entry points in $sys" >&2; exit 1; }
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$tk/link/libcuda.so" "$tk/libcuda-stub.c"
    "$cu/bin/nvcc" --version | tail -2 >&2
    echo "$want" > "$tk/.complete"
  fi
  exec 9>&-
fi

cu="$tk/py/nvidia/cu13"
export CUDA_HOME="$cu" CUDA_PATH="$cu" CUDA_ROOT="$cu"
export PATH="$cu/bin:$cu/nvvm/bin:$PATH"
export LIBRARY_PATH="$tk/link${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$tk/link"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP="$cap"
echo "cuda-build: cargo build --release --features cuda (compute capability $cap) into $target" >&2
cargo build --release --features cuda --manifest-path "$root/Cargo.toml" --target-dir "$target" --bin lqae-eval

dist="$target/dist"
mkdir -p "$dist/cuda-libs"
strip -o "$dist/lqae-eval.tmp" "$target/release/lqae-eval"
# The stripped binary is about 64 MiB (candle's CUDA kernels are embedded), the most the device
# tool carries at once: it travels xz-compressed (about 9 MiB) and lqae-gpu.sh unpacks it.
xz -T0 -6 -c "$dist/lqae-eval.tmp" > "$dist/lqae-eval.xz.tmp"
mv "$dist/lqae-eval.xz.tmp" "$dist/lqae-eval.xz"
mv "$dist/lqae-eval.tmp" "$dist/lqae-eval"
# cuRAND is linked but not in PyTorch's CUDA 13 wheels: carried along (about 41 MiB
# compressed), used only where the GPU machine has no libcurand.so.10 of its own.
if ! [ -f "$dist/cuda-libs/libcurand.so.10.xz" ]; then
  xz -T0 -6 -c "$cu/lib/libcurand.so.10" > "$dist/cuda-libs/libcurand.so.10.xz.tmp"
  mv "$dist/cuda-libs/libcurand.so.10.xz.tmp" "$dist/cuda-libs/libcurand.so.10.xz"
fi
echo "cuda-build: $(du -h "$dist/lqae-eval" | cut -f1) $dist/lqae-eval ($(du -h "$dist/lqae-eval.xz" | cut -f1) as .xz); it needs:" >&2
readelf -d "$dist/lqae-eval" | grep NEEDED >&2
echo "cuda-build: carry target-cuda/dist/lqae-eval.xz and target-cuda/dist/cuda-libs/libcurand.so.10.xz ($(du -ch "$dist/lqae-eval.xz" "$dist/cuda-libs"/*.xz | tail -1 | cut -f1)) and run scripts/lqae-gpu.sh there" >&2
echo "$dist/lqae-eval"
