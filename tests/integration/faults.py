"""What the fault tests check after every round: a jail is there, running
and complete, or gone without a trace (datasets, namespaces, mounts,
processes, records, address claims, kept generations, half-built images).

``assert_present`` / ``assert_absent`` are one host's, its store its
state.db; ``traces``, ``jail_keys`` and ``assert_no_build_leftovers`` take
any host and store (tests/cluster/test_faults_kill_cluster.py passes each
cluster host and etcd)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Rex, root_source, sh

Reader = Callable[[str], dict[str, object]]  # key prefix -> {key: JSON value}


def store(rex: Rex, prefix: str) -> dict[str, object]:
    db = sqlite3.connect(f"file:{rex.root / 'state.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, value FROM kv WHERE key >= ? AND key < ?",
                          (prefix, prefix + "\uffff")).fetchall()  # fmt: skip
    finally:
        db.close()
    return {k: json.loads(v) for k, v in rows}


def claims(rex: Rex, name: str, read: Reader | None = None) -> list[str]:
    found = (read or (lambda p: store(rex, p)))("ipam/")
    return sorted(k for k, v in found.items()
                  if isinstance(v, dict) and v.get("jail") == name)  # fmt: skip


def jail_keys(read: Reader, name: str) -> list[str]:
    """Every store key of jail ``name``: its record, kept generations, DNS
    records, certificate, health, and the addresses and host names it claims."""
    own = {f"jails/{name}", f"dns/{name}", f"pki/certs/{name}", f"health/{name}"}
    out = [k for p in ("jails/", "dns/", "pki/certs/", "health/") for k in read(p) if k in own]
    out += [k for k in read(f"history/{name}/")]
    out += [k for p in ("ipam/", "names/") for k, v in read(p).items()
            if isinstance(v, dict) and v.get("jail") == name]  # fmt: skip
    return sorted(out)


def traces(rex: Rex, name: str) -> dict[str, list[str]]:
    """What host ``rex`` holds of jail ``name``: datasets and snapshots (its root,
    volumes, kept generations, a transfer's temporary ones, marked or not),
    its network namespace, mounts and processes."""
    done = sh("zfs", "list", "-H", "-t", "all", "-o", "name", "-r", rex.dataset, check=False)
    below = rex.dataset + "/"
    datasets = [d for d in done.stdout.split()
                if d.startswith(below) and _names_jail(d.removeprefix(below), name)]  # fmt: skip
    netns = [n.split(" ")[0] for n in sh("ip", "netns", "list").stdout.splitlines()
             if n.split(" ")[0] == f"rex-{rex.token}-{name}"]  # fmt: skip
    mnt = rex.mnt
    roots = (f"{mnt}/jails/{name}", f"{mnt}/jails/_in-{name}")
    mounts = [m for m in Path("/proc/mounts").read_text().splitlines()
              if m.split(" ")[1] in roots or m.split(" ")[1].startswith(
                  (f"{mnt}/volumes/{name}.", f"{mnt}/volumes/_in-{name}."))]  # fmt: skip
    own = {f"{rex.dataset}/jails/{name}", f"{rex.dataset}/jails/_in-{name}"}
    procs = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
             and root_source(p) in own]  # fmt: skip
    return {"datasets": datasets, "netns": netns, "mounts": mounts, "processes": procs}


def _names_jail(rest: str, name: str) -> bool:
    """Whether the dataset or snapshot ``rest`` (below the host's dataset) is jail
    ``name``'s (not another jail's whose name starts the same)."""
    ds = rest.split("@")[0]
    kind, _, leaf = ds.partition("/")
    leaf = leaf.removeprefix("_in-")
    if kind == "jails":
        return leaf == name
    return kind in ("volumes", "generations") and leaf.rpartition(".")[0] == name


def assert_present(rex: Rex, name: str, marker: str) -> None:
    jails = rex.jails()
    assert list(jails) == [name] and jails[name]["state"] == "running", jails
    assert rex.run("exec", name, "--", "cat", "/marker").stdout == marker
    left = rex.leftovers()
    assert left["netns"] == [f"rex-{rex.token}-{name}"], left
    assert left["datasets"] == [f"{rex.dataset}/jails/{name}"], left
    assert len(left["mounts"]) == 1, left
    assert left["processes"], left  # the jail's, found by what is mounted on their "/"
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


def assert_no_build_leftovers(rex: Rex, read: Reader | None = None) -> None:
    """No half-built image, no build address, no build network namespace
    (``read``: the store, when it is not the host's state.db)."""
    done = sh("zfs", "list", "-H", "-o", "name,rexcarcer:complete", "-r", f"{rex.dataset}/images",
              check=False)  # fmt: skip
    half = [r for r in done.stdout.splitlines()[1:] if not r.endswith("\t1")]
    assert half == [], half
    leases = [k for k, v in (read or (lambda p: store(rex, p)))("ipam/").items()
              if isinstance(v, dict) and str(v.get("jail", "")).startswith("build-")]  # fmt: skip
    assert leases == [], leases
    netns = sh("ip", "netns", "list").stdout
    assert f"rex-{rex.token}-_" not in netns, netns


def zfs_names(rex: Rex, kind: str) -> list[str]:
    done = sh("zfs", "list", "-H", "-o", "name", "-r", f"{rex.dataset}/{kind}", check=False)
    return done.stdout.split()[1:]
