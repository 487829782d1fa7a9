"""Record each test's duration from a `make test` log, for the order tests are handed to workers.

    make test PYTEST_ARGS="--durations=0" 2>&1 | tee /tmp/test.log
    .venv/bin/python bench/test_durations.py /tmp/test.log [more logs...]

writes tests/durations.json (seconds per test id, setup and call together,
averaged over the logs: one run's order decides which test pays for a shared
stage, so several runs give steadier costs).
tests/conftest.py hands the xdist workers the costliest work first, so that
the suite does not end with one worker running a long group alone.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "durations.json"
LINE = re.compile(r"^([\d.]+)s (?:setup|call|teardown)\s+(\S+)$")


def main(*logs: str) -> None:
    seconds: dict[str, float] = defaultdict(float)
    for log in logs:
        found = 0
        for line in Path(log).read_text().splitlines():
            if match := LINE.match(line.strip()):
                seconds[match.group(2)] += float(match.group(1)) / len(logs)
                found += 1
        if not found:
            sys.exit(f"{log}: no durations found; run pytest with --durations=0")
    OUT.write_text(json.dumps({test: round(s, 1) for test, s in sorted(seconds.items()) if s >= 0.5}, indent=0) + "\n")
    print(f"{len(seconds)} tests, {sum(seconds.values()):.0f} s in all -> {OUT}")


if __name__ == "__main__":
    main(*sys.argv[1:])
