#!/usr/bin/env bash
# The PyTorch peer's virtual environment, from benches/peer/requirements.txt (pinned), in
# $LQAE_CACHE/peer-venv (default ~/.cache/lqae), outside the repository. Idempotent: a venv
# built from the same requirements file is reused. Prints the venv's python on stdout's last line.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${LQAE_CACHE:-$HOME/.cache/lqae}"
venv="$cache/peer-venv"
req="$root/benches/peer/requirements.txt"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -f "$venv/.requirements.sha256" ] && [ "$(cat "$venv/.requirements.sha256")" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.peer-venv.lock"
if ! flock -n 9; then
  echo "peer-venv: another install holds $cache/.peer-venv.lock; waiting" >&2
  flock 9
fi
if [ -f "$venv/.requirements.sha256" ] && [ "$(cat "$venv/.requirements.sha256")" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi
echo "peer-venv: installing $req into $venv (about 3 GB, PyTorch with its CUDA libraries)" >&2
# Built in place under the lock; the marker written last says it is complete, so an
# interrupted install is removed and redone on the next call.
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --no-cache-dir --upgrade pip >&2
"$venv/bin/python" -m pip install -q --no-cache-dir -r "$req" >&2
"$venv/bin/python" -c 'import torch, numpy, safetensors; print("peer-venv: torch", torch.__version__, "threads", torch.get_num_threads())' >&2
echo "$want" > "$venv/.requirements.sha256"
echo "$venv/bin/python"
