"""Manifest → pin → signatures → metadata, on bases published into a directory
the way a publisher using only sha256sum and openssl would."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import httpx
import pytest

from rexcarcer.base import FetchError, VerificationError
from rexcarcer.base.fetch import FileSource, HttpSource, http_client
from rexcarcer.base.manifest import parse_location
from rexcarcer.base.sign import now
from rexcarcer.base.trust import TrustStore
from rexcarcer.base.verify import Verified, verify_remote
from tests.base_support import (
    Signer,
    dated_signer,
    fake_zfs_stream,
    openssl_signer,
    resign,
    write_published,
)


class _NoListing(FileSource):
    """A source that cannot list directories (an HTTP server without autoindex)."""

    def listing(self, url: str) -> str | None:
        return None


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return openssl_signer(tmp_path / "keys", "publisher", "rsa")


@pytest.fixture
def trust(tmp_path: Path, signer: Signer) -> TrustStore:
    store = TrustStore(tmp_path / "trust")
    store.add(signer.cert, now())
    return store


def _verify(base: Path, trust: TrustStore, pin: str | None = None,
            source: FileSource | None = None) -> Verified:  # fmt: skip
    loc = parse_location(f"file://{base}")
    return verify_remote(source or FileSource(), loc, trust, pin=pin, when=now())


def test_a_signed_base_verifies(tmp_path: Path, signer: Signer, trust: TrustStore) -> None:
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream(), signers=(signer,))
    v = _verify(base, trust)
    assert v.metadata.name == "fb" and v.metadata.version == "1"
    assert [s.fingerprint for s in v.signers] == [signer.fingerprint]
    assert v.digest == hashlib.sha256(Path(f"{base}.sha256").read_bytes()).hexdigest()
    assert _verify(base, trust, pin=v.digest).digest == v.digest


def test_pin_mismatch(tmp_path: Path, signer: Signer, trust: TrustStore) -> None:
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream(), signers=(signer,))
    with pytest.raises(VerificationError, match="but the pin says sha256:0000"):
        _verify(base, trust, pin="0" * 64)


def test_no_signature_file(tmp_path: Path, trust: TrustStore) -> None:
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream())
    with pytest.raises(VerificationError, match=r"is not signed: there is no fb\.sha256sig"):
        _verify(base, trust)
    with pytest.raises(VerificationError, match="has no signature by a trusted signer"):
        _verify(base, trust, source=_NoListing())


def test_untrusted_signer(tmp_path: Path, signer: Signer, trust: TrustStore) -> None:
    stranger = openssl_signer(tmp_path / "keys", "stranger", "ec")
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream(), signers=(stranger,))
    with pytest.raises(VerificationError, match="signed only by signers this host does not trust")\
            as err:  # fmt: skip
        _verify(base, trust)
    assert stranger.fingerprint in err.value.message
    assert signer.fingerprint not in err.value.message


def _respell(base: Path, signer: Signer, spelled: str) -> None:
    """Rename the signature file as a publisher might: the hex in another case."""
    assert spelled.lower() == signer.fingerprint
    Path(f"{base}.sha256sig.{signer.fingerprint}").rename(f"{base}.sha256sig.{spelled}")


def _mixed(fp: str) -> str:
    return "".join(c.upper() if i % 2 else c for i, c in enumerate(fp))


@pytest.mark.parametrize("source", [FileSource(), _NoListing()], ids=["listing", "no listing"])
def test_an_upper_case_signature_name_verifies(
    tmp_path: Path, signer: Signer, trust: TrustStore, source: FileSource
) -> None:
    """``openssl x509 -fingerprint -sha256`` prints upper case: with the colons
    removed, that is the file name a publisher writes."""
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream(), signers=(signer,))
    _respell(base, signer, signer.fingerprint.upper())
    v = _verify(base, trust, source=source)
    assert [s.fingerprint for s in v.signers] == [signer.fingerprint]


def test_any_case_is_found_through_the_listing(
    tmp_path: Path, signer: Signer, trust: TrustStore
) -> None:
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream(), signers=(signer,))
    _respell(base, signer, _mixed(signer.fingerprint))
    assert [s.subject for s in _verify(base, trust).signers] == ["publisher"]
    # without a listing only the two usual spellings can be tried
    with pytest.raises(VerificationError, match="has no signature by a trusted signer"):
        _verify(base, trust, source=_NoListing())


def test_a_bad_signature_in_upper_case_is_still_bad(
    tmp_path: Path, signer: Signer, trust: TrustStore
) -> None:
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream(), signers=(signer,))
    _respell(base, signer, signer.fingerprint.upper())
    manifest = Path(f"{base}.sha256")
    manifest.write_bytes(manifest.read_bytes().replace(b"  fb.base", b" *fb.base"))
    with pytest.raises(VerificationError, match=r"bad signature on .*fb.sha256 by publisher"):
        _verify(base, trust)


class _ListsAMissingFile(FileSource):
    """A listing that names a signature file the source cannot serve."""

    def __init__(self, extra: str) -> None:
        self.extra = extra

    def listing(self, url: str) -> str | None:
        return (super().listing(url) or "") + "\n" + self.extra


def test_a_listed_but_unreadable_trusted_signature_is_not_called_untrusted(
    tmp_path: Path, signer: Signer, trust: TrustStore
) -> None:
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream())
    source = _ListsAMissingFile(f"fb.sha256sig.{_mixed(signer.fingerprint)}")
    with pytest.raises(VerificationError) as err:
        _verify(base, trust, source=source)
    assert "does not trust" not in err.value.message
    assert err.value.message.endswith(
        f"lists a signature by a trusted signer ({signer.fingerprint}), but it could not be read"
    )


def test_an_upper_case_signature_over_http_without_a_listing(
    tmp_path: Path, signer: Signer, trust: TrustStore
) -> None:
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream(), signers=(signer,))
    _respell(base, signer, signer.fingerprint.upper())
    asked: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:  # no autoindex: a directory is 404
        asked.append(request.url.path)
        path = tmp_path / "pub" / request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, content=path.read_bytes()) if path.is_file() else \
            httpx.Response(404)  # fmt: skip

    source = HttpSource(http_client(None, transport=httpx.MockTransport(serve)))
    v = verify_remote(source, parse_location("https://bases.test/pub/fb"), trust, pin=None,
                      when=now())  # fmt: skip
    assert [s.fingerprint for s in v.signers] == [signer.fingerprint]
    fp = signer.fingerprint
    assert [a for a in asked if "sha256sig" in a] == [
        f"/pub/fb.sha256sig.{fp}", f"/pub/fb.sha256sig.{fp.upper()}"]  # fmt: skip


def test_bad_signature(tmp_path: Path, signer: Signer, trust: TrustStore) -> None:
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream(), signers=(signer,))
    manifest = Path(f"{base}.sha256")
    manifest.write_bytes(manifest.read_bytes().replace(b"  fb.base", b" *fb.base"))
    with pytest.raises(VerificationError, match=r"bad signature on .*fb.sha256 by publisher"):
        _verify(base, trust)


def test_tampered_metadata(tmp_path: Path, signer: Signer, trust: TrustStore) -> None:
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream(), signers=(signer,))
    Path(f"{base}.base").write_bytes(b"name=fb\nversion=2\n")
    with pytest.raises(VerificationError, match=r"metadata .*fb\.base does not match the signed"):
        _verify(base, trust)


def test_manifest_listing_other_files(tmp_path: Path, signer: Signer, trust: TrustStore) -> None:
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream(), signers=(signer,))
    manifest = Path(f"{base}.sha256")
    manifest.write_bytes(manifest.read_bytes() + b"0" * 64 + b"  install.sh\n")
    resign(base, (signer,))
    with pytest.raises(VerificationError, match=r"lists another file, 'install\.sh'"):
        _verify(base, trust)


def test_name_escaping_the_layout(tmp_path: Path, signer: Signer, trust: TrustStore) -> None:
    base = write_published(
        tmp_path / "pub", "fb", fake_zfs_stream(), signers=(signer,), name="../../jails"
    )
    with pytest.raises(VerificationError, match="would escape the dataset layout"):
        _verify(base, trust)


def test_expired_trusted_signer(tmp_path: Path, trust: TrustStore) -> None:
    old = dated_signer(tmp_path / "keys", "old", start_days=-90, end_days=-1)
    shutil.copy(old.cert, trust.directory / f"{old.fingerprint}.pem")  # trusted, then expired
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream(), signers=(old,))
    with pytest.raises(VerificationError, match=r"signed, but the certificate of old .* expired"):
        _verify(base, trust)


def test_one_good_signature_is_enough(tmp_path: Path, signer: Signer, trust: TrustStore) -> None:
    other = openssl_signer(tmp_path / "keys", "other", "ec")
    trust.add(other.cert, now())
    base = write_published(tmp_path / "pub", "fb", fake_zfs_stream(), signers=(signer, other))
    Path(f"{base}.sha256sig.{other.fingerprint}").write_bytes(b"garbage")
    assert [s.subject for s in _verify(base, trust).signers] == ["publisher"]


def test_missing_manifest_is_a_fetch_error(tmp_path: Path, trust: TrustStore) -> None:
    with pytest.raises(FetchError, match="no base is published at"):
        _verify(tmp_path / "nothing", trust)
