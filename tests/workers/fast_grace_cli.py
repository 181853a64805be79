"""The real `alphasearch` command (service.cli), with a 3 s heartbeat grace period instead of 20 s.

A test that kills the study driver then waits 3 s, not 20 s, for the dead driver's trial to go stale
and be re-queued. Nothing else differs from `python -m service.cli`.
"""

from __future__ import annotations

import alphasearch.search as search

search.HEARTBEAT_INTERVAL_S = 1
search.GRACE_PERIOD_S = 3

if __name__ == "__main__":
    from service.cli import app

    app()
