#!/usr/bin/env bash
# The main job on the embedded default (SQLite in ~/.local/share/alphasearch, a local Ray instance):
# installs what is missing, then runs a `quick` study for a 4096-wide, 32-deep target and writes the
# recommendation, result.json and heatmaps into ./alphasearch-out. Extra arguments go to `study run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/alphasearch study run --preset quick --target-width 4096 --target-depth 32 --out alphasearch-out "$@"
