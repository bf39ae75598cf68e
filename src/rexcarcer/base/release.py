"""``rex base import-release URL NAME``: a base from a FreeBSD release directory.

A release directory on the FreeBSD mirrors (``…/releases/amd64/14.1-RELEASE/``)
holds the distribution sets (``base.txz``, ``kernel.txz``, …) and ``MANIFEST``,
written by ``release/scripts/make-manifest.sh``: one tab-separated line per set,
``FILE  SHA256  FILE-COUNT  DIST  "DESCRIPTION"  on|off``.

``base.txz`` is checked against that MANIFEST before it is extracted. The
MANIFEST comes from the same mirror, so this is integrity (a damaged or
truncated download is caught), not authenticity (whoever controls the mirror
controls both). Publish the result as a signed rex base to get authenticity.
"""

from __future__ import annotations

from dataclasses import dataclass

from rexcarcer.base import VerificationError
from rexcarcer.base.fetch import Wanted, cached_download, open_source
from rexcarcer.base.local import check_base_name, create_base
from rexcarcer.base.manifest import HEX64, MAX_SMALL_FILE, parse_location
from rexcarcer.base.progress import Transfer, transfer_for
from rexcarcer.errors import Conflict
from rexcarcer.host import Host
from rexcarcer.model.base import BaseInfo

BASE_SET = "base.txz"
UNSIGNED = "none (release MANIFEST)"


@dataclass(frozen=True, slots=True)
class ReleaseEntry:
    file: str
    sha256: str
    count: int
    dist: str
    description: str
    default_on: bool


def parse_release_manifest(text: str, where: str = "MANIFEST") -> dict[str, ReleaseEntry]:
    out: dict[str, ReleaseEntry] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 6 or not HEX64.match(cols[1].lower()) or not cols[2].isdigit():
            raise VerificationError(
                f"{where}, line {number}: not a release MANIFEST line: {line[:80]!r}",
                hint='expected FILE, SHA256, COUNT, DIST, "DESCRIPTION", on|off, tab-separated',
            )
        entry = ReleaseEntry(
            file=cols[0], sha256=cols[1].lower(), count=int(cols[2]), dist=cols[3],
            description=cols[4].strip('"'), default_on=cols[5].strip() == "on",
        )  # fmt: skip
        if entry.file in out:
            raise VerificationError(f"{where}, line {number}: {entry.file} is listed twice")
        out[entry.file] = entry
    return out


def release_dir(url: str) -> str:
    """The release directory URL, ending in '/' (a trailing MANIFEST or base.txz is dropped)."""
    for tail in ("MANIFEST", BASE_SET):
        if url.endswith("/" + tail):
            url = url[: -len(tail)]
    url = url if url.endswith("/") else url + "/"
    return parse_location(url + BASE_SET).directory


def import_release(
    host: Host, url: str, name: str, *, transfer: Transfer | None = None
) -> BaseInfo:
    check_base_name(name)
    directory = release_dir(url)
    if host.storage.exists(f"bases/{name}"):
        raise Conflict(f"base {name!r} already exists", hint=f"rex base rm {name}")
    transfer = transfer or transfer_for(host.progress)
    source = open_source(directory, host.config.ca_bundle)
    try:
        host.progress.step(f"Reading {directory}MANIFEST")
        data = source.get(directory + "MANIFEST", limit=MAX_SMALL_FILE)
        assert data is not None
        entries = parse_release_manifest(data.decode("utf-8", "replace"), directory + "MANIFEST")
        if BASE_SET not in entries:
            raise VerificationError(f"{directory}MANIFEST does not list {BASE_SET}")
        want = Wanted(directory + BASE_SET, entries[BASE_SET].sha256, ".txz")
        cache = host.config.root / "cache" / "releases"
        with host.lock(f"fetch-{want.sha256}"):
            path = cached_download(source, want, cache, transfer)
    finally:
        source.close()
    props = {"url": directory, "digest": want.sha256, "signer": UNSIGNED, "complete": "1"}
    return create_base(host, path, name, origin=directory, props=props, need_osrelease=True)
