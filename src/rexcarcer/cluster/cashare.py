"""The cluster CA's record in etcd (``cluster/ca``).

``rex cluster init`` publishes the cluster CA's *certificates* there
(create-if-absent): hosts learn the root they trust from it, and the agents'
API tells a host certificate by its signature with the cluster CA's key
(cluster/auth.py). The key itself stays on the host where init ran, the CA
host, which signs the other hosts' certificates (cluster/signer.py).

Only ``rex cluster init --share-ca`` puts the CA's files, key included, in the
record, and only when etcd is reached over https with a client certificate
(``REX_ETCD_CERT``): then whoever can read ``/rexcarcer/v1/`` can issue host
certificates, so etcd must be as closed as the CA. ``rex cluster join`` then
installs them and signs its own certificates.

Record::

    {"version", "fingerprint", "host": the CA host, "cert": ca.crt, "chain": chain.crt,
     "trust": cluster.crt, "leaf_days"[, "files": {name: text}]}   (PEM text)

A host that already has a CA keeps it when it is the cluster's; a different
one is refused (never overwritten), with the fix in the hint.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rexcarcer.cluster import ClusterError, model
from rexcarcer.fsutil import atomic_write
from rexcarcer.model import keys
from rexcarcer.pki.layout import CaPaths
from rexcarcer.state.base import Compare, Put, Store, create_json, dumps

if TYPE_CHECKING:
    from cryptography import x509

KEY = keys.CLUSTER_CA
FILES = ("ca.key", "ca.crt", "chain.crt", "cluster.crt", "ca.json")
MODES = {"ca.key": 0o600}


def check_share(endpoints: Sequence[str], etcd_cert: Path | None) -> None:
    """``--share-ca`` only where etcd is closed to everyone without a client certificate."""
    plain = [u for u in endpoints if urlsplit(u).scheme != "https"]
    if plain or etcd_cert is None:
        why = f"{plain[0]} is not https" if plain else "no client certificate (REX_ETCD_CERT)"
        raise ClusterError(
            f"refusing to store the cluster CA's key in etcd: {why}",
            hint="run etcd with TLS and --client-cert-auth and give rex its client "
            "certificate (REX_ETCD_CA, REX_ETCD_CERT, REX_ETCD_KEY; docs/cluster.md), or "
            "leave out --share-ca: hosts then join with a token (`rex cluster token`)",
        )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClusterError(f"cannot read {path}: {exc}") from exc


def record_of(paths: CaPaths, host: str, *, share: bool = False) -> dict[str, Any]:
    """The etcd value for the CA in ``paths`` (checked: the key matches the certificate)."""
    from rexcarcer.pki import ca

    authority = ca.load(paths)  # refuses a key that does not belong to the certificate
    value: dict[str, Any] = {
        "version": model.VERSION, "fingerprint": authority.fingerprint, "host": host,
        "cert": _read(paths.cert), "chain": _read(paths.chain), "trust": _read(paths.trust),
        "leaf_days": authority.leaf_days,
    }  # fmt: skip
    if share:
        value["files"] = {name: _read(paths.dir / name) for name in FILES}
    return value


def shared(store: Store) -> dict[str, Any] | None:
    entry = store.get(KEY)
    if entry is None:
        return None
    value = entry.json()
    files = value.get("files")
    if isinstance(files, dict) and "cert" not in value:  # a record of rex 0.2 and before
        value = {**value, "cert": files.get("ca.crt"), "chain": files.get("chain.crt"),
                 "trust": files.get("cluster.crt")}  # fmt: skip
    good_files = files is None or (isinstance(files, dict) and set(files) == set(FILES))
    texts = [value.get(k) for k in ("cert", "trust", "fingerprint")]
    if not good_files or not all(isinstance(t, str) and t for t in texts):
        raise ClusterError(
            f"the cluster CA in etcd ({KEY}) is malformed",
            hint="run `rex cluster init` again on the CA host",
        )
    return dict(value)


def issuer_cert(value: dict[str, Any]) -> x509.Certificate:
    """The cluster CA's certificate (ca.crt) from its record."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(str(value["cert"]).encode())[0]
    except (ValueError, IndexError) as exc:
        raise ClusterError(f"the cluster CA certificate in etcd ({KEY}) is unreadable") from exc


def publish(store: Store, paths: CaPaths, host: str, *, share: bool = False) -> tuple[str, bool]:
    """Publish the CA in ``paths`` unless the cluster has one; (fingerprint, changed).

    Run again with the same CA, it puts the key in (``share``) or takes it out."""
    wanted = record_of(paths, host, share=share)
    if create_json(store, KEY, wanted):
        return str(wanted["fingerprint"]), True
    entry = store.get(KEY)
    have = shared(store)
    assert have is not None and entry is not None
    if have["fingerprint"] != wanted["fingerprint"]:
        raise ClusterError(
            f"the cluster already has another CA (SHA-256 {have['fingerprint']}); "
            f"this host's CA in {paths.dir} is {wanted['fingerprint']}",
            hint=f"move {paths.dir} away and run `rex cluster join` to install the cluster's CA",
        )
    if ("files" in have) == share and have.get("cert"):
        return str(have["fingerprint"]), False
    wanted["host"] = have.get("host", host)  # the CA host stays the one that made it
    if not store.commit([Compare(KEY, entry.revision)], [Put(KEY, dumps(wanted))]):
        raise ClusterError(f"{KEY} changed while it was being updated", hint="run it again")
    return str(wanted["fingerprint"]), True


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
    """Make ``paths`` hold the cluster's CA when the record carries its key
    (``--share-ca``); (its fingerprint or None without a record, whether written)."""
    value = check(store, paths)
    if value is None:
        return None, False
    fingerprint = str(value["fingerprint"])
    if paths.exists() or "files" not in value:
        return fingerprint, False
    _write_dir(paths.dir, value["files"])
    from rexcarcer.pki import ca

    if ca.load(paths).fingerprint != fingerprint:  # what etcd said is what was written
        shutil.rmtree(paths.dir, ignore_errors=True)
        raise ClusterError(
            f"the cluster CA in etcd ({KEY}) does not match its recorded fingerprint",
            hint="run `rex cluster init` again on the CA host",
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
