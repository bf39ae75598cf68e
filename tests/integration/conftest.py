"""Integration harness: real zfs-fuse, real namespaces, the real ``rex`` CLI.

Each test gets its own state directory, its own dataset under a session pool
(on a file, ``cachefile=none``) and its own network namespace in which ``rex``
runs, so the bridge and jail interfaces it creates never touch the machine's
network. Every resource name carries the session token; teardown destroys what
the test made, and a session sweep removes anything a crashed test left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import pytest

from tests.capability import STRICT, missing

REPO = Path(__file__).resolve().parents[2]
TOKEN = "rext" + uuid.uuid4().hex[:6]
SUBNET = "203.0.113.0/24"
T = TypeVar("T")


def sh(*argv: str | Path, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    done: subprocess.CompletedProcess[str] = subprocess.run(
        [str(a) for a in argv],
        check=False,
        capture_output=True,
        text=True,
        **kw,  # type: ignore[call-overload]
    )
    if check and done.returncode != 0:  # say why, not only that
        raise AssertionError(
            f"{' '.join(map(str, argv))} exited {done.returncode}: {done.stderr or done.stdout}"
        )
    return done


@lru_cache
def capabilities() -> dict[str, bool]:
    def ok(*argv: str) -> bool:
        try:
            return sh(*argv, check=False).returncode == 0
        except FileNotFoundError:
            return False

    return {
        "root": os.geteuid() == 0,
        "zfs": ok("zpool", "list"),
        "namespaces": ok("unshare", "--net", "--pid", "--fork", "true"),
        "busybox-static": Path("/bin/busybox").exists(),
        "iproute2": ok("ip", "-V"),
        "nftables": ok("nft", "--version"),
    }


def pytest_report_header(config: pytest.Config) -> list[str]:
    caps = capabilities()
    on = ", ".join(k for k, v in caps.items() if v) or "none"
    off = ", ".join(k for k, v in caps.items() if not v) or "none"
    return [f"rex integration: enabled: {on}; missing: {off}; strict={STRICT}; token={TOKEN}"]


def require(*names: str) -> None:
    absent = [n for n in names if not capabilities().get(n)]
    if absent:
        missing(", ".join(absent))


def _sweep_netns(prefix: str) -> None:
    for ns in sh("ip", "netns", "list", check=False).stdout.split("\n"):
        name = ns.split(" ")[0]
        if name and prefix in name:
            sh("ip", "netns", "del", name, check=False)


@dataclass
class Rex:
    """The ``rex`` CLI run inside this test's network namespace."""

    root: Path
    dataset: str
    netns: str
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, *args: str | Path) -> list[str]:
        return [
            "nsenter", f"--net=/run/netns/{self.netns}", "--",
            sys.executable, "-m", "rexcarcer", *[str(a) for a in args],
        ]  # fmt: skip

    def run(
        self, *args: str | Path, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args), capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"rex {' '.join(map(str, args))} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def popen(self, *args: str | Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def json(self, *args: str) -> object:
        return json.loads(self.run("-o", "json", *args).stdout)

    def jails(self) -> dict[str, dict[str, object]]:
        data = self.json("ls")
        assert isinstance(data, list)
        return {j["name"]: j for j in data}

    def ip_of(self, name: str) -> str:
        ips = self.jails()[name]["ips"]
        assert isinstance(ips, list)
        return str(ips[0]).split("/")[0]

    def in_netns(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return sh("nsenter", f"--net=/run/netns/{self.netns}", "--", *argv, check=False)

    @property
    def token(self) -> str:
        import hashlib

        return hashlib.sha256(str(self.root).encode()).hexdigest()[:6]

    def leftovers(self) -> dict[str, list[str]]:
        """What rex would have leaked: jail netns, datasets, mounts, processes."""
        netns = [n.split(" ")[0] for n in sh("ip", "netns", "list").stdout.splitlines()
                 if n.startswith(f"rex-{self.token}-")]  # fmt: skip
        ds = sh("zfs", "list", "-H", "-o", "name", "-r", f"{self.dataset}/jails", check=False)
        datasets = [d for d in ds.stdout.split() if d != f"{self.dataset}/jails"]
        mounts = [m for m in Path("/proc/mounts").read_text().splitlines()
                  if f"{self.dataset}/jails/" in m.split(" ")[0]]  # fmt: skip
        procs = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
                 and _root_of(p).startswith(f"{self.mnt}/jails/")]  # fmt: skip
        return {"netns": netns, "datasets": datasets, "mounts": mounts, "processes": procs}

    @property
    def mnt(self) -> str:
        return sh("zfs", "get", "-H", "-o", "value", "mountpoint", self.dataset).stdout.strip()


@pytest.fixture
def rex(
    pool: str, busybox_root: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Rex]:
    from tests.conftest import revive_zfs

    revive_zfs(pool)
    n = uuid.uuid4().hex[:6]
    netns = f"{TOKEN}-{n}"
    sh("ip", "netns", "add", netns)
    sh("ip", "-n", netns, "link", "set", "lo", "up")
    root = tmp_path / "state"
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "REX_ROOT": str(root), "REX_DATASET": f"{pool}/t{n}", "REX_SUBNET": SUBNET,
        "REX_RUNTIME": "linux", "REX_HOST": "testhost", "PYTHONDONTWRITEBYTECODE": "1",
    }  # fmt: skip
    r = Rex(root=root, dataset=f"{pool}/t{n}", netns=netns, env=env)
    r.run("base", "import", busybox_root, "busybox", "--version", "1")
    yield r
    _teardown(r)


def _teardown(r: Rex) -> None:
    for _ in range(3):  # a jail others depend on (DEPENDS) goes after them
        listing = r.run("-o", "json", "ls", check=False)
        if listing.returncode != 0 or not json.loads(listing.stdout):
            break
        for jail in json.loads(listing.stdout):
            r.run("destroy", jail["name"], check=False)
    _sweep_netns(f"rex-{r.token}-")
    for _ in range(30):
        if sh("zfs", "destroy", "-r", r.dataset, check=False).returncode == 0:
            break
        _unmount_below(r.dataset)
        time.sleep(0.1)
    sh("ip", "netns", "del", r.netns, check=False)
    shutil.rmtree(r.root, ignore_errors=True)


def wait_until(cond: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    """Poll ``cond`` until it returns something true, and return that. The bound
    only keeps a broken run from hanging: it is no claim about speed (those
    figures are measured under bench/)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.05)


def _root_of(proc: Path) -> str:
    try:
        return os.readlink(proc / "root")
    except OSError:
        return ""


def _unmount_below(dataset: str) -> None:
    rows = sh("zfs", "list", "-H", "-o", "name", "-r", dataset, check=False).stdout.split()
    for name in sorted(rows, reverse=True):
        sh("zfs", "umount", name, check=False)


def copy_example(dest: Path, name: str = "hello") -> Path:
    shutil.copytree(REPO / "examples" / name, dest / name)
    return dest / name
