"""The cluster store: the ``Store`` protocol on etcd, plus leases and watches.

Keys of the protocol (``jails/web``) live under ``/rexcarcer/v1/`` in etcd, so
that RexCarcer shares a cluster with anything else. ``Entry.revision`` is the
key's ``mod_revision``, so the protocol's compare-and-swap maps onto etcd's
transaction compares one to one::

    Compare(key, None)  ->  version(key) == 0          create-if-absent
    Compare(key, rev)   ->  mod_revision(key) == rev   compare-and-swap

Leases are only for liveness and what is derived from it (``hosts/<h>/alive``):
claims on names and addresses never sit on a lease, so that a network blip
longer than the TTL cannot free an address still in use (notes section 4).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rexcarcer.errors import StateError
from rexcarcer.state.base import Compare, Delete, Entry, Op, Put
from rexcarcer.state.gateway import EtcdRejected, Gateway, as_int, b64, prefix_end, unb64
from rexcarcer.state.watch import Watch

if TYPE_CHECKING:
    import httpx

PREFIX = "/rexcarcer/v1/"


def tls_context(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext | None:
    """TLS towards etcd (REX_ETCD_CA / REX_ETCD_CERT / REX_ETCD_KEY); None: defaults
    (https endpoints are then checked against the system's CAs)."""
    if ca is None and cert is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        if cert is not None:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(str(p) for p in (ca, cert, key) if p)
        raise StateError(
            f"cannot load the etcd TLS files ({files}): {exc}",
            hint="REX_ETCD_CA, REX_ETCD_CERT and REX_ETCD_KEY name PEM files; the key "
            "must belong to the certificate",
        ) from exc
    return ctx


Entries = list[Entry]  # (``EtcdStore.list`` shadows the builtin in the class body)
_NOT_FOUND = 5  # gRPC NOT_FOUND: "etcdserver: requested lease not found"


def _compare(cmp: Compare, key: str) -> dict[str, Any]:
    if cmp.revision is None:
        return {"key": key, "target": "VERSION", "result": "EQUAL", "version": "0"}
    return {"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": str(cmp.revision)}


def _last_per_key(ops: Sequence[Op]) -> list[Op]:
    """etcd refuses a transaction that names a key twice; applied in order, the
    last operation on a key decides its state, as in the other stores."""
    last: dict[str, Op] = {}
    for op in ops:
        last.pop(op.key, None)
        last[op.key] = op
    return list(last.values())


class EtcdStore:
    """``Store`` on etcd through its JSON gateway; ``endpoints`` fail over."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = PREFIX,
        timeout: float = 5.0,
        retry_for: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.prefix = prefix
        self.gateway = Gateway(endpoints, timeout=timeout, retry_for=retry_for,
                               transport=transport, tls=tls)  # fmt: skip

    def _key(self, key: str) -> str:
        return b64(self.prefix + key)

    def _entry(self, kv: dict[str, Any]) -> Entry:
        key = unb64(kv["key"])[len(self.prefix) :]
        return Entry(key, unb64(kv.get("value")), as_int(kv.get("mod_revision")))

    # -- the Store protocol -------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        kvs = self.gateway.call("kv/range", {"key": self._key(key)}).get("kvs", [])
        return self._entry(kvs[0]) if kvs else None

    def list(self, prefix: str) -> list[Entry]:
        return self.snapshot(prefix)[0]

    def commit(self, compares: Sequence[Compare], ops: Sequence[Op], *, lease: int = 0) -> bool:
        """One etcd transaction; ``lease`` attaches every put to that lease."""
        body = {
            "compare": [_compare(c, self._key(c.key)) for c in compares],
            "success": [self._op(op, lease) for op in _last_per_key(ops)],
        }
        answer = self.gateway.call("kv/txn", body, write=True)
        return bool(answer.get("succeeded"))  # left out when false

    def _op(self, op: Op, lease: int) -> dict[str, Any]:
        if isinstance(op, Put):
            put: dict[str, Any] = {"key": self._key(op.key), "value": b64(op.value)}
            if lease:
                put["lease"] = str(lease)
            return {"request_put": put}
        assert isinstance(op, Delete)
        return {"request_delete_range": {"key": self._key(op.key)}}

    def close(self) -> None:
        self.gateway.close()

    # -- etcd extras ----------------------------------------------------------------

    def snapshot(self, prefix: str) -> tuple[Entries, int]:
        """Every entry under ``prefix`` (sorted by key) and the revision it was read at."""
        full = self.prefix + prefix
        answer = self.gateway.call("kv/range", {"key": b64(full), "range_end": prefix_end(full)})
        entries = [self._entry(kv) for kv in answer.get("kvs", [])]
        return entries, as_int(answer.get("header", {}).get("revision"))

    def watch(self, prefix: str, *, idle: float = 5.0) -> Watch:
        return Watch(self, prefix, idle=idle)

    def compact(self, revision: int) -> None:
        self.gateway.call("kv/compaction", {"revision": str(revision)}, write=True)

    # -- leases (the Leases protocol, state/lease.py) -------------------------------------

    def grant(self, ttl: int) -> int:
        answer = self.gateway.call("lease/grant", {"TTL": str(ttl)}, write=True)
        return as_int(answer.get("ID"))

    def keepalive(self, lease: int) -> int:
        """Refresh ``lease``; its TTL, or 0 when etcd no longer knows it."""
        answer = self.gateway.call("lease/keepalive", {"ID": str(lease)})
        return as_int(answer.get("result", {}).get("TTL"))

    def revoke(self, lease: int) -> None:
        try:
            self.gateway.call("lease/revoke", {"ID": str(lease)}, write=True)
        except EtcdRejected as exc:
            if exc.code != _NOT_FOUND:
                raise

    def put_leased(self, key: str, value: str, lease: int) -> None:
        self.commit([], [Put(key, value)], lease=lease)
