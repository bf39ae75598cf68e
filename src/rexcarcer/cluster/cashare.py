"""The cluster CA, shared through etcd (``cluster/ca``).

``rex cluster init`` uploads this host's CA (``$REX_ROOT/ca``, made with
``rex ca init`` or, when there is none, created on the spot) with a
create-if-absent transaction; ``rex cluster join`` writes it into the joining
host's ``$REX_ROOT/ca`` (0700, the key 0600). Every host then issues jail and
agent certificates from one CA, so a jail on one host verifies a jail on
another, and the agents' mutual-TLS API works without copying files by hand.

The record holds the CA's private key: whoever reads ``/rexcarcer/v1/`` in
etcd can issue cluster certificates. Protect etcd as you protect the CA (client
TLS and authentication, docs/cluster.md), or keep the CA off etcd with
``rex cluster init --no-share-ca`` and copy ``$REX_ROOT/ca`` yourself.

A host that already has a CA keeps it when it is the cluster's; a different
one is refused (never overwritten), with the fix in the hint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from rexcarcer.cluster import ClusterError, model
from rexcarcer.fsutil import atomic_write
from rexcarcer.model import keys
from rexcarcer.pki.layout import CaPaths
from rexcarcer.state.base import Store, create_json

KEY = keys.CLUSTER_CA
FILES = ("ca.key", "ca.crt", "chain.crt", "cluster.crt", "ca.json")
MODES = {"ca.key": 0o600}


def record_of(paths: CaPaths) -> dict[str, Any]:
    """The etcd value for the CA in ``paths`` (checked: the key matches the certificate)."""
    from rexcarcer.pki import ca

    authority = ca.load(paths)  # refuses a key that does not belong to the certificate
    files = {}
    for name in FILES:
        try:
            files[name] = (paths.dir / name).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ClusterError(f"cannot read {paths.dir / name}: {exc}") from exc
    return {"version": model.VERSION, "fingerprint": authority.fingerprint, "files": files}


def shared(store: Store) -> dict[str, Any] | None:
    entry = store.get(KEY)
    if entry is None:
        return None
    value = entry.json()
    files = value.get("files")
    if not isinstance(files, dict) or set(files) != set(FILES) or not value.get("fingerprint"):
        raise ClusterError(
            f"the cluster CA in etcd ({KEY}) is malformed",
            hint="run `rex cluster init` again from a host that has the CA",
        )
    return dict(value)


def publish(store: Store, paths: CaPaths) -> tuple[str, bool]:
    """Upload the CA in ``paths`` unless the cluster has one; (fingerprint, uploaded)."""
    wanted = record_of(paths)
    if create_json(store, KEY, wanted):
        return str(wanted["fingerprint"]), True
    have = shared(store)
    assert have is not None
    if have["fingerprint"] != wanted["fingerprint"]:
        raise ClusterError(
            f"the cluster already has another CA (SHA-256 {have['fingerprint']}); "
            f"this host's CA in {paths.dir} is {wanted['fingerprint']}",
            hint=f"move {paths.dir} away and run `rex cluster join` to install the cluster's CA",
        )
    return str(have["fingerprint"]), False


def check(store: Store, paths: CaPaths) -> dict[str, Any] | None:
    """The cluster's CA record, after checking that this host has no other CA."""
    value = shared(store)
    if value is None or not paths.exists():
        return value
    fingerprint, mine = str(value["fingerprint"]), paths.fingerprint()
    if mine != fingerprint:
        raise ClusterError(
            f"this host has another CA in {paths.dir} (SHA-256 {mine}); the cluster's "
            f"is {fingerprint}",
            hint=f"move {paths.dir} away and run `rex cluster join` again; jails then "
            "get certificates from the cluster CA at their next start (`rex ca renew`)",
        )
    return value


def install(store: Store, paths: CaPaths) -> tuple[str | None, bool]:
    """Make ``paths`` hold the cluster's CA; (its fingerprint or None, whether written).

    None: the cluster keeps its CA off etcd (``--no-share-ca``)."""
    value = check(store, paths)
    if value is None:
        return None, False
    fingerprint = str(value["fingerprint"])
    if paths.exists():
        return fingerprint, False
    _write_dir(paths.dir, value["files"])
    from rexcarcer.pki import ca

    if ca.load(paths).fingerprint != fingerprint:  # what etcd said is what was written
        shutil.rmtree(paths.dir, ignore_errors=True)
        raise ClusterError(
            f"the cluster CA in etcd ({KEY}) does not match its recorded fingerprint",
            hint="run `rex cluster init` again from a host that has the CA",
        )
    return fingerprint, True


def _write_dir(target: Path, files: dict[str, str]) -> None:
    tmp = target.with_name(f"{target.name}.new-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700, parents=True)
        for name in FILES:
            mode = MODES.get(name, 0o644)
            atomic_write(tmp / name, files[name], mode=mode)
        tmp.rename(target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ClusterError(f"cannot write the cluster CA into {target}: {exc}") from exc
