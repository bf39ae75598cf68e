"""Where the CAs live; no ``cryptography`` here, so that the hook can tell
"nothing to do" without importing it.

``$REX_ROOT/ca/`` is the cluster CA, on the CA host only (pki/ca.py);
``$REX_ROOT/jail-ca/`` is this host's jail CA, on every host (pki/jailca.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class CaPaths:
    dir: Path

    @classmethod
    def under(cls, root: Path) -> CaPaths:
        return cls(root / "ca")

    @property
    def key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def chain(self) -> Path:
        return self.dir / "chain.crt"

    @property
    def trust(self) -> Path:
        return self.dir / "cluster.crt"

    @property
    def meta(self) -> Path:
        return self.dir / "ca.json"

    @property
    def crl(self) -> Path:
        return self.dir / "crl.pem"

    def exists(self) -> bool:
        """Cheap (no cryptography): whether a CA has been initialised."""
        return self.cert.is_file() and self.key.is_file()

    def fingerprint(self) -> str | None:
        """The issuing certificate's SHA-256, as ``rex ca init`` recorded it in ca.json."""
        try:
            value = json.loads(self.meta.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class JailCaPaths:
    """``$REX_ROOT/jail-ca/`` (0700): this host's jail CA (pki/jailca.py)::

    jail-ca.key   its key, 0600, made on this host and never sent anywhere
    jail-ca.crt   its certificate, signed by the cluster CA
    chain.crt     the certificates above it below the root (your intermediate)
    cluster.crt   the root every jail trusts
    jail-ca.json  host, key id, the cluster CA's fingerprint, permitted ranges
    crl.pem       the CRL of this host's jail certificates, signed by it
    """

    dir: Path

    @classmethod
    def under(cls, root: Path) -> JailCaPaths:
        return cls(root / "jail-ca")

    @property
    def key(self) -> Path:
        return self.dir / "jail-ca.key"

    @property
    def cert(self) -> Path:
        return self.dir / "jail-ca.crt"

    @property
    def chain(self) -> Path:
        return self.dir / "chain.crt"

    @property
    def trust(self) -> Path:
        return self.dir / "cluster.crt"

    @property
    def meta(self) -> Path:
        return self.dir / "jail-ca.json"

    @property
    def crl(self) -> Path:
        return self.dir / "crl.pem"

    def exists(self) -> bool:
        return self.meta.is_file() and self.key.is_file() and self.cert.is_file()

    def settings(self) -> dict[str, Any]:
        """jail-ca.json, or {} (cheap: no cryptography)."""
        try:
            value = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def key_id(self) -> str | None:
        """What jail certificates record as their issuer: the SHA-256 of the jail
        CA's public key, which a renewal of its certificate keeps."""
        value = self.settings().get("key_id")
        return value if isinstance(value, str) else None
