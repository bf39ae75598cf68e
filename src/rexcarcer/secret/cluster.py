"""Secrets in a cluster: sealed in etcd, one copy per host, opened only by the
host whose key it was sealed to. The value is never in etcd in clear.

::

    secrets/<name>   {"name", "updated", "copies": {<host>: Sealed.as_json()}}
    sealkeys/<host>  {"host", "spki": base64 DER SubjectPublicKeyInfo,
                      "sha256": its fingerprint, "published"}

``rex secret set`` seals the value to every registered host that has published
its key (seal.py) and writes the record in one transaction; a host that joins
later gets a copy at the next ``rex secret set``. ``rex up`` refuses to place a
jail on a host that has no copy, or a copy sealed to a key that host no longer
has, before anything changes (``check_host``); that host's engine then opens
the copy with its private key at every start.

A host publishes its key when its agent starts (publish.py's
``keep_sealing_key`` wraps the issue of the host's TLS credentials). When that
issue makes a new key, the host first seals its own copies again, from the old
key to the new one, so a key rotation does not lose a secret.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rexcarcer.cluster import model
from rexcarcer.config import Config
from rexcarcer.model.keys import SEALKEYS, SECRETS
from rexcarcer.names import check_secret_name
from rexcarcer.pki.keys import spki, spki_sha256
from rexcarcer.secret import SecretError, hostkey, seal
from rexcarcer.secret.files import SecretInfo, check_value, unknown
from rexcarcer.state.base import Compare, Delete, Put, Store, dumps

log = logging.getLogger("rexcarcer.secret")
RETRIES = 20


def secret_key(name: str) -> str:
    return SECRETS + name


def sealkey_key(host: str) -> str:
    return SEALKEYS + host


# -- hosts' keys -------------------------------------------------------------------------


def published(store: Store) -> dict[str, str]:
    """host -> the fingerprint of the key it published."""
    out = {}
    for e in store.list(SEALKEYS):
        data = e.json()
        if isinstance(data, dict) and data.get("host") and data.get("sha256"):
            out[str(data["host"])] = str(data["sha256"])
    return out


def recipients(store: Store) -> dict[str, ec.EllipticCurvePublicKey]:
    """Every registered host (hosts/<host>) that has published a key: its key."""
    hosts = set(model.host_records({e.key: e for e in store.list(model.HOSTS)}))
    out = {}
    for e in store.list(SEALKEYS):
        data = e.json()
        host = str(data.get("host", "")) if isinstance(data, dict) else ""
        if host in hosts:
            out[host] = seal.public_key(base64.b64decode(data["spki"]))
    return out


def publish(store: Store, host: str, key: ec.EllipticCurvePrivateKey) -> bool:
    """Publish this host's public key; whether it changed."""
    fingerprint = spki_sha256(key)
    current = store.get(sealkey_key(host))
    if current is not None and current.json().get("sha256") == fingerprint:
        return False
    value = {
        "host": host,
        "spki": base64.b64encode(spki(key)).decode(),
        "sha256": fingerprint,
        "published": int(time.time()),
    }
    store.commit([], [Put(sealkey_key(host), dumps(value))])
    return True


def rotate_and_publish(config: Config, store: Store, before: bytes | None) -> None:
    """This host's key is new (``before``: the old key's PEM) or unpublished:
    seal its copies from the old key to the new one, then publish the new one."""
    old = _load(before) if before is not None else None
    new = hostkey.private_key(config)
    if old is not None and spki_sha256(old) != spki_sha256(new):
        reseal_own(store, config.host, old, new)
    publish(store, config.host, new)


