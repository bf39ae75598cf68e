"""The trust directory: the signer certificates whose signatures count.

``<state root>/trust/<fingerprint>.pem``, one file per signer, written by
``rex trust add`` (which refuses an expired or not-yet-valid certificate) and
removed by ``rex trust rm``. Trust is direct: a certificate counts because its
fingerprint is here, not because of who issued it. Validity is checked again
at every verification, since a certificate expires after it was added.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rexcarcer.base import sign
from rexcarcer.base.manifest import HEX64
from rexcarcer.base.sign import CertInfo
from rexcarcer.errors import Conflict, NotFound, StateError, UsageError
from rexcarcer.fsutil import atomic_write


def trust_dir(root: Path) -> Path:
    return root / "trust"


class TrustStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, fp: str) -> Path:
        return self.directory / f"{fp}.pem"

    def fingerprints(self) -> list[str]:
        try:
            names = sorted(p.name for p in self.directory.iterdir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"cannot read the trust directory {self.directory}: {exc}") from exc
        return [n[:-4] for n in names if n.endswith(".pem") and HEX64.match(n[:-4])]

    def get(self, fp: str) -> x509.Certificate | None:
        try:
            data = self._path(fp).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self._path(fp)}: {exc}") from exc
        cert = sign.load_certificate(data, str(self._path(fp)))
        if sign.fingerprint(cert) != fp:  # a hand-copied file under the wrong name
            raise StateError(
                f"{self._path(fp)} holds a certificate with another fingerprint",
                hint=f"remove it and add the certificate with `rex trust add`: {self.directory}",
            )
        return cert

    def list(self) -> list[CertInfo]:
        out = []
        for fp in self.fingerprints():
            cert = self.get(fp)
            if cert is not None:
                out.append(sign.describe(cert))
        return out

    def add(self, path: Path, when: datetime) -> CertInfo:
        cert = sign.load_certificate(sign.read_file(path, "certificate"), str(path))
        info = sign.describe(cert)
        sign.check_validity(info, when)
        if self._path(info.fingerprint).exists():
            raise Conflict(f"{info.subject} ({info.fingerprint}) is already trusted")
        pem = cert.public_bytes(serialization.Encoding.PEM)
        self._write(self._path(info.fingerprint), pem)
        return info

    def _write(self, dest: Path, data: bytes) -> None:
        try:
            atomic_write(dest, data, mode=0o644, make_parents=True)
        except OSError as exc:
            raise StateError(f"cannot write {dest}: {exc}") from exc

    def resolve(self, text: str) -> str:
        """A full fingerprint from one given with colons, in upper case, or as a
        unique prefix of at least 8 hex digits."""
        want = text.replace(":", "").strip().lower()
        if len(want) < 8 or any(c not in "0123456789abcdef" for c in want):
            raise UsageError(
                f"bad fingerprint {text!r}", hint="give at least 8 hex digits, see `rex trust ls`"
            )
        hits = [fp for fp in self.fingerprints() if fp.startswith(want)]
        if not hits:
            raise NotFound(f"no trusted certificate with fingerprint {text}", hint="rex trust ls")
        if len(hits) > 1:
            raise UsageError(f"fingerprint prefix {text} is ambiguous", hint="give more digits")
        return hits[0]

    def remove(self, text: str) -> CertInfo:
        fp = self.resolve(text)
        cert = self.get(fp)
        assert cert is not None
        try:
            self._path(fp).unlink()
        except OSError as exc:
            raise StateError(f"cannot remove {self._path(fp)}: {exc}") from exc
        return sign.describe(cert)
