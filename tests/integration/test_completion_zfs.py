"""``rex base rm <TAB>`` lists the bases from real ZFS (zfs-fuse here)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import sh

REX = Path(sys.executable).parent / "rex"


@pytest.fixture
def dataset(pool: str) -> Iterator[str]:
    from tests.conftest import revive_zfs

    revive_zfs(pool)
    name = f"{pool}/c{uuid.uuid4().hex[:6]}"
    for child in ("bases/alpha", "bases/beta", "bases/_recv-0a1b", "images/x", "jails/web"):
        sh("zfs", "create", "-p", f"{name}/{child}")
    yield name
    for _ in range(30):
        if sh("zfs", "destroy", "-r", name, check=False).returncode == 0:
            break


def test_base_names_come_from_the_bases_dataset(dataset: str, tmp_path: Path) -> None:
    env = {**os.environ, "REX_ROOT": str(tmp_path), "REX_DATASET": dataset,
           "_REX_COMPLETE": "bash_complete"}  # fmt: skip
    for line, want in [("rex base rm ", ["alpha", "beta"]), ("rex base publish b", ["beta"])]:
        words = line.split(" ")
        done = subprocess.run([REX], env={**env, "COMP_WORDS": line,
                              "COMP_CWORD": str(len(words) - 1)},
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert (done.returncode, done.stderr) == (0, "")
        assert [ln.removeprefix("plain,") for ln in done.stdout.split()] == want
