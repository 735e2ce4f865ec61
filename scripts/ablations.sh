#!/usr/bin/env bash
# Short training runs of recipe changes, each scored the same way (reconstruction, linear probe,
# and the no-LLM nearest support of suites/nearest-fashionmnist.toml); prints the table of
# docs/ablations.md. A rerun resumes: finished training and scores are kept.
# Usage: scripts/ablations.sh OUT_DIR STEPS NAME:CONFIG:SETTINGS ...   (SETTINGS: `;`-separated
# key=value, or `-`). Two runs at a time, one thread each (this machine has two cores).
set -euo pipefail
out=$1; steps=$2; shift 2
bin=${LQAE_BIN:-target/release/lqae-eval}
mkdir -p "$out"
run_one() {
  local name=$1 cfg=$2 sets=$3 args=()
  if [ "$sets" != "-" ]; then IFS=';' read -ra kv <<< "$sets"; for s in "${kv[@]}"; do args+=(--set "$s"); done; fi
  if [ ! -f "$out/$name/trained" ]; then
    rm -rf "$out/$name"
    RAYON_NUM_THREADS=1 "$bin" train --config "$cfg" --set train.steps="$steps" --set train.log_every=$((steps / 6)) \
      --set train.ckpt_every="$steps" --set train.warmup_steps=$((steps / 20)) "${args[@]}" --out "$out/$name" > "$out/$name.train.log" 2>&1
    touch "$out/$name/trained"
  fi
  # Each score once (a rerun fills in what is missing, e.g. a yardstick added later).
  [ -d "$out/res-$name/recon-fashionmnist" ] ||
    RAYON_NUM_THREADS=1 "$bin" --suite recon-fashionmnist --set "models=[\"$out/$name\"]" --set data.test_limit=300 \
      --set recon.lpips=none --results "$out/res-$name" > "$out/$name.recon.log" 2>&1
  if grep -q 'kind = "lqae"' "$cfg"; then
    [ -d "$out/res-$name/linear-fashionmnist" ] ||
      RAYON_NUM_THREADS=1 "$bin" --suite linear-fashionmnist --set model="$out/$name" --set data.train_limit=1000 \
        --set data.test_limit=500 --set 'baselines=[]' --results "$out/res-$name" > "$out/$name.probe.log" 2>&1
    # The words' class signal with no LLM: the few-shot episodes' nearest support (1,000 per cell).
    [ -d "$out/res-$name/nearest-fashionmnist" ] ||
      RAYON_NUM_THREADS=1 "$bin" --suite nearest-fashionmnist --set model="$out/$name" --set 'baselines=[]' \
        --results "$out/res-$name" > "$out/$name.nearest.log" 2>&1
  fi
}
pids=()
for spec in "$@"; do
  IFS=':' read -r name cfg sets <<< "$spec"
  run_one "$name" "$cfg" "$sets" &
  pids+=($!)
  if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}" || echo "a run failed: see $out/*.log" >&2; pids=("${pids[@]:1}"); fi
done
# A failed run (its log says why) leaves the others running and its row out of the table.
for p in "${pids[@]}"; do wait "$p" || echo "a run failed: see $out/*.log" >&2; done
# The table; the plot beside it when matplotlib is at hand (scripts/plot-requirements.txt).
py=${LQAE_CACHE:-$HOME/.cache/lqae}/plot-venv/bin/python
if [ ! -x "$py" ]; then python3 -m venv "${py%/bin/python}" && "${py%/python}/pip" install -q -r "$(dirname "$0")/plot-requirements.txt"; fi
"$py" "$(dirname "$0")/ablations_table.py" --plot "$out/ablations.png" "$out" "$steps" "$@"
