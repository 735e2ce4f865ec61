#!/usr/bin/env bash
# The prepared run for the GPU machine (issue 8), from the repository root there, after
# scripts/cuda-build.sh here. With the device tool:
#   run(command="bash scripts/gpu-device-run.sh", carry=["target-cuda/dist/lqae-eval.xz",
#       "target-cuda/dist/cuda-libs/libcurand.so.10.xz"], timeout_s=420)
# (about 51 MiB; the 64 MiB binary itself must not travel uncompressed).
# Writes under $OUT (the device tool's folder that comes back; results/gpu/<date> otherwise):
# machine.txt (the card, driver, CUDA and PyTorch versions); gpu-check/ (`lqae-eval gpu-check`:
# the quantizer, a MiniLM-shaped LM forward and vqvae-small training steps on CUDA against the
# CPU, timed with a device sync); and bench/ (the kernels that need no downloaded assets, timed
# on CUDA: sgemm, the nearest-code search at MiniLM and RoBERTa shapes, one ViT block forward
# + backward).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-results/gpu/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
{
  nvidia-smi
  command -v nvcc >/dev/null && nvcc --version | tail -2
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
timeout 200 scripts/lqae-gpu.sh gpu-check --device cuda --out "$out/gpu-check" 2>&1 | tee "$out/gpu-check.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$out/gpu-check.log"
timeout 200 scripts/lqae-gpu.sh bench --device cuda sgemm search vit-block --rounds 3 --budget 1 \
  --out "$out/bench" 2>&1 | tee "$out/bench.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$out/bench.log"
