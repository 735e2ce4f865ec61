#!/usr/bin/env bash
# The prepared run for the GPU machine (issue 8), from the repository root there, after
# scripts/cuda-build.sh here. With the device tool:
#   run(command="bash scripts/gpu-device-run.sh", carry=["target-cuda/dist/lqae-eval.xz",
#       "target-cuda/dist/cuda-libs/libcurand.so.10.xz"], timeout_s=480)
# (about 51 MiB; the 64 MiB binary itself must not travel uncompressed).
# Writes under $OUT (the device tool's folder that comes back; results/gpu/<date> otherwise):
# machine.txt (the card, driver, CUDA and PyTorch versions); gpu-check/ (`lqae-eval gpu-check`:
# the quantizer, a MiniLM-shaped LM forward and vqvae-small training steps on CUDA against the
# CPU, timed with a device sync); paper-step/ (`lqae-eval step-bench`: the lqae-paper training
# step over a random-weight RoBERTa-base-shaped LM written there by `lqae-eval random-lm`, at
# the largest batch that fits, ours and the PyTorch peer's on the same GPU, with peak memory);
# and bench/ (the kernels that need no downloaded assets, timed on CUDA: sgemm, the
# nearest-code search at MiniLM and RoBERTa shapes, one ViT block forward + backward).
# Each part has its own time limit (about 6.5 minutes in all), so one that hangs costs only
# its share; `STEP_BATCHES` narrows the step bench's batches on a rerun.
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
timeout 120 scripts/lqae-gpu.sh gpu-check --device cuda --out "$out/gpu-check" 2>&1 | tee "$out/gpu-check.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$out/gpu-check.log"
lm="${TMPDIR:-/tmp}/lqae-roberta-base-random"
timeout 60 scripts/lqae-gpu.sh random-lm --shape roberta-base --out "$lm" 2>&1 | tee "$out/paper-step.log"
LQAE_PEER_PYTHON="${LQAE_PEER_PYTHON:-python3}" timeout 200 scripts/lqae-gpu.sh step-bench \
  --config configs/lqae-paper.toml --set "model.lm=$lm" --device cuda --peer \
  --batches "${STEP_BATCHES:-512,384,256,192,128,96,64,32,16}" --steps 3 --budget 8 \
  --out "$out/paper-step" 2>&1 | tee -a "$out/paper-step.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$out/paper-step.log"
timeout 100 scripts/lqae-gpu.sh bench --device cuda sgemm search vit-block --rounds 3 --budget 1 \
  --out "$out/bench" 2>&1 | tee "$out/bench.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$out/bench.log"
