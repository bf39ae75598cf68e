"""The cluster certificate authority and the per-jail TLS identity (DESIGN section 4).

::

    ca.py        the CA on disk under ``$REX_ROOT/ca/``: ``rex ca init`` (a new
                 ECDSA P-256 root, or a user-supplied intermediate), load, describe
    keys.py      key generation, loading and matching; the signing hash per key type
    issue.py     pure: a jail record -> the names and addresses of its certificate;
                 issuing a leaf; "is it time to renew"
    registry.py  the issued and revoked certificates in the state store
                 (``pki/certs/<jail>``, ``pki/revoked/<serial>``), and the CRL
    hook.py      the ``JailHook``: writes ``/etc/ssl/rc/{host.key,host.crt,cluster.crt}``
                 into the jail before it starts, revokes at destroy; ``renew``

``cryptography`` is imported only inside these modules, which the CLI and the
engine import lazily, so ``rex --help`` and ``rex ls`` do not pay for it.

Errors::

    RexError
    └── PkiError (29)   a bad CA key or certificate, an unusable intermediate,
                        a name that cannot go into a certificate
"""

from __future__ import annotations

from rexcarcer.errors import RexError


class PkiError(RexError):
    """A CA, key or certificate rex cannot use, or a name that cannot be a SAN.

    Lives beside the PKI code (as ``DnsError`` does beside DNS); its exit code is
    unique in the tree."""

    exit_code = 29
