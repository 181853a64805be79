#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, then serves the REST API, the dashboard
# and the study scheduler at http://127.0.0.1:8000 (SQLite in ~/.local/share/alphasearch, a local Ray
# instance started on first use). Extra arguments go to `alphasearch serve` (e.g. --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/alphasearch serve "$@"
