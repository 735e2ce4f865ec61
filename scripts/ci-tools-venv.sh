#!/usr/bin/env bash
# The CI-report checkers' virtual environment (junitparser, check-jsonschema), from
# scripts/ci-tools-requirements.txt (pinned), in $LQAE_CACHE/ci-tools-venv (default
# ~/.cache/lqae), outside the repository. Idempotent: a venv built from the same requirements
# file is reused. Prints the venv's bin folder on stdout's last line.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${LQAE_CACHE:-$HOME/.cache/lqae}"
venv="$cache/ci-tools-venv"
req="$root/scripts/ci-tools-requirements.txt"
want="$(sha256sum "$req" | cut -d' ' -f1)"
ready() { [ -f "$venv/.requirements.sha256" ] && [ "$(cat "$venv/.requirements.sha256")" = "$want" ]; }
if ready; then
  echo "$venv/bin"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.ci-tools-venv.lock"
flock 9
if ready; then
  echo "$venv/bin"
  exit 0
fi
echo "ci-tools-venv: installing $req into $venv" >&2
# Built in place under the lock; the marker written last says it is complete.
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --no-cache-dir -r "$req" >&2
"$venv/bin/python" -c 'import junitparser; print("ci-tools-venv: junitparser", junitparser.version)' >&2
echo "$want" > "$venv/.requirements.sha256"
echo "$venv/bin"
