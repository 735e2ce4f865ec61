#!/usr/bin/env bash
# The prepared run for the GPU machine (issues 8 and 32), from the repository root there, after
# scripts/cuda-build.sh here. With the device tool:
#   run(command="bash scripts/gpu-device-run.sh", carry=["target-cuda/dist/lqae-eval.xz"],
#       timeout_s=560)
# (about 11 MiB; the 68 MiB binary itself must not travel uncompressed). The tool carries 64 MiB
# in all and the tracked tree is about 36 MiB, so the compressed cuRAND (41 MiB) stays here: the
# machine's PyTorch environment has its own libcurand.so.10 (the nvidia-curand wheel; where
# that search misses it, lqae-gpu.sh looks under /opt, /usr/local and /usr/lib last).
# Writes machine.txt (the card, driver, CUDA and PyTorch versions); gpu-check/ (`lqae-eval
# gpu-check`: the quantizer, a MiniLM-shaped LM forward and vqvae-small training steps on CUDA
# against the CPU, timed with a device sync); paper-step/ (`lqae-eval step-bench`: the
# lqae-paper training step over a random-weight RoBERTa-base-shaped LM written there by
# `lqae-eval random-lm`, at the largest batch that fits, ours and the PyTorch peer's on the same
# GPU, with peak memory); and bench/ (the kernels that need no downloaded assets, timed on CUDA:
# sgemm, the nearest-code search at MiniLM and RoBERTa shapes, one ViT block forward +
# backward, each beside the PyTorch peer on the same GPU), each part with its log. Each part
# has its own time limit (about 8.5 minutes in all, under the 560 s above), so one that hangs
# costs only its share; `STEP_BATCHES` narrows the step bench's batches on a rerun. Exits 1 when
# a part failed (its log says which), 0 otherwise.
# Where: results/gpu/<UTC time> without the device tool. With it ($OUT set), machine.txt and the
# part logs are written straight into $OUT (they come back even if the call is killed), the
# parts' run folders outside it, packed at the end into $OUT/gpu-run.tar.gz (the tool brings
# back at most 8 files, two folders down); unpack the archive under results/gpu/ to keep it.
set -uo pipefail
cd "$(dirname "$0")/.."
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
if [ -n "${OUT:-}" ]; then
  out="${TMPDIR:-/tmp}/lqae-gpu-run/$stamp"
  logs="$OUT"
else
  out="results/gpu/$stamp"
  logs="$out"
fi
mkdir -p "$out" "$logs"
status=0
pack() { # the run folders and logs into $OUT/gpu-run.tar.gz (device tool)
  local rc=$?
  if [ -n "${OUT:-}" ]; then
    cp "$logs"/*.txt "$logs"/*.log "$out"/ 2>/dev/null
    timeout 60 tar -C "$(dirname "$out")" -czf "$OUT/gpu-run.tar.gz" "$stamp" \
      && echo "packed $stamp into \$OUT/gpu-run.tar.gz"
  fi
  exit "$rc"
}
trap pack EXIT
# One part: its command under a time limit, its output into its log; a failure is remembered.
part() { # log limit command...
  local log="$logs/$1" limit="$2"
  shift 2
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "exit $rc" | tee -a "$log"
  [ "$rc" -eq 0 ] || status=1
}
{
  timeout 15 nvidia-smi
  command -v nvcc >/dev/null && timeout 15 nvcc --version | tail -2
  timeout 45 python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
} > "$logs/machine.txt" 2>&1
cat "$logs/machine.txt"
part gpu-check.log 90 scripts/lqae-gpu.sh gpu-check --device cuda --out "$out/gpu-check"
lm="${TMPDIR:-/tmp}/lqae-roberta-base-random"
part paper-step.log 45 scripts/lqae-gpu.sh random-lm --shape roberta-base --out "$lm"
export LQAE_PEER_PYTHON="${LQAE_PEER_PYTHON:-python3}"
part paper-step.log 200 scripts/lqae-gpu.sh step-bench \
  --config configs/lqae-paper.toml --set "model.lm=$lm" --device cuda --peer \
  --batches "${STEP_BATCHES:-512,384,256,192,128,96,64,32,16}" --steps 3 --budget 8 \
  --out "$out/paper-step"
part bench.log 120 scripts/lqae-gpu.sh bench --device cuda --peer \
  sgemm search vit-block --rounds 3 --budget 1 --out "$out/bench"
exit "$status"
