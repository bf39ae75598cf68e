"""What the fault tests check after every round: a jail is there, running
and complete, or gone without a trace (datasets, namespaces, mounts,
processes, records, address claims, kept generations, half-built images)."""

from __future__ import annotations

import json
import sqlite3

from tests.integration.conftest import Rex, sh


def store(rex: Rex, prefix: str) -> dict[str, object]:
    db = sqlite3.connect(f"file:{rex.root / 'state.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, value FROM kv WHERE key >= ? AND key < ?",
                          (prefix, prefix + "\uffff")).fetchall()  # fmt: skip
    finally:
        db.close()
    return {k: json.loads(v) for k, v in rows}


def claims(rex: Rex, name: str) -> list[str]:
    return sorted(k for k, v in store(rex, "ipam/").items()
                  if isinstance(v, dict) and v.get("jail") == name)  # fmt: skip


def assert_present(rex: Rex, name: str, marker: str) -> None:
    jails = rex.jails()
    assert list(jails) == [name] and jails[name]["state"] == "running", jails
    assert rex.run("exec", name, "--", "cat", "/marker").stdout == marker
    left = rex.leftovers()
    assert left["netns"] == [f"rex-{rex.token}-{name}"], left
    assert left["datasets"] == [f"{rex.dataset}/jails/{name}"], left
    assert len(left["mounts"]) == 1, left
    assert len(claims(rex, name)) == 1, claims(rex, name)
    assert list(store(rex, "jails/")) == [f"jails/{name}"]
    status = store(rex, "jails/")[f"jails/{name}"]
    assert isinstance(status, dict) and status["status"] == "ready", status
    assert_no_build_leftovers(rex)


def assert_absent(rex: Rex, name: str) -> None:
    assert rex.jails() == {}
    assert rex.leftovers() == {"netns": [], "datasets": [], "mounts": [], "processes": []}
    assert claims(rex, name) == []
    assert store(rex, "jails/") == {} and store(rex, f"history/{name}/") == {}
    kept = [d for d in zfs_names(rex, "generations") if f"/{name}." in d]
    assert kept == [], kept
    assert_no_build_leftovers(rex)


def assert_no_build_leftovers(rex: Rex) -> None:
    """No half-built image, no build address, no build network namespace."""
    done = sh("zfs", "list", "-H", "-o", "name,rexcarcer:complete", "-r", f"{rex.dataset}/images",
              check=False)  # fmt: skip
    half = [r for r in done.stdout.splitlines()[1:] if not r.endswith("\t1")]
    assert half == [], half
    leases = [k for k, v in store(rex, "ipam/").items()
              if isinstance(v, dict) and str(v.get("jail", "")).startswith("build-")]  # fmt: skip
    assert leases == [], leases
    netns = sh("ip", "netns", "list").stdout
    assert f"rex-{rex.token}-_" not in netns, netns


def zfs_names(rex: Rex, kind: str) -> list[str]:
    done = sh("zfs", "list", "-H", "-o", "name", "-r", f"{rex.dataset}/{kind}", check=False)
    return done.stdout.split()[1:]
