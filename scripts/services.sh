#!/usr/bin/env bash
# Make sure the local services the tests talk to are up: PostgreSQL at 127.0.0.1:5432.
set -uo pipefail
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "PostgreSQL is up at 127.0.0.1:5432"
else
  echo "WARNING: PostgreSQL is not reachable at 127.0.0.1:5432; the PostgreSQL tests will be skipped" >&2
fi
exit 0
