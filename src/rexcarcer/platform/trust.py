"""Where a jail's TLS library finds a CA: OpenSSL's hashed directory
(``/etc/ssl/certs/HASH.N``, c_rehash(1)), written through jailfs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

from rexcarcer import jailfs
from rexcarcer.errors import CommandFailed, UnsafePath
from rexcarcer.fsutil import atomic_write
from rexcarcer.run import Runner

TRUST_DIR = "/etc/ssl/certs"
HASH_RE = re.compile(r"[0-9a-f]{8}")
CACHE_DIR = Path("cache") / "subject-hash"  # under the state directory

# Every jail start installs the same cluster CA, and openssl is a process of
# its own (about 20 ms). The hash is a function of the certificate's bytes, so
# it is remembered by their SHA-256: in this process (the agent's), and in
# ``$REX_ROOT/CACHE_DIR/<sha256>`` so that a `rex up` without the agent skips openssl too.
# Keyed by the content, an entry never goes stale; a new CA is a new key.
_MEMO: dict[str, str] = {}
_MEMO_MAX = 16  # a cluster has one CA; a few more while it is rotated


def subject_hash(runner: Runner, pem: bytes, cache_dir: Path | None = None) -> str:
    """OpenSSL's subject hash of the certificate, from the host's openssl (the
    CA is rex's own file; nothing of the jail is read). ``cache_dir``: rex's own
    directory (in the state directory, root's) where hashes are kept."""
    key = hashlib.sha256(pem).hexdigest()
    known = _MEMO.get(key)
    if known is not None:
        return known
    digest = _read_cached(cache_dir / key) if cache_dir is not None else None
    if digest is None:
        digest = _openssl_hash(runner, pem)
        if cache_dir is not None:
            # only a cache: when it cannot be written, the next process asks openssl
            with contextlib.suppress(OSError):
                atomic_write(cache_dir / key, digest + "\n", mode=0o644, make_parents=True)
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[key] = digest
    return digest


def _openssl_hash(runner: Runner, pem: bytes) -> str:
    # certctl.sh create_trusted uses the same: `openssl x509 -noout -subject_hash`
    try:
        digest = runner.run(["openssl", "x509", "-noout", "-subject_hash"], input=pem).stdout
    except CommandFailed as exc:
        raise UnsafePath(f"openssl cannot read the cluster CA: {exc.stderr}") from exc
    digest = digest.strip()
    if not HASH_RE.fullmatch(digest):
        raise UnsafePath(f"unexpected subject hash from openssl: {digest!r}")
    return digest


def _read_cached(path: Path) -> str | None:
    """The hash kept in ``path``, or None when there is none or it is not one
    (a torn or foreign file is ignored and rewritten, never trusted)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return text if HASH_RE.fullmatch(text) else None


def slot(root: Path, digest: str, content: bytes) -> str:
    """``/etc/ssl/certs/HASH.N``: ours if it holds these bytes, else the first
    free N. A name the jail made into anything but a regular file is skipped,
    never followed or replaced."""
    for n in range(10):
        inside = f"{TRUST_DIR}/{digest}.{n}"
        if jailfs.stat_small(root, inside) is None or jailfs.read_small(root, inside) == content:
            return inside
    raise UnsafePath(f"no free {TRUST_DIR}/{digest}.N in the jail (0-9 are taken)")
