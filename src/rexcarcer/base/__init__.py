"""Published, signed bases (DESIGN section 3).

A published base at URL ``U`` is four kinds of files: ``U.zfs.bz2`` (a ``zfs
send`` stream, bzip2-compressed) and optional increments ``U.from-V.zfs.bz2``
(``zfs send -i @V``), ``U.base`` (metadata), ``U.sha256`` (the manifest: the
SHA-256 of those) and ``U.sha256sig.<fingerprint>`` (one per signer: a plain
``openssl dgst -sha256 -sign`` signature over the manifest). A base has versions
(versions.py); a new one arrives as an increment when the host has its source.

::

    manifest.py  pure: locations, the manifest and metadata formats, the stream header
    sign.py      certificates, fingerprints, openssl-compatible signatures (cryptography)
    trust.py     the trust directory: ``rex trust add / ls / rm``, validity checks
    fetch.py     sources (http, https, file) and the cached, resumable download
    progress.py  transfer progress: a rich bar on a terminal, quiet lines otherwise
    verify.py    manifest -> pin -> signatures -> metadata: what may be received
    receive.py   increment or full stream -> download -> digest -> bunzip2 | zfs receive -u
    versions.py  the versions of a base: layout, properties, which is current
    local.py     local bases: import (a new version too), find, list, remove
    tree.py      a new version's tree written over the old one, only what changed
    publish.py   ``rex base publish`` / ``rex base sign``: write the files
    release.py   ``rex base import-release``: a FreeBSD release directory (MANIFEST)

Errors (exit codes unique in the tree)::

    RexError
    ├── FetchError (40)          a download failed: HTTP status, connection, interrupted
    └── VerificationError (41)   unsigned, untrusted, bad signature, digest mismatch,
                                 malformed manifest or metadata, not a ZFS stream
"""

from __future__ import annotations

from rexcarcer.errors import RexError


class FetchError(RexError):
    """A download failed: HTTP status, refused connection, interrupted transfer."""

    exit_code = 40


class VerificationError(RexError):
    """A base is not what its signed manifest says, or nobody trusted signed it."""

    exit_code = 41
