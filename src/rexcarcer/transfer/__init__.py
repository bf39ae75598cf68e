"""Jails between hosts: the signed export file of ``rex export`` / ``rex import``
(docs/volumes.md has the format). ``rex move`` carries the same datasets
through the agents instead (engine/moving.py).

::

    manifest.py  pure: what an export says (the jail's record, its parts, who, when)
    archive.py   the file: header (manifest, signature, signer chain), then the
                 zfs send streams; writing, reading, checking sizes and digests
    signer.py    the exporting host's key and certificate; whose signature an
                 import accepts (the cluster CA, or a `rex trust` anchor)

Errors (exit codes unique in the tree)::

    RexError
    ├── TransferError (50)            an export cannot be written or read (not a file,
    │                                 no host certificate to sign with, I/O)
    └── VerificationError (41)
        └── ArchiveRejected (53)      truncated, tampered, unsigned or signed by a
                                      host this one does not trust: nothing received
"""

from __future__ import annotations

from rexcarcer.base import VerificationError
from rexcarcer.errors import RexError


class TransferError(RexError):
    """An export cannot be written or read: not a file, no certificate to sign
    it with, an I/O error (exit 50)."""

    exit_code = 50


class ArchiveRejected(VerificationError):
    """An export that is truncated, altered, unsigned, or signed by a host this
    one does not trust; refused before anything is received (exit 53)."""

    exit_code = 53
