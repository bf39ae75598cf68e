"""The state store lost for real (zfs-fuse, namespaces, unbound): state.db and
its backups deleted, then `rex state rebuild` puts back from the datasets'
rexcarcer:record properties the same `rex ls`, `rex dns ls`, address claims,
certificate records and `rex history`; the running jails keep running (their
init is the same process) and are still answered in DNS."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rexcarcer.model import keys
from rexcarcer.state.sqlite import SqliteStore
from tests.capability import linux_only
from tests.integration.conftest import Rex, sh
from tests.integration.test_dns import ZONE, Dns, _require_unbound, _serve


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    linux_only("the namespaces runtime, and `rex host serve` runs Debian's unbound")


@pytest.fixture
def served(rex: Rex) -> Iterator[Dns]:
    """unbound and the log collector, run by `rex host serve` (as in test_dns.py)."""
    _require_unbound()
    yield from _serve(rex)


def _rexfile(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / f"{name}.rex"
    path.write_text("BASE busybox\n" + "".join(f"{ln}\n" for ln in lines))
    return path


def _store(rex: Rex, prefix: str) -> dict[str, Any]:
    store = SqliteStore(rex.root / "state.db", backup=False)
    try:
        return {e.key: e.json() for e in store.list(prefix)}
    finally:
        store.close()


def _init_pid(rex: Rex, name: str) -> int:
    return int(json.loads((rex.root / "run" / f"{name}.json").read_text())["init_pid"])


def _state(rex: Rex) -> dict[str, Any]:
    """Everything the rebuild must give back, live usage figures left out (they
    move on their own)."""
    listing = rex.json("ls")
    assert isinstance(listing, list)
    names = sorted(j["name"] for j in listing)
    volumes = rex.json("volume", "ls")
    assert isinstance(volumes, list)
    return {
        "ls": [{k: v for k, v in j.items() if k != "usage"} for j in listing],
        "dns": rex.json("dns", "ls"),
        "ipam": _store(rex, keys.IPAM),
        "names": _store(rex, keys.NAMES),
        "certs": {n: rex.json("ca", "show", n) for n in names},
        "registry": _store(rex, keys.PKI_CERTS),
        "history": {n: rex.json("history", n) for n in names},
        "volumes": [{k: v for k, v in vol.items() if k != "used"} for vol in volumes],
    }


def test_rebuild_from_the_datasets_alone(rex: Rex, served: Dns, tmp_path: Path) -> None:
    rex.run("up", _rexfile(tmp_path, "data", "VOLUME data /data 8M", "SERVICE db PORT 5432"))
    app = _rexfile(tmp_path, "app", "ENV V=1", "SERVICE web PORT 80")
    rex.run("up", app)
    app.write_text(app.read_text().replace("V=1", "V=2"))
    rex.run("up", app)  # generation 2, generation 1 kept
    rex.run("up", _rexfile(tmp_path, "idle"))
    rex.run("stop", "idle")
    before = _state(rex)
    assert [g["generation"] for g in before["history"]["app"]] == [1, 2]
    assert {j["name"]: j["state"] for j in before["ls"]} == {
        "app": "running", "data": "running", "idle": "stopped"}  # fmt: skip
    inits = {n: _init_pid(rex, n) for n in ("app", "data")}
    app_ip = rex.ip_of("app")

    for f in rex.root.glob("state.db*"):
        f.unlink()
    shutil.rmtree(rex.root / "backups", ignore_errors=True)
    assert rex.json("ls") == []
    assert rex.json("dns", "ls") == []

    done = rex.run("-o", "json", "state", "rebuild")
    report = json.loads(done.stdout)
    assert report["jails"] == ["app", "data", "idle"], done.stderr
    assert report["running"] == ["app", "data"]
    assert report["generations"] == [{"jail": "app", "generation": 1}]
    assert report["skipped"] == [] and report["notes"] == [], report
    after = _state(rex)
    assert after == before
    # nothing was restarted, and DNS still answers for the running jails
    assert {n: _init_pid(rex, n) for n in ("app", "data")} == inits
    assert served.answers(f"app.jail.{ZONE}") == [app_ip]
    assert rex.run("exec", "app", "--", "sh", "-c", "echo $V").stdout == "2\n"
    # a second rebuild refuses: the store holds records now (exit 83), nothing changes
    again = rex.run("state", "rebuild", check=False)
    assert again.returncode == 83, again.stderr
    assert "already holds 3 jail record(s)" in again.stderr
    # the rebuilt records drive rex as the lost ones did
    rex.run("rollback", "app")
    assert rex.run("exec", "app", "--", "sh", "-c", "echo $V").stdout == "1\n"
    rex.run("start", "idle")
    assert rex.jails()["idle"]["state"] == "running"


def test_a_malformed_record_is_skipped_and_named(rex: Rex, tmp_path: Path) -> None:
    rex.run("up", _rexfile(tmp_path, "good"))
    rex.run("up", _rexfile(tmp_path, "bad"))
    sh("zfs", "set", 'rexcarcer:record={"schema":3,"name":"bad","status":"x"}',
       f"{rex.dataset}/jails/bad")  # fmt: skip
    # a record too large for one property (8192 bytes, zfsprops(7)) goes in parts
    noise = "".join(f"{i:x}" for i in range(30000))
    big = _rexfile(tmp_path, "big", f"ENV NOISE={noise[:20000]}")
    rex.run("up", big)
    props = sh("zfs", "get", "-H", "-o", "property,value", "all", f"{rex.dataset}/jails/big")
    assert "rexcarcer:record\tz:" in props.stdout or "rexcarcer:record\tparts:" in props.stdout
    (rex.root / "state.db").unlink()
    shutil.rmtree(rex.root / "backups", ignore_errors=True)
    done = rex.run("-o", "json", "state", "rebuild", check=False)
    assert done.returncode == 84, done.stderr
    report = json.loads(done.stdout)
    assert report["jails"] == ["big", "good"]
    assert report["skipped"][0]["dataset"] == "jails/bad"
    assert "malformed jail record 'bad'" in report["skipped"][0]["reason"]
    assert "jails/bad: malformed jail record" in done.stderr
    jails = rex.jails()
    assert set(jails) == {"big", "good"} and jails["good"]["state"] == "running"
    assert rex.run("exec", "big", "--", "sh", "-c", "echo ${#NOISE}").stdout == "20000\n"
    # `rex destroy` removes the dataset whose record is gone (docs/faults.md)
    rex.run("destroy", "bad")
    assert sh("zfs", "list", f"{rex.dataset}/jails/bad", check=False).returncode != 0
