"""Test layers by directory: tests/unit → ``unit``, tests/integration → ``integration``,
tests/cluster → ``cluster``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, TOKEN, _sweep_netns, require, sh

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


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require("root", "zfs", "namespaces", "busybox-static", "iproute2")
    work = tmp_path_factory.mktemp("pool")
    img = work / "pool.img"
    sh("truncate", "-s", "3G", img)
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
    yield name
    _sweep_netns(TOKEN)
    for _ in range(30):
        if sh("zpool", "destroy", "-f", name, check=False).returncode == 0:
            break
        time.sleep(0.2)
    img.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("busybox-static")
    root = tmp_path_factory.mktemp("bb") / "root"
    sh(REPO / "examples" / "make-busybox-base.sh", root)
    return root
