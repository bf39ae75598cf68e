"""The cluster's store: etcd at this host's endpoints, with its TLS settings."""

from __future__ import annotations

from collections.abc import Sequence

from rexcarcer.config import Config
from rexcarcer.state.etcd import PREFIX, EtcdStore, tls_context


def open_etcd(
    config: Config, endpoints: Sequence[str] | None = None, *, prefix: str = PREFIX
) -> EtcdStore:
    """The cluster store with this host's endpoints and TLS settings."""
    tls = tls_context(config.etcd_ca, config.etcd_cert, config.etcd_key)
    return EtcdStore(endpoints or config.etcd, prefix=prefix, tls=tls)
