#!/usr/bin/env bash
# Headless Chromium for the test that renders a reconstruction run's index.html and checks
# the screenshot (tests/recon_page.rs). Debian package `chromium`, installed with apt-get
# (as root, or through sudo). Idempotent: does nothing when `chromium` is already there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "chromium already installed: $(command -v chromium)"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-chromium: run as root (apt-get install chromium)" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=600 -q)
# An empty package list (fresh container) knows no chromium: update once.
if ! apt-cache show chromium >/dev/null 2>&1; then
  $sudo apt-get "${apt_opts[@]}" update
fi
$sudo apt-get "${apt_opts[@]}" install -y --no-install-recommends chromium fonts-dejavu-core
chromium --version
