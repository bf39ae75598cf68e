"""Where a jail's TLS library finds a CA: OpenSSL's hashed directory
(``/etc/ssl/certs/HASH.N``, c_rehash(1)), written through jailfs."""

from __future__ import annotations

import re
from pathlib import Path

from rexcarcer import jailfs
from rexcarcer.errors import CommandFailed, UnsafePath
from rexcarcer.run import Runner

TRUST_DIR = "/etc/ssl/certs"


def subject_hash(runner: Runner, pem: bytes) -> str:
    """OpenSSL's subject hash of the certificate, from the host's openssl (the
    CA is rex's own file; nothing of the jail is read)."""
    # certctl.sh create_trusted uses the same: `openssl x509 -noout -subject_hash`
    try:
        digest = runner.run(["openssl", "x509", "-noout", "-subject_hash"], input=pem).stdout
    except CommandFailed as exc:
        raise UnsafePath(f"openssl cannot read the cluster CA: {exc.stderr}") from exc
    digest = digest.strip()
    if not re.fullmatch(r"[0-9a-f]{8}", digest):
        raise UnsafePath(f"unexpected subject hash from openssl: {digest!r}")
    return digest


def slot(root: Path, digest: str, content: bytes) -> str:
    """``/etc/ssl/certs/HASH.N``: ours if it holds these bytes, else the first
    free N. A name the jail made into anything but a regular file is skipped,
    never followed or replaced."""
    for n in range(10):
        inside = f"{TRUST_DIR}/{digest}.{n}"
        if jailfs.stat_small(root, inside) is None or jailfs.read_small(root, inside) == content:
            return inside
    raise UnsafePath(f"no free {TRUST_DIR}/{digest}.N in the jail (0-9 are taken)")
