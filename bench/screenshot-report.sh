#!/usr/bin/env bash
# Render a run's report.html in headless Chromium and save a PNG beside it, to look at
# how the report reads (not run in CI).
# Usage: bench/screenshot-report.sh RUN_DIR [WIDTH] [HEIGHT]
set -euo pipefail
dir=${1:?usage: bench/screenshot-report.sh RUN_DIR [WIDTH] [HEIGHT]}
width=${2:-1400}
height=${3:-2200}
html=$(realpath "$dir/report.html")
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z $browser ]]; then
  echo "no Chromium found (Debian: apt-get install chromium)" >&2
  exit 1
fi
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size="$width,$height" --screenshot="$dir/report.png" "file://$html" 2>/dev/null
echo "wrote $dir/report.png"
