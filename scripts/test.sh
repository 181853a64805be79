#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what is missing, makes sure PostgreSQL is up,
# then runs pytest. Extra arguments go to pytest (e.g. `bash scripts/test.sh -k analysis`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
# The dashboard's browser tests drive Debian's chromium: install it when missing (needs root and the apt
# mirror). If that fails they skip, saying why.
command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
  || echo "WARNING: could not install chromium; the dashboard browser tests will be skipped" >&2
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
