"""rex export and rex import on the in-memory drivers: the same data arrives; a
truncated, altered, foreign-signed or jail-signed export is refused before
anything is received; a taken name or address too. The real zfs streams run
in tests/cluster/test_move.py."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import json
import shutil
import struct
from pathlib import Path

import pytest

from rexcarcer.base.sign import now
from rexcarcer.base.source import Bases
from rexcarcer.base.trust import TrustStore, trust_dir
from rexcarcer.engine import carry, jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import AddressError, Conflict
from rexcarcer.netpolicy import AddressRefused, HostnameRefused
from rexcarcer.netpolicy.policy import NetworkPolicy
from rexcarcer.rexfile.parser import parse
from rexcarcer.service.local import LocalService
from rexcarcer.state import records
from rexcarcer.transfer import ArchiveRejected, TransferError, archive, manifest, signer
from tests.api_support import new_ca
from tests.unit.fakes import fake_host

REX = "BASE bb\nVOLUME data /srv/data\nENV GREETING=hi\n"


def _engine(tmp_path: Path, name: str, subnet: str = "203.0.113.0/24") -> Engine:
    host = fake_host(tmp_path / name, name=name, subnet=subnet)
    return Engine(host, Bases(), [], policy=NetworkPolicy())


def _jail(eng: Engine, tmp_path: Path, text: str = REX, name: str = "web") -> Path:
    jails.up(eng, parse(text, path=tmp_path / f"{name}.rex"), name)
    root = eng.host.storage.mountpoint(f"jails/{name}")
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "motd").write_text("welcome\n")
    data = eng.host.storage.mountpoint(f"volumes/{name}.data")
    (data / "db").mkdir()
    (data / "db" / "rows").write_bytes(bytes(range(256)) * 100)
    return root


def _export(eng: Engine, path: Path, name: str = "web") -> Path:
    with path.open("wb") as f:
        LocalService(lambda: eng).export(name, f)
    return path


def _import(eng: Engine, path: Path, name: str | None = None) -> object:
    with path.open("rb") as f:
        return LocalService(lambda: eng).import_(f, name=name)


def _pair(tmp_path: Path) -> tuple[Engine, Engine]:
    """Two single hosts sharing one CA (as two hosts of one cluster do)."""
    a, b = _engine(tmp_path, "a"), _engine(tmp_path, "b", "198.51.100.0/24")
    new_ca(a.host.config.root)
    shutil.copytree(a.host.config.root / "ca", b.host.config.root / "ca")
    return a, b


def test_export_then_import_gives_the_same_data(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    _jail(a, tmp_path)
    path = _export(a, tmp_path / "web.rexjail")
    info = _import(b, path)
    assert (info.name, info.state, info.host) == ("web", "running", "b")  # type: ignore[attr-defined]
    assert info.address == "198.51.100.2/24"  # type: ignore[attr-defined]
    root = b.host.storage.mountpoint("jails/web")
    assert (root / "etc" / "motd").read_text() == "welcome\n"
    data = b.host.storage.mountpoint("volumes/web.data")
    assert (data / "db" / "rows").read_bytes() == bytes(range(256)) * 100
    rec = jails.record(b, "web")
    assert (
        rec is not None
        and rec.env == (("GREETING", "hi"),)
        and rec.hostname.endswith("web.jail.rex.internal")
    )
    assert b.host.storage.get_props("jails/web")["jail"] == "web"
    # the exporting host kept everything, and no snapshot of the trip is left anywhere
    assert jails.record(a, "web") is not None
    for eng in (a, b):
        assert not [s for s in eng.host.storage.snapshots("jails/web") if "rex-export" in s]
    # under another name, on the same host as well
    again = _import(b, path, name="web2")
    assert again.address == "198.51.100.3/24"  # type: ignore[attr-defined]
    assert jails.record(b, "web2").hostname == "web2.jail.rex.internal"  # type: ignore[union-attr]


def test_the_file_layout(tmp_path: Path) -> None:
    a, _ = _pair(tmp_path)
    _jail(a, tmp_path)
    raw = _export(a, tmp_path / "web.rexjail").read_bytes()
    assert raw[:16] == archive.MAGIC
    header = archive.decode_header(raw[: archive.HEADER_SPACE])
    made = manifest.parse(header.manifest)
    assert [p.part for p in made.parts] == ["root", "data"]
    assert len(raw) == archive.HEADER_SPACE + sum(p.size for p in made.parts)
    assert json.loads(header.manifest)["host"] == "a"
    assert header.chain.startswith(b"-----BEGIN CERTIFICATE-----")


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _refused(eng: Engine, path: Path, match: str) -> None:
    with pytest.raises(ArchiveRejected, match=match) as err:
        _import(eng, path)
    assert err.value.exit_code == 53
    assert jails.record(eng, "web") is None
    assert not eng.host.storage.datasets("jails") and not eng.host.storage.datasets("volumes")


def test_a_truncated_or_altered_export_is_refused_and_nothing_received(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    _jail(a, tmp_path)
    good = _export(a, tmp_path / "good")
    cut = tmp_path / "cut"
    cut.write_bytes(good.read_bytes()[:-100])
    _refused(b, cut, "truncated")
    longer = tmp_path / "longer"
    longer.write_bytes(good.read_bytes() + b"x")
    _refused(b, longer, "after its last part")
    part = tmp_path / "part"
    shutil.copy(good, part)
    _flip(part, archive.HEADER_SPACE + 700)
    _refused(b, part, "does not match its signed digest")
    head = tmp_path / "head"
    shutil.copy(good, head)
    _flip(head, 60)  # inside the manifest
    _refused(b, head, "does not verify|malformed")
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an export at all")
    _refused(b, junk, "not a jail export")


def test_a_foreign_export_is_refused_until_its_ca_is_trusted(tmp_path: Path) -> None:
    a, b = _engine(tmp_path, "a"), _engine(tmp_path, "b", "198.51.100.0/24")
    new_ca(a.host.config.root)
    new_ca(b.host.config.root)  # another cluster
    _jail(a, tmp_path)
    path = _export(a, tmp_path / "web.rexjail")
    _refused(b, path, "does not chain to this host's cluster CA")
    TrustStore(trust_dir(b.host.config.root)).add(a.host.config.root / "ca" / "ca.crt", now())
    assert _import(b, path).state == "running"  # type: ignore[attr-defined]


def test_an_export_signed_with_a_jail_certificate_is_refused(tmp_path: Path) -> None:
    """A jail's certificate chains to the same root (through its host's jail CA)
    but is not a host certificate: whatever it signs is no export."""
    import ipaddress

    from cryptography.hazmat.primitives import serialization

    from rexcarcer.pki import hook, issue
    from rexcarcer.pki.identity import Identity

    a, b = _pair(tmp_path)
    _jail(a, tmp_path)
    raw = _export(a, tmp_path / "good").read_bytes()
    header = archive.decode_header(raw[: archive.HEADER_SPACE])
    ident = Identity("web", ("web.jail.rex.internal",), (ipaddress.ip_address("203.0.113.2"),))
    issued = issue.issue(hook.ensure_issuer(a.host), ident, dt.datetime.now(dt.UTC))
    key = serialization.load_pem_private_key(issued.key_pem, None)
    jail_key = signer.HostKey(key, issued.host_crt)  # type: ignore[arg-type]
    forged = signer.sign(jail_key, manifest.parse(header.manifest))
    bad = tmp_path / "bad"
    bad.write_bytes(archive.encode_header(forged) + raw[archive.HEADER_SPACE :])
    _refused(b, bad, "not the host certificate of a")


def test_a_taken_name_or_address_is_refused_before_anything_is_received(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    _jail(a, tmp_path, REX + "IP 203.0.113.9/24\n")
    path = _export(a, tmp_path / "web.rexjail")
    with pytest.raises(AddressError, match="declares no range holding it"):
        _import(b, path)  # b's subnet is 198.51.100.0/24
    assert not b.host.storage.datasets("jails") and jails.record(b, "web") is None
    with pytest.raises(Conflict, match="a jail named 'web' exists"):
        _import(a, path)
    with pytest.raises(Conflict, match="already used by jail 'web'"):
        _import(a, path, name="web2")  # its fixed IP is web's
    assert [d.name for d in a.host.storage.datasets("jails")] == ["jails/web"]


def test_export_needs_a_regular_file_and_a_certificate(tmp_path: Path) -> None:
    a = _engine(tmp_path, "a")
    jails.up(a, parse("BASE bb\n", path=tmp_path / "web.rex"), "web")
    with pytest.raises(TransferError, match="no certificate"):
        LocalService(lambda: a).export("web", io.BytesIO())
    new_ca(a.host.config.root)

    class Pipe(io.BytesIO):
        def seek(self, *args: object) -> int:
            raise io.UnsupportedOperation("not seekable")

    with pytest.raises(TransferError, match="cannot write the export") as err:
        LocalService(lambda: a).export("web", Pipe())
    assert err.value.hint is not None and "regular file" in err.value.hint
    assert not a.host.storage.snapshots("jails/web")


def test_a_manifest_is_checked_as_hostile_input() -> None:
    good = {
        "format": "rexcarcer-jail", "version": 1, "host": "a", "zone": "rex.internal",
        "created": 1, "snapshot": "s", "osrelease": None,
        "jail": {"name": "web", "volumes": [{"name": "data", "path": "/srv/data"}]},
        "parts": [{"part": "root", "size": 1, "sha256": "0" * 64},
                  {"part": "data", "size": 1, "sha256": "0" * 64}],
    }  # fmt: skip
    assert manifest.parse(json.dumps(good).encode()).jail.name == "web"
    bad_cases = [
        {"version": 2},
        {"jail": {"name": "../x"}},
        {"jail": {"name": "web", "volumes": [{"name": "data", "path": "/../etc"}]}},
        {"jail": {"name": "web", "volumes": [{"name": "data", "path": "/etc/ssl/rc"}]}},
        {"jail": {"name": "web", "env": [["A B", "x"]], "volumes": good["jail"]["volumes"]}},  # type: ignore[index]
        {"parts": good["parts"][:1]},  # type: ignore[index]
        {"parts": [{"part": "root", "size": -1, "sha256": "0" * 64}, good["parts"][1]]},  # type: ignore[index]
        {"parts": [{"part": "root", "size": 1, "sha256": "XYZ"}, good["parts"][1]]},  # type: ignore[index]
        {"snapshot": "a/b"},
        {"osrelease": "x y"},
    ]
    for change in bad_cases:
        with pytest.raises(ArchiveRejected):
            manifest.parse(json.dumps({**good, **change}).encode())


def test_a_header_that_lies_about_its_length_is_refused() -> None:
    big = archive.MAGIC + struct.pack(">Q", archive.HEADER_SPACE)
    with pytest.raises(ArchiveRejected, match="more than it may have"):
        archive.decode_header(big)
    short = archive.MAGIC + struct.pack(">Q", 10) + struct.pack(">I", 100)
    with pytest.raises(ArchiveRejected):
        archive.decode_header(short + bytes(10))


def test_an_arrival_is_held_to_this_hosts_network_policy(tmp_path: Path) -> None:
    """A record written under another host's rules (another cluster, another zone)
    is refused when its HOSTNAME or fixed IP could not be given here."""
    a, b = _pair(tmp_path)
    _jail(a, tmp_path)
    rec = jails.record(a, "web")
    assert rec is not None
    records.put_jail(a.host.store, rec.replace(hostname="b.host.rex.internal"))
    path = _export(a, tmp_path / "web.rexjail")
    with pytest.raises(HostnameRefused, match="arriving from another host"):
        _import(b, path)
    assert not b.host.storage.datasets("jails") and jails.record(b, "web") is None
    assert not b.host.storage.datasets("volumes")
    # a fixed IP that is b's own address in its jail subnet, though inside its range
    own = ipaddress.ip_interface("198.51.100.1/24")
    fixed = rec.replace(address=own, canonical={**rec.canonical, "ip": str(own)})
    with pytest.raises(AddressRefused, match="this host's own address"):
        carry.admit(b, fixed, [b.host.config.subnet])
    carry.admit(b, rec, [b.host.config.subnet])  # its own default name, no fixed IP: admitted
