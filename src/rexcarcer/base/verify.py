"""What may be received: the manifest, its pin, its signatures, the metadata.

Order (each step only runs when the one before it passed):

1. the manifest ``U.sha256`` (small); with a pin, its SHA-256 must equal the pin;
2. a signature ``U.sha256sig.<fp>`` for each trusted fingerprint: at least one
   must verify over the manifest bytes, by a certificate valid now;
3. the manifest must list exactly ``NAME.base`` and ``NAME.zfs.bz2``;
4. the metadata ``U.base`` must have the listed digest, and a name and version
   that stay inside ``bases/<name>@<version>``.

The stream's digest is checked as it downloads, or for a cache entry already
there by hashing it again (fetch.py), before ``zfs receive``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from rexcarcer.base import FetchError, VerificationError
from rexcarcer.base import sign as signing
from rexcarcer.base.fetch import Source
from rexcarcer.base.manifest import (
    MAX_SMALL_FILE,
    Location,
    Manifest,
    Metadata,
    parse_manifest,
    parse_metadata,
)
from rexcarcer.base.sign import CertInfo
from rexcarcer.base.trust import TrustStore

MAX_SIGNATURE = 16 * 1024


@dataclass(frozen=True, slots=True)
class Verified:
    location: Location
    digest: str  # SHA-256 of the manifest: what a pin names, recorded on the base
    manifest: Manifest
    metadata: Metadata
    signers: tuple[CertInfo, ...]


def verify_remote(
    source: Source, loc: Location, trust: TrustStore, *, pin: str | None, when: datetime
) -> Verified:
    manifest_bytes = _manifest(source, loc)
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    if pin is not None and digest != pin:
        raise VerificationError(
            f"the manifest of {loc.url} has digest sha256:{digest}, but the pin says sha256:{pin}",
            hint="the base was republished or altered: check with its publisher, then update "
            "the pin",
        )
    signers = check_signatures(source, loc, manifest_bytes, trust, when)
    manifest = parse_manifest(manifest_bytes, loc)
    meta_bytes = source.get(loc.metadata, limit=MAX_SMALL_FILE)
    assert meta_bytes is not None
    meta_digest = hashlib.sha256(meta_bytes).hexdigest()
    if meta_digest != manifest.metadata_sha256:
        raise VerificationError(
            f"metadata {loc.metadata} does not match the signed manifest "
            f"(sha256 {meta_digest}, the manifest says {manifest.metadata_sha256})",
            hint="the metadata was tampered with or damaged; nothing was received",
        )
    metadata = parse_metadata(meta_bytes, loc.metadata)
    return Verified(loc, digest, manifest, metadata, signers)


def _manifest(source: Source, loc: Location) -> bytes:
    data = source.get(loc.manifest, limit=MAX_SMALL_FILE, missing_ok=True)
    if data is None:
        raise FetchError(
            f"no base is published at {loc.url}: {loc.manifest} not found",
            hint="a published base is NAME.sha256, NAME.base, NAME.zfs.bz2 and "
            "NAME.sha256sig.<fingerprint>; check the URL",
        )
    return data


def check_signatures(
    source: Source, loc: Location, manifest: bytes, trust: TrustStore, when: datetime
) -> tuple[CertInfo, ...]:
    """The trusted signers whose signatures verify; refuses when there is none."""
    good: list[CertInfo] = []
    problems: list[VerificationError] = []
    for fp in trust.fingerprints():
        signature = source.get(loc.signature(fp), limit=MAX_SIGNATURE, missing_ok=True)
        cert = trust.get(fp) if signature is not None else None
        if signature is None or cert is None:
            continue
        info = signing.describe(cert)
        if not signing.verify(manifest, signature, cert):
            problems.append(
                VerificationError(
                    f"bad signature on {loc.manifest} by {info.subject} ({fp[:16]}…): "
                    "the manifest or its signature was altered",
                    hint="do not use this base; tell its publisher",
                )
            )
            continue
        try:
            signing.check_validity(info, when)
        except VerificationError as exc:
            problems.append(VerificationError(f"{loc.url}: signed, but the {exc.message}",
                                              hint=exc.hint))  # fmt: skip
            continue
        good.append(info)
    if good:
        return tuple(good)
    if problems:
        raise problems[0]
    raise unsigned(source, loc, trust)


def unsigned(source: Source, loc: Location, trust: TrustStore) -> VerificationError:
    """Why no trusted signature was found, as precisely as the source lets us say."""
    listing = source.listing(loc.directory)
    if listing is not None:
        pattern = re.escape(loc.stem) + r"\.sha256sig\.([0-9a-fA-F]{64})\b"
        others = sorted({fp.lower() for fp in re.findall(pattern, listing)})
        if others:
            return VerificationError(
                f"{loc.url} is signed only by signers this host does not trust: "
                + ", ".join(others),
                hint="if you trust the signer, check its fingerprint with the publisher and "
                "run `rex trust add CERT`",
            )
        return VerificationError(
            f"{loc.url} is not signed: there is no {loc.stem}.sha256sig.<fingerprint> beside it",
            hint="rex refuses unsigned bases; its publisher signs it with `rex base publish` "
            "or openssl (docs/bases.md)",
        )
    count = len(trust.fingerprints())
    return VerificationError(
        f"{loc.url} has no signature by a trusted signer (looked for {loc.stem}.sha256sig.<fp> "
        f"for the {count} certificate(s) in the trust directory)",
        hint="`rex trust ls` lists them; `rex trust add CERT` adds the publisher's certificate",
    )
