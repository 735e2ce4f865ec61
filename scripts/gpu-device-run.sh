#!/usr/bin/env bash
# The prepared run for the GPU machine (issues 8 and 32), from the repository root there, after
# scripts/cuda-build.sh here. With the device tool:
#   run(command="bash scripts/gpu-device-run.sh", carry=["target-cuda/dist/lqae-eval.xz"],
#       timeout_s=500)
# (about 11 MiB; the 68 MiB binary itself must not travel uncompressed). The tool carries 64 MiB
# in all and the tracked tree is about 36 MiB, so the compressed cuRAND (41 MiB) stays here: the
# machine's PyTorch environment has its own libcurand.so.10 (the nvidia-curand wheel).
# Writes machine.txt (the card, driver, CUDA and PyTorch versions); gpu-check/ (`lqae-eval
# gpu-check`: the quantizer, a MiniLM-shaped LM forward and vqvae-small training steps on CUDA
# against the CPU, timed with a device sync); paper-step/ (`lqae-eval step-bench`: the
# lqae-paper training step over a random-weight RoBERTa-base-shaped LM written there by
# `lqae-eval random-lm`, at the largest batch that fits, ours and the PyTorch peer's on the same
# GPU, with peak memory); and bench/ (the kernels that need no downloaded assets, timed on CUDA:
# sgemm, the nearest-code search at MiniLM and RoBERTa shapes, one ViT block forward +
# backward, each beside the PyTorch peer on the same GPU), each part with its log. Each part has its own time limit (about 7.5 minutes in all),
# so one that hangs costs only its share; `STEP_BATCHES` narrows the step bench's batches on a
# rerun.
# Where: results/gpu/<UTC time> without the device tool. With it ($OUT set), the run folder is
# written outside $OUT and packed into $OUT/gpu-run.tar.gz (the tool brings back at most 8 files,
# two folders down), with machine.txt and the part logs beside it to read at once; unpack the
# archive under results/gpu/ to keep it.
set -uo pipefail
cd "$(dirname "$0")/.."
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
if [ -n "${OUT:-}" ]; then out="${TMPDIR:-/tmp}/lqae-gpu-run/$stamp"; else out="results/gpu/$stamp"; fi
mkdir -p "$out"
pack() { # the run folder into $OUT (device tool) once every part has ended
  [ -n "${OUT:-}" ] || return 0
  cp "$out"/*.txt "$out"/*.log "$OUT"/ 2>/dev/null
  tar -C "$(dirname "$out")" -czf "$OUT/gpu-run.tar.gz" "$stamp" && echo "packed $stamp into \$OUT/gpu-run.tar.gz"
}
trap pack EXIT
{
  nvidia-smi
  command -v nvcc >/dev/null && nvcc --version | tail -2
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
} > "$out/machine.txt" 2>&1
# cuRAND does not travel (above): in case lqae-gpu.sh's search of the Python packages
# would miss it, the folders that hold it are searched first.
if [ -z "${LQAE_CUDA_LIBS:-}" ]; then
  LQAE_CUDA_LIBS="$(timeout 20 find /opt /usr/local /usr/lib -name libcurand.so.10 -printf '%h\n' 2>/dev/null | head -n 3 | paste -sd:)"
  export LQAE_CUDA_LIBS
fi
echo "libcurand.so.10 in: ${LQAE_CUDA_LIBS:-nowhere found}" >> "$out/machine.txt"
cat "$out/machine.txt"
timeout -k 5 90 scripts/lqae-gpu.sh gpu-check --device cuda --out "$out/gpu-check" 2>&1 | tee "$out/gpu-check.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$out/gpu-check.log"
lm="${TMPDIR:-/tmp}/lqae-roberta-base-random"
timeout -k 5 45 scripts/lqae-gpu.sh random-lm --shape roberta-base --out "$lm" 2>&1 | tee "$out/paper-step.log"
LQAE_PEER_PYTHON="${LQAE_PEER_PYTHON:-python3}" timeout -k 5 200 scripts/lqae-gpu.sh step-bench \
  --config configs/lqae-paper.toml --set "model.lm=$lm" --device cuda --peer \
  --batches "${STEP_BATCHES:-512,384,256,192,128,96,64,32,16}" --steps 3 --budget 8 \
  --out "$out/paper-step" 2>&1 | tee -a "$out/paper-step.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$out/paper-step.log"
LQAE_PEER_PYTHON="${LQAE_PEER_PYTHON:-python3}" timeout -k 5 120 scripts/lqae-gpu.sh bench --device cuda --peer \
  sgemm search vit-block --rounds 3 --budget 1 \
  --out "$out/bench" 2>&1 | tee "$out/bench.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$out/bench.log"
