"""Run one study on a Ray cluster in a process of its own, so a test can kill its driver.

python -m tests.workers.run_study SPEC_JSON STUDY_ID STORAGE_URL RAY_ADDRESS
"""

from __future__ import annotations

import json
import sys

from alphasearch.search import StudyRunner
from alphasearch.spec import StudySpec
from workers.ray_executor import RayExecutor


def main(spec_json: str, study_id: str, storage_url: str, address: str) -> None:
    spec = StudySpec.from_dict(json.loads(spec_json))
    with RayExecutor(address=address) as executor:
        print(StudyRunner(spec, study_id, storage_url, executor).run(), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
