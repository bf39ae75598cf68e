"""What the registry records about a jail certificate (pki/registry.py), and the
jail's identity files. Free of ``cryptography`` at import: pki/hook.py is
imported at every CLI start."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509

    from rexcarcer.pki.identity import Identity

SSL_DIR = "/etc/ssl/rc"
KEY, CERT, TRUST = "host.key", "host.crt", "cluster.crt"


def cert_record(cert: x509.Certificate, ident: Identity, issuer: str) -> dict[str, Any]:
    """``pki/certs/<jail>`` for ``cert`` issued to ``ident`` by the CA ``issuer``
    (its key's SPKI SHA-256, pki/hook.py ``issuer_id``)."""
    from rexcarcer.pki.keys import cert_pem, fingerprint, spki_sha256

    return {
        "jail": ident.jail, "serial": format(cert.serial_number, "x"),
        "fingerprint": fingerprint(cert), "issuer": issuer,
        "identity": ident.as_json(), "spki": spki_sha256(cert.public_key()),
        "not_before": int(cert.not_valid_before_utc.timestamp()),
        "not_after": int(cert.not_valid_after_utc.timestamp()),
        "pem": cert_pem(cert).decode(),
    }  # fmt: skip


def key_file(root: Path) -> list[int] | None:
    """What identifies the key file rex wrote (no key material): inode, size, mtime."""
    from rexcarcer.jailfs import stat_small

    st = stat_small(root, f"{SSL_DIR}/{KEY}")
    return None if st is None else [st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode]
