"""Sources of published files (http, https, file) and the cached download.

Small files (manifest, metadata, signatures, a release MANIFEST) are read into
memory with a size limit. A big file goes into the cache under the state
directory, named by the SHA-256 its signed manifest gives: ``<digest><suffix>``
once complete and verified, ``<digest><suffix>.part`` while it downloads. A
partial file is resumed with an HTTP ``Range`` request; a server that answers
the whole file instead restarts it cleanly. The hash is computed while the
bytes arrive, so the file is not read again to check it. Only a file whose
digest matched is renamed to its final name. A cache entry found there is
hashed again before it is used (a disk error or a hand since may have changed
it): one that no longer matches is removed and downloaded again. Nothing in the
cache is trusted by its name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from rexcarcer.base import FetchError, VerificationError
from rexcarcer.base.progress import Transfer, human
from rexcarcer.errors import StateError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("rexcarcer.fetch")
CHUNK = 1 << 20
ATTEMPTS = 3
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class Interrupted(Exception):
    """A transfer stopped early; the ``.part`` file keeps what arrived."""


class Source(Protocol):
    def get(self, url: str, *, limit: int, missing_ok: bool = False) -> bytes | None:
        """The whole (small) file; None if missing and ``missing_ok``."""
        ...

    def download(self, url: str, part: Path, transfer: Transfer, label: str) -> Hash:
        """Complete ``part`` from its current size (or restart it); return the hash
        of the whole file. Raises ``Interrupted`` when the transfer stops early."""
        ...

    def listing(self, url: str) -> str | None:
        """The directory listing at ``url`` as text, if the source offers one."""
        ...

    def close(self) -> None: ...


# -- http and https ---------------------------------------------------------------


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """The system's CA store (``SSL_CERT_FILE`` honoured), or the configured bundle."""
    try:
        if ca_bundle is not None:
            return ssl.create_default_context(cafile=str(ca_bundle))
        return ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(
            f"cannot load the CA bundle {ca_bundle}: {exc}",
            hint="ca_bundle (REX_CA_BUNDLE) names a PEM file of CA certificates",
        ) from exc


