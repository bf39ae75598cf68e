"""Same-name races, 100 rounds of each pair (issue: faults, item 3).

    sudo .venv/bin/python bench/bench_races.py [--rounds 100]

Runs tests/integration/test_faults_races.py under the machine-wide test lock
with REX_RACE_ROUNDS rounds, then prints, per pair, how each round ended and
how long the rounds took. Every round is checked by the test (exit codes, end
state, leftovers); a failed round fails the run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "races.jsonl"
        env = {"REX_RACE_ROUNDS": str(args.rounds), "REX_RACE_REPORT": str(report)}
        Path("/run/rexcarcer").mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["flock", "-o", "/run/rexcarcer/tests.lock", sys.executable, "-m", "pytest", "-q",
             "tests/integration/test_faults_races.py"],
            cwd=REPO, env={**_base_env(), **env}, check=False,
        )  # fmt: skip
        rows = [json.loads(x) for x in report.read_text().splitlines()] if report.exists() else []
    last = {row["pair"]: row for row in rows}  # a line per round: the last one counts
    for row in last.values():
        per = row["seconds"] / max(1, row["rounds"])
        print(f"{row['pair']:16} rounds {row['rounds']:4}  {row['seconds']:7.1f} s "
              f"({per:.2f} s/round)  {row['outcomes']}")  # fmt: skip
    print("all rounds passed" if done.returncode == 0 else f"pytest exited {done.returncode}")
    return done.returncode


def _base_env() -> dict[str, str]:
    import os

    return dict(os.environ)


if __name__ == "__main__":
    raise SystemExit(main())
