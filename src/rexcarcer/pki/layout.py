"""Where the CA lives (``$REX_ROOT/ca/``); no ``cryptography`` here, so that the
hook can tell "nothing to do" without importing it (see pki/ca.py for the files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


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