def http_client(
    ca_bundle: Path | None, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    import httpx

    from rexcarcer import __version__

    return httpx.Client(
        verify=ssl_context(ca_bundle),
        timeout=httpx.Timeout(30.0, connect=10.0),
        follow_redirects=True,
        # Range offsets count the bytes of the file itself, never of an encoding
        headers={"User-Agent": f"rexcarcer/{__version__}", "Accept-Encoding": "identity"},
        transport=transport,
    )


def _host(url: str) -> str:
    return urlsplit(url).netloc


def translate(exc: Exception, url: str) -> FetchError:
    """An httpx transport error → a FetchError that says what happened."""
    import httpx

    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            return FetchError(
                f"the TLS certificate of {_host(url)} could not be verified: {text}",
                hint="if it is issued by a private CA, set ca_bundle in rexcarcer.toml "
                "(or REX_CA_BUNDLE) to that CA's PEM file",
            )
        return FetchError(f"cannot connect to {_host(url)}: {text}", hint="is the server up?")
    if isinstance(exc, httpx.TimeoutException):
        return FetchError(f"{url}: timed out ({type(exc).__name__})", hint="try again later")
    return FetchError(f"{url}: {text}")


def _status_error(url: str, status: int, reason: str) -> FetchError:
    if status == 404:
        return FetchError(f"{url} not found (HTTP 404)", hint="check the URL")
    if status >= 500:
        return FetchError(f"{url}: server error HTTP {status} {reason}", hint="try again later")
    return FetchError(f"{url}: HTTP {status} {reason}")


class HttpSource:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def get(self, url: str, *, limit: int, missing_ok: bool = False) -> bytes | None:
        import httpx

        log.debug("GET %s", url)
        try:
            with self.client.stream("GET", url) as resp:
                if resp.status_code == 404 and missing_ok:
                    return None
                if resp.status_code != 200:
                    raise _status_error(url, resp.status_code, resp.reason_phrase)
                return _read_limited(resp.iter_bytes(), url, limit)
        except httpx.HTTPError as exc:
            raise translate(exc, url) from exc

    def download(self, url: str, part: Path, transfer: Transfer, label: str) -> Hash:
        import httpx

        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        log.debug("GET %s %s", url, headers.get("Range", ""))
        try:
            with self.client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 416 and have:  # our part is longer than the file
                    part.unlink()
                    return self.download(url, part, transfer, label)
                if resp.status_code not in (200, 206):
                    raise _status_error(url, resp.status_code, resp.reason_phrase)
                start = _resume_offset(resp.status_code, resp.headers, have, url)
                length = resp.headers.get("content-length")
                total = start + int(length) if length and length.isdigit() else None
                return _write(part, start, resp.iter_bytes(), transfer, label, total)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as exc:
            raise Interrupted(str(exc) or type(exc).__name__) from exc
        except httpx.HTTPError as exc:
            raise translate(exc, url) from exc

    def listing(self, url: str) -> str | None:
        try:
            data = self.get(url, limit=4 * CHUNK, missing_ok=True)
        except (FetchError, VerificationError):  # no listing is an answer too
            return None
        return data.decode("utf-8", "replace") if data is not None else None

    def close(self) -> None:
        self.client.close()


def _resume_offset(status: int, headers: httpx.Headers, have: int, url: str) -> int:
    """Where the body starts: ``have`` for a matching 206, 0 for a 200 (restart)."""
    if status == 200:
        return 0
    m = _CONTENT_RANGE.match(headers.get("content-range", ""))
    if not m or int(m.group(1)) != have:
        raise FetchError(
            f"{url}: the server answered a resume with a wrong range "
            f"({headers.get('content-range')!r} for bytes={have}-)"
        )
    return have


def _read_limited(chunks: Iterator[bytes], url: str, limit: int) -> bytes:
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        if len(buf) > limit:
            raise VerificationError(
                f"{url} is larger than {human(limit)}", hint="is this URL a rex base?"
            )
    return bytes(buf)


def _write(
    part: Path, start: int, chunks: Iterator[bytes], transfer: Transfer, label: str,
    total: int | None,
) -> Hash:  # fmt: skip
    hasher = _hash_prefix(part, start)
    transfer.start(label, total, start)
    try:
        with part.open("r+b" if start else "wb") as out:
            out.seek(start)
            out.truncate()
            for chunk in chunks:
                out.write(chunk)
                hasher.update(chunk)
                transfer.advance(len(chunk))
    finally:
        transfer.finish()
    return hasher


def _hash_prefix(part: Path, start: int) -> Hash:
    """The hash of the bytes already there: read once, and only on a resume."""
    hasher = hashlib.sha256()
    if start:
        with part.open("rb") as f:
            left = start
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise Interrupted(f"{part} shrank while resuming")
                hasher.update(chunk)
                left -= len(chunk)
    return hasher


# -- file ---------------------------------------------------------------------------


def file_path(url: str) -> Path:
    return Path(unquote(urlsplit(url).path))


class FileSource:
    def get(self, url: str, *, limit: int, missing_ok: bool = False) -> bytes | None:
        path = file_path(url)
        try:
            with path.open("rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError as exc:
            if missing_ok:
                return None
            raise FetchError(f"{path} does not exist", hint="check the URL") from exc
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if len(data) > limit:
            raise VerificationError(f"{path} is larger than {human(limit)}")
        return data

    def download(self, url: str, part: Path, transfer: Transfer, label: str) -> Hash:
        path = file_path(url)
        try:
            with path.open("rb") as src:
                size = os.fstat(src.fileno()).st_size
                return _write(part, 0, iter(lambda: src.read(CHUNK), b""), transfer, label, size)
        except FileNotFoundError as exc:
            raise FetchError(f"{path} does not exist", hint="check the URL") from exc
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def listing(self, url: str) -> str | None:
        try:
            return "\n".join(sorted(os.listdir(file_path(url))))
        except OSError:
            return None

    def close(self) -> None:
        pass


def open_source(url: str, ca_bundle: Path | None) -> Source:
    if url.startswith("file:"):
        return FileSource()
    return HttpSource(http_client(ca_bundle))


# -- the cache ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wanted:
    url: str
    sha256: str  # from the signed manifest (or the release MANIFEST)
    suffix: str  # ".zfs.bz2", ".txz"
    size: int | None = None  # from the metadata, when it says

    @property
    def label(self) -> str:
        return "downloading " + self.url.rsplit("/", 1)[-1]


def cache_entry(cache: Path, want: Wanted) -> Path:
    return cache / f"{want.sha256}{want.suffix}"


def cached_download(source: Source, want: Wanted, cache: Path, transfer: Transfer) -> Path:
    """The verified file in the cache: already there (and hashed again), resumed,
    or downloaded."""
    final = cache_entry(cache, want)
    if not final.exists():
        return _download(source, want, final, transfer)
    problem = _check_entry(final, want, transfer)
    if problem is None:
        return final
    log.warning("cached %s does not match its manifest (%s): removed, downloading again",
                final, problem)  # fmt: skip
    try:
        final.unlink(missing_ok=True)
    except OSError as exc:
        raise StateError(f"cannot remove the damaged cache entry {final}: {exc}") from exc
    try:
        return _download(source, want, final, transfer)
    except (FetchError, VerificationError) as exc:
        raise type(exc)(
            f"the cached copy of {want.url} no longer matched its manifest ({problem}) and "
            f"was removed; downloading it again failed: {exc.message}",
            hint=exc.hint,
        ) from exc


def _check_entry(final: Path, want: Wanted, transfer: Transfer) -> str | None:
    """Why the cache entry ``final`` is not the file the manifest names, or None."""
    hasher = hashlib.sha256()
    transfer.start("checking cached " + want.url.rsplit("/", 1)[-1], final.stat().st_size)
    try:
        with final.open("rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                hasher.update(chunk)
                transfer.advance(len(chunk))
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    finally:
        transfer.finish()
    return _check(final, hasher, want)


def _download(source: Source, want: Wanted, final: Path, transfer: Transfer) -> Path:
    cache = final.parent
    part = final.with_name(final.name + ".part")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create the download cache {cache}: {exc}") from exc
    resumed = part.exists() and part.stat().st_size > 0
    hasher = _download_with_retries(source, want, part, transfer)
    problem = _check(part, hasher, want)
    if problem and resumed:  # the old part may be of other content: once more from zero
        log.debug("%s after a resume; downloading %s again", problem, want.url)
        part.unlink()
        problem = _check(part, _download_with_retries(source, want, part, transfer), want)
    if problem:
        part.unlink(missing_ok=True)
        raise VerificationError(
            f"{want.url} does not match its manifest: {problem}",
            hint="the file was tampered with or damaged on the server; nothing was kept",
        )
    os.replace(part, final)
    return final


def _download_with_retries(source: Source, want: Wanted, part: Path, transfer: Transfer) -> Hash:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return source.download(want.url, part, transfer, want.label)
        except Interrupted as exc:
            got = part.stat().st_size if part.exists() else 0
            log.debug("attempt %d of %s interrupted at %d bytes: %s", attempt, want.url, got, exc)
            if attempt == ATTEMPTS:
                of = f" of {want.size}" if want.size is not None else ""
                raise FetchError(
                    f"download of {want.url} was interrupted after {got}{of} bytes "
                    f"({ATTEMPTS} attempts): {exc}",
                    hint="run the command again: it resumes where it stopped",
                ) from exc
        except OSError as exc:
            raise StateError(f"cannot write {part}: {exc.strerror or exc}") from exc
    raise AssertionError("unreachable")


def _check(part: Path, hasher: Hash, want: Wanted) -> str | None:
    size = part.stat().st_size
    if want.size is not None and size != want.size:
        kind = "truncated" if size < want.size else "too long"
        return f"{kind}: {size} bytes, the metadata says {want.size}"
    digest = hasher.hexdigest()
    if digest != want.sha256:
        return f"sha256 {digest}, the manifest says {want.sha256}"
    return None


def remove_entry(cache: Path, want: Wanted) -> None:
    """Forget a cached file whose content turned out unusable."""
    entry = cache_entry(cache, want)
    entry.unlink(missing_ok=True)
    entry.with_name(entry.name + ".part").unlink(missing_ok=True)
