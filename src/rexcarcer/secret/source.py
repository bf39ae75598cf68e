"""Where a host's secrets are: its secret directory (files.py), or in a cluster
(REX_ETCD set) the sealed records in etcd (cluster.py). ``Secrets`` is what the
engine opens them through at every start; ``SecretAdmin`` is ``rex secret``."""

from __future__ import annotations

from collections.abc import Sequence

from rexcarcer.config import Config
from rexcarcer.errors import Conflict
from rexcarcer.host import Host
from rexcarcer.names import check_secret_name
from rexcarcer.runtime.base import Secret
from rexcarcer.secret.files import LocalSecrets, SecretInfo, unknown
from rexcarcer.state import records
from rexcarcer.state.base import Store


class Secrets:
    """The engine's SecretSource (engine/base.py)."""

    def open(self, host: Host, names: Sequence[str]) -> tuple[Secret, ...]:
        config = host.config
        if config.etcd:
            from rexcarcer.secret import cluster

            return tuple(Secret(n, cluster.open_secret(host.store, config, n)) for n in names)
        local = LocalSecrets(config.root)
        return tuple(Secret(n, local.get(n)) for n in names)


class SecretAdmin:
    """``rex secret set / ls / rm`` on this host's configuration and store."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store

    def set(self, name: str, value: bytes) -> tuple[list[str], list[str]]:
        """Store the value; in a cluster (hosts sealed for, hosts left out)."""
        check_secret_name(name)
        if self.config.etcd:
            from rexcarcer.secret import cluster

            return cluster.set_secret(self.store, name, value)
        LocalSecrets(self.config.root).set(name, value)
        return [], []

    def list(self) -> list[SecretInfo]:
        if self.config.etcd:
            from rexcarcer.secret import cluster

            return cluster.list_secrets(self.store)
        return LocalSecrets(self.config.root).list()

    def remove(self, name: str) -> None:
        """Remove a secret no jail names (a jail that does would not start again)."""
        check_secret_name(name)
        users = sorted(r.name for r in records.list_jails(self.store) if name in r.secrets)
        if users:
            raise Conflict(
                f"secret {name} is used by jail(s) {', '.join(users)}",
                hint="remove its SECRET line and `rex up` them, or destroy them, first",
            )
        if self.config.etcd:
            from rexcarcer.secret import cluster

            found = cluster.remove_secret(self.store, name)
        else:
            found = LocalSecrets(self.config.root).remove(name)
        if not found:
            raise unknown(name, "in the cluster" if self.config.etcd else "on this host")
