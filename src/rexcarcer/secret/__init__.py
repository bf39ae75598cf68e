"""Secrets: ``SECRET <name>`` in a ``.rex`` file, its value set on the host with
``rex secret set <name>`` (standard input only), delivered to the jail as
``/run/secrets/<name>`` (0400, on a tmpfs: runtime/secretfs.py).

A value is never in the state store, the jail record, a log, a plan, ``rex ls``
or an error: those hold names.

::

    files.py    one host: $REX_ROOT/secrets/<name>, 0600, in a 0700 directory
    seal.py     pure: a value sealed to one host's public key (ECDH P-256 with a
                fresh key, HKDF-SHA256, AES-256-GCM), and opened again
    hostkey.py  which key is this host's (the one place that knows)
    cluster.py  a cluster: secrets/<name> in etcd, one sealed copy per host;
                sealkeys/<host>, the key each host publishes; the placement check
    source.py   what the engine and ``rex secret`` use: files or the cluster

Errors::

    RexError
    └── SecretError (70)   an unknown secret, one this host cannot open, a bad value
"""

from __future__ import annotations

from rexcarcer.errors import RexError


class SecretError(RexError):
    """A secret is unknown, cannot be opened on this host, or its value is
    refused (exit 70). Messages name secrets and hosts, never a value."""

    exit_code = 70
