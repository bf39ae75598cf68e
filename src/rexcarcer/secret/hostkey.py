"""Which key pair is this host's, for sealed secrets. The one place that knows:
if the host's keys move (pki/, cluster/tls.py), only this module changes.

Today it is the key of the host's agent TLS certificate
(``$REX_ROOT/agent-tls/host.key``, ECDSA P-256, issued from the cluster CA by
cluster/tls.py). That key is issued again now and then (tls.REISSUE_AFTER, or
a new address, a renewal by the CA host); publish.py's ``keep_sealing_key``
wraps every call that may issue it (cluster/tls.py ``ensure``, the agent's
renewal, ``rex cluster join`` and ``renew``), and seals this host's copies to
the new key before the old one is forgotten.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from rexcarcer.cluster.tls import TlsFiles
from rexcarcer.config import Config
from rexcarcer.errors import RexError
from rexcarcer.pki.keys import load_private_key
from rexcarcer.secret import SecretError


def key_path(config: Config) -> Path:
    return TlsFiles.under(config.root).key


def private_key(config: Config) -> ec.EllipticCurvePrivateKey:
    """This host's private key; a SecretError when it has none (yet)."""
    path = key_path(config)
    if not path.exists():
        raise SecretError(
            f"host {config.host} has no key to open sealed secrets ({path} is missing)",
            hint="start `rex agent` on this host: it issues the host's key and publishes it",
        )
    try:
        key = load_private_key(path)
    except RexError as exc:
        raise SecretError(
            f"cannot load host {config.host}'s key: {exc.message}", hint=exc.hint
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SecretError(
            f"host {config.host}'s key {path} is not an EC key: secrets are sealed with ECDH"
        )
    return key


def private_key_or_none(config: Config) -> ec.EllipticCurvePrivateKey | None:
    try:
        return private_key(config)
    except SecretError:
        return None
