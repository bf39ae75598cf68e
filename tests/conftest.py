"""Test layers by directory: tests/unit → ``unit``, tests/integration → ``integration``,
tests/cluster → ``cluster``."""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import PLATFORM, REPO, TOKEN, _sweep_netns, require, sh

# The session's pool and busybox tree are defined here, once: a fixture
# defined (or imported) in two conftest files is two fixtures, and the second
# would create the session's pool again.


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path)
        if "/tests/unit/" in path:
            item.add_marker(pytest.mark.unit)
        elif "/tests/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/tests/cluster/" in path:
            item.add_marker(pytest.mark.cluster)


POOL_DIRS: dict[str, Path] = {}  # session pool -> the directory of its file vdev


def revive_zfs(name: str) -> None:
    """Before a test: the session pool answers, or zfs-fuse is brought back.

    zfs-fuse has been seen to die without a word late in a full run (after the
    50 parallel `rex up`); every later test then failed on "connection refused".
    If no zfs-fuse runs, start one (the machine's only daemon is gone, so this
    starts, never replaces), drop the dead FUSE mounts of this session's pool
    and import it again from its file. The test that saw the daemon die has
    failed already; the warning says it happened."""
    if sh("zpool", "list", "-H", "-o", "name", name, check=False).returncode == 0:
        return
    work = POOL_DIRS[name]
    if sh("pgrep", "-x", "zfs-fuse", check=False).returncode == 0:
        raise AssertionError(f"zfs-fuse runs but the session pool {name} is gone")
    warnings.warn(f"zfs-fuse was not running: started again, pool {name} imported again",
                  stacklevel=1)  # fmt: skip
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(work))]  # fmt: skip
    for mnt in sorted(mounts, reverse=True):
        sh("umount", "-l", mnt, check=False)
    sh(REPO / "scripts" / "setup")  # starts zfs-fuse (removing a stale pid file)
    sh("zpool", "import", "-d", work, "-o", "cachefile=none", name)


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's pool, on a sparse file of REX_TEST_POOL_SIZE bytes (3G unless
    set: a run that moves big volumes between the test bed's hosts needs more)."""
    if PLATFORM == "freebsd":
        require("root", "zfs", "jail", "freebsd-base")
    else:
        require("root", "zfs", "namespaces", "busybox-static", "iproute2")
    work = tmp_path_factory.mktemp("pool")
    img = work / "pool.img"
    sh("truncate", "-s", os.environ.get("REX_TEST_POOL_SIZE", "3G"), img)
    name = TOKEN
    for _ in range(5):  # zfs-fuse may refuse while it is busy elsewhere
        made = sh("zpool", "create", "-o", "cachefile=none", "-m", work / "mnt", name, img,
                  check=False)  # fmt: skip
        # zfs-fuse can report a failure for a pool it did create: the name is
        # this session's own, so a pool by that name is the one just made
        if made.returncode == 0 or sh("zpool", "list", name, check=False).returncode == 0:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"zpool create {name} failed 5 times: {made.stderr or made.stdout}")
    POOL_DIRS[name] = work
    yield name
    _sweep_netns(TOKEN)
    # zfs-fuse can call the pool busy for a while after the last test let go of
    # it (two CI runs left theirs behind, the loop ended all the same): the pool
    # is gone only when a listing that worked no longer names it. A pool given
    # up on stays in the daemon, its file gone, until someone destroys it.
    for _ in range(150):
        done = sh("zpool", "destroy", "-f", name, check=False)
        listed = sh("zpool", "list", "-H", "-o", "name", check=False)
        if listed.returncode == 0 and name not in listed.stdout.split():
            break
        time.sleep(0.2)
    else:
        why = done.stderr.strip() or "it is still listed"
        sys.stderr.write(f"\nwarning: test pool {name} could not be destroyed: {why}; "
                         f"`zpool destroy -f {name}` removes it\n")  # fmt: skip
    img.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if PLATFORM == "freebsd":  # the FreeBSD tests' base is a release's base.txz
        return Path("/nonexistent")
    require("busybox-static")
    root = tmp_path_factory.mktemp("bb") / "root"
    sh(REPO / "examples" / "make-busybox-base.sh", root)
    return root
