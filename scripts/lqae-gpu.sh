#!/usr/bin/env bash
# Runs the CUDA build of lqae-eval (scripts/cuda-build.sh) on a GPU machine, from the
# repository root, with the arguments given:
#   scripts/lqae-gpu.sh bench --device cuda sgemm search vit-block --out "$OUT/bench"
# It unpacks target-cuda/dist/lqae-eval.xz when the binary itself is not there (it travels
# compressed), finds the CUDA 13 libraries the binary needs (libcudart.so.13, libcublas.so.13,
# libcublasLt.so.13, libcurand.so.10; libcuda.so.1 is the driver's) in the machine's Python
# packages (PyTorch's nvidia-* wheels), a CUDA toolkit under /usr/local, or, for cuRAND, the
# copy the build carries in target-cuda/dist/cuda-libs, or last anywhere under /opt, /usr/local
# and /usr/lib, and puts their folders on LD_LIBRARY_PATH. LQAE_CUDA_LIBS=dir1:dir2 adds
# folders to search first.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dist="$root/target-cuda/dist"
bin="${LQAE_GPU_BIN:-$dist/lqae-eval}"
unxz_to() { # src.xz dst
  if command -v xz >/dev/null 2>&1; then xz -dc "$1" > "$2.tmp"
  else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2.tmp"; fi
  mv "$2.tmp" "$2"
}
if ! [ -x "$bin" ]; then
  [ -f "$bin.xz" ] || { echo "lqae-gpu: neither $bin nor $bin.xz is here; build them with scripts/cuda-build.sh and carry target-cuda/dist" >&2; exit 1; }
  unxz_to "$bin.xz" "$bin"
  chmod +x "$bin"
fi
dirs=()
IFS=: read -r -a extra <<< "${LQAE_CUDA_LIBS:-}"
for d in "${extra[@]}"; do [ -n "$d" ] && dirs+=("$d"); done
for py in python3 python; do
  command -v "$py" >/dev/null 2>&1 || continue
  while IFS= read -r d; do dirs+=("$d"); done < <("$py" - <<'PY' 2>/dev/null || true
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + [p for p in sys.path if p])
for r in sorted(roots):
    for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")) + glob.glob(os.path.join(r, "torch", "lib")):
        print(d)
PY
)
  break
done
for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
  [ -d "$d" ] && dirs+=("$d")
done
find_lib() {
  for d in "${dirs[@]}"; do
    if [ -e "$d/$1" ]; then echo "$d"; return 0; fi
  done
  return 1
}
path=""
missing=()
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10; do
  if ! found="$(find_lib "$lib")"; then
    if [ -f "$dist/cuda-libs/$lib.xz" ]; then
      [ -f "$dist/cuda-libs/$lib" ] || unxz_to "$dist/cuda-libs/$lib.xz" "$dist/cuda-libs/$lib"
      found="$dist/cuda-libs"
    elif found="$( (timeout 20 find /opt /usr/local /usr/lib -name "$lib" -printf '%h\n' 2>/dev/null || true) | head -n 1)" \
      && [ -n "$found" ]; then
      # Last: anywhere under the usual prefixes (a toolkit or environment the searches above miss).
      echo "lqae-gpu: $lib found only by searching: $found" >&2
    else
      missing+=("$lib"); continue
    fi
  fi
  case ":$path:" in *":$found:"*) ;; *) path="${path:+$path:}$found" ;; esac
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "lqae-gpu: not found on this machine: ${missing[*]} (searched: ${dirs[*]:-nothing}); put their folder in LQAE_CUDA_LIBS" >&2
  exit 1
fi
echo "lqae-gpu: LD_LIBRARY_PATH=$path" >&2
export LD_LIBRARY_PATH="$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$bin" "$@"
