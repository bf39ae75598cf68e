"""Keeping this host's sealing key published (cluster.py), cheaply: it wraps
every call that may issue the host a new key pair (cluster/tls.py ``ensure``,
run by the agent and by a client of another host's agent; the agent's renewal,
cluster/renewal.py; ``rex cluster join`` and ``rex cluster renew``), and loads
``cryptography`` only when the key changed or was never published."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from rexcarcer.cluster.tls import TlsFiles
from rexcarcer.config import Config
from rexcarcer.model.keys import SEALKEYS
from rexcarcer.state.base import Store

T = TypeVar("T")


def keep_sealing_key(config: Config, store: Store, issue: Callable[[], T]) -> T:
    """Run ``issue``; if it gave this host a new key (or the key was never
    published), seal this host's copies to the new key and publish it."""
    before = _key_bytes(config)
    result = issue()
    unchanged = before is not None and before == _key_bytes(config)
    if unchanged and store.get(SEALKEYS + config.host) is not None:
        return result
    from rexcarcer.secret import cluster

    cluster.rotate_and_publish(config, store, before)
    return result


def _key_bytes(config: Config) -> bytes | None:
    # hostkey.key_path, without importing cryptography
    try:
        return TlsFiles.under(config.root).key.read_bytes()
    except OSError:
        return None