def _load(pem: bytes) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (TypeError, ValueError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def reseal_own(
    store: Store, host: str, old: ec.EllipticCurvePrivateKey, new: ec.EllipticCurvePrivateKey
) -> list[str]:
    """Seal again, to ``new``, every copy of this host's that ``old`` opens."""
    old_fp, done = spki_sha256(old), []
    for entry in store.list(SECRETS):
        name = entry.key.removeprefix(SECRETS)
        for _ in range(RETRIES):
            current = store.get(entry.key)
            rec = current.json() if current is not None else None
            copy = (rec or {}).get("copies", {}).get(host)
            if current is None or rec is None or copy is None or copy.get("key") != old_fp:
                break
            value = seal.open_sealed(seal.Sealed.from_json(copy), name=name, host=host, private=old)
            fresh = seal.seal(value, name=name, host=host, recipient=new.public_key())
            rec["copies"][host] = fresh.as_json()
            if store.commit([Compare(entry.key, current.revision)], [Put(entry.key, dumps(rec))]):
                done.append(name)
                break
    if done:
        log.info("host key changed: secrets %s sealed again to the new key", ", ".join(done))
    return done


# -- secrets -----------------------------------------------------------------------------


def set_secret(store: Store, name: str, value: bytes) -> tuple[list[str], list[str]]:
    """Seal ``value`` to every host with a published key; (hosts sealed for,
    registered hosts left out because they have published no key yet)."""
    check_secret_name(name)
    check_value(name, value)
    keys = recipients(store)
    registered = set(model.host_records({e.key: e for e in store.list(model.HOSTS)}))
    if not keys:
        raise SecretError(
            "no host of the cluster has published a key to seal secrets to",
            hint="start `rex agent` on the cluster's hosts: each publishes its key",
        )
    copies = {
        h: seal.seal(value, name=name, host=h, recipient=k).as_json()
        for h, k in sorted(keys.items())
    }
    record = {"name": name, "updated": int(time.time()), "copies": copies}
    store.commit([], [Put(secret_key(name), dumps(record))])
    return sorted(keys), sorted(registered - set(keys))


def _record(store: Store, name: str) -> dict[str, Any] | None:
    entry = store.get(secret_key(name))
    data = entry.json() if entry is not None else None
    return data if isinstance(data, dict) else None


def open_secret(store: Store, config: Config, name: str) -> bytes:
    """The value of ``name``, opened with this host's key."""
    rec = _record(store, name)
    if rec is None:
        raise unknown(name, "in the cluster")
    copy = (rec.get("copies") or {}).get(config.host)
    if copy is None:
        raise not_sealed_for(name, config.host)
    return seal.open_sealed(
        seal.Sealed.from_json(copy),
        name=name,
        host=config.host,
        private=hostkey.private_key(config),
    )


def not_sealed_for(name: str, host: str) -> SecretError:
    return SecretError(
        f"secret {name} is not sealed for host {host}",
        hint=f"`rex secret set {name}` again once {host}'s agent has published its key "
        "(it seals to every host that has)",
    )


def openers(store: Store, name: str) -> set[str]:
    """The hosts that can open ``name`` now: a copy sealed to the key they publish."""
    rec = _record(store, name)
    if rec is None:
        return set()
    keys = published(store)
    return {
        h
        for h, c in (rec.get("copies") or {}).items()
        if isinstance(c, dict) and keys.get(h) == c.get("key")
    }


def check_host(store: Store, names: Sequence[str], host: str) -> None:
    """Refuse (before anything changes) to run a jail with ``names`` on ``host``
    when that host cannot open one of them."""
    able: dict[str, set[str]] = {}
    for name in names:
        if _record(store, name) is None:
            raise unknown(name, "in the cluster")
        able[name] = openers(store, name)
    every = set.intersection(*able.values()) if able else set()
    for name in names:
        if host not in able[name]:
            raise SecretError(
                f"host {host} cannot open secret {name}: it has no copy sealed to "
                "that host's current key",
                hint=f"place the jail on a host that can open all its secrets "
                f"({', '.join(sorted(every)) or 'none'}), or run `rex secret set {name}` "
                f"again once {host}'s agent has published its key",
            )


def list_secrets(store: Store) -> list[SecretInfo]:
    out = []
    for e in store.list(SECRETS):
        rec = e.json()
        copies = rec.get("copies") or {}
        size = 0
        for c in copies.values():  # GCM adds a 16-byte tag
            size = max(size, len(base64.b64decode(c.get("ct", ""))) - 16)
        out.append(
            SecretInfo(
                e.key.removeprefix(SECRETS), size, int(rec.get("updated", 0)), tuple(sorted(copies))
            )
        )
    return sorted(out, key=lambda s: s.name)


def remove_secret(store: Store, name: str) -> bool:
    entry = store.get(secret_key(name))
    if entry is None:
        return False
    return store.commit([Compare(entry.key, entry.revision)], [Delete(entry.key)])
