#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what is missing, makes sure PostgreSQL is up,
# then runs pytest. Extra arguments go to pytest (e.g. `bash scripts/test.sh -k analysis`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
