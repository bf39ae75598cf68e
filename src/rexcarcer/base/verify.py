"""What may be received: the manifest, its pin, its signatures, the metadata.

Order (each step only runs when the one before it passed):

1. the manifest ``U.sha256`` (small); with a pin, its SHA-256 must equal the pin;
2. a signature ``U.sha256sig.<fp>`` for each trusted fingerprint (the hex in
   any case): at least one must verify over the manifest bytes, by a
   certificate valid now;
3. the manifest must list ``NAME.base``, ``NAME.zfs.bz2`` and increments
   ``NAME.from-V.zfs.bz2``, nothing else;
4. the metadata ``U.base`` must have the listed digest, and a name and version
   that stay inside ``bases/<name>@<version>``; it describes exactly the
   increments the manifest lists (the version and guid each applies to).

The digest of the stream received (the full one or an increment) is checked as
it downloads, or for a cache entry already there by hashing it again
(fetch.py), before ``zfs receive``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from cryptography import x509

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
    check_increments(manifest, metadata, loc)
    return Verified(loc, digest, manifest, metadata, signers)


def check_increments(manifest: Manifest, metadata: Metadata, loc: Location) -> None:
    """Every increment listed has its description in the metadata, and back."""
    listed = set(manifest.increments)
    described = {i.version for i in metadata.incremental_from}
    for version in sorted(listed - described):
        raise VerificationError(
            f"manifest {loc.manifest} lists the increment {loc.stem}.from-{version}.zfs.bz2, "
            f"but the metadata {loc.metadata} does not describe it",
            hint="incremental_from= names each increment's VERSION@GUID",
        )
    for version in sorted(described - listed):
        raise VerificationError(
            f"metadata {loc.metadata} describes an increment from {version} that the "
            f"manifest {loc.manifest} does not list",
            hint=f"list {loc.stem}.from-{version}.zfs.bz2 in the manifest (sha256sum)",
        )


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
    """The trusted signers whose signatures verify; refuses when there is none.

    A signature file is named by its signer's fingerprint in hex. rex writes lower
    case; ``openssl x509 -fingerprint -sha256`` prints upper case (with colons), so
    a publisher removing the colons writes upper case. Both spellings are tried
    (an HTTP server need not list its directory); when neither gives a good
    signature, any other spelling the directory listing shows is tried too (a
    ``file://`` directory, an autoindex): the case of the hex never matters."""
    fps = trust.fingerprints()
    good, problems = _verify_named(source, loc, manifest, trust, when,
                                   {fp: (fp, fp.upper()) for fp in fps})  # fmt: skip
    listing = None
    if not good:
        listing = source.listing(loc.directory)
        listed = listed_signatures(listing, loc)
        others = {fp: tuple(n for n in listed.get(fp, ()) if n not in (fp, fp.upper()))
                  for fp in fps}  # fmt: skip
        more_good, more_problems = _verify_named(source, loc, manifest, trust, when, others)
        good += more_good
        problems += more_problems
    if good:
        return tuple(good)
    if problems:
        raise problems[0]
    raise unsigned(loc, fps, listing)


def _verify_named(
    source: Source, loc: Location, manifest: bytes, trust: TrustStore, when: datetime,
    names: dict[str, tuple[str, ...]],
) -> tuple[list[CertInfo], list[VerificationError]]:  # fmt: skip
    """Try ``U.sha256sig.<name>`` for each trusted fingerprint's ``names`` (its
    spellings), until one verifies."""
    good: list[CertInfo] = []
    problems: list[VerificationError] = []
    for fp, spellings in names.items():
        for name in spellings:
            signature = source.get(loc.signature(name), limit=MAX_SIGNATURE, missing_ok=True)
            cert = trust.get(fp) if signature is not None else None
            if signature is None or cert is None:
                continue
            problem = _judge(loc, manifest, signature, cert, when)
            if problem is None:
                good.append(signing.describe(cert))
                break
            problems.append(problem)
    return good, problems


def _judge(
    loc: Location, manifest: bytes, signature: bytes, cert: x509.Certificate, when: datetime
) -> VerificationError | None:
    """Why this signature does not count, or None when it does."""
    info = signing.describe(cert)
    if not signing.verify(manifest, signature, cert):
        return VerificationError(
            f"bad signature on {loc.manifest} by {info.subject} ({info.fingerprint[:16]}…): "
            "the manifest or its signature was altered",
            hint="do not use this base; tell its publisher",
        )
    try:
        signing.check_validity(info, when)
    except VerificationError as exc:
        return VerificationError(f"{loc.url}: signed, but the {exc.message}", hint=exc.hint)
    return None


def listed_signatures(listing: str | None, loc: Location) -> dict[str, tuple[str, ...]]:
    """The signature files a directory listing names: lower-case fingerprint ->
    the hex as spelled in the file names."""
    if listing is None:
        return {}
    pattern = re.escape(loc.stem) + r"\.sha256sig\.([0-9a-fA-F]{64})\b"
    out: dict[str, tuple[str, ...]] = {}
    for spelled in sorted(set(re.findall(pattern, listing))):
        out[spelled.lower()] = (*out.get(spelled.lower(), ()), spelled)
    return out


def unsigned(loc: Location, trusted: list[str], listing: str | None) -> VerificationError:
    """Why no trusted signature was found, as precisely as the listing lets us say."""
    if listing is not None:
        listed = listed_signatures(listing, loc)
        unread = sorted(set(listed) & set(trusted))
        if unread:  # listed, yet no such file could be read (removed meanwhile, unreadable)
            return VerificationError(
                f"{loc.url} lists a signature by a trusted signer ({', '.join(unread)}), "
                "but it could not be read",
                hint="check the signature file on the server (its name and permissions), "
                "then try again",
            )
        others = sorted(set(listed) - set(trusted))
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
    return VerificationError(
        f"{loc.url} has no signature by a trusted signer (looked for {loc.stem}.sha256sig.<fp> "
        f"for the {len(trusted)} certificate(s) in the trust directory)",
        hint="`rex trust ls` lists them; `rex trust add CERT` adds the publisher's certificate",
    )
