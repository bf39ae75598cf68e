"""cluster/auth.py: which certificate of the cluster CA is a host's. Real
certificates, issued by a real CA in memory; the store is the memory store."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from rexcarcer.cluster.auth import authorize, candidates
from rexcarcer.pki import ca, issue, registry
from rexcarcer.pki.identity import Identity
from rexcarcer.state.memory import MemoryStore
from tests.api_support import register

ZONE = "rex.internal"
AUTHORITY = ca.self_signed(ca.CaSettings(), ca.utcnow())


def _der(names: Sequence[str], ips: Sequence[str]) -> tuple[bytes, int]:
    ident = Identity("x", tuple(names), tuple(ipaddress.ip_address(i) for i in ips))
    cert = issue.issue(AUTHORITY, ident, ca.utcnow()).cert
    return cert.public_bytes(Encoding.DER), cert.serial_number


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    register(s, "h1", "198.51.100.11")
    register(s, "h6", "2001:db8::11")
    return s


def test_a_host_certificate_names_the_host_and_its_address(store: MemoryStore) -> None:
    der, _ = _der(["h1.host.rex.internal"], ["198.51.100.11"])
    assert authorize(der, store, ZONE) == "h1"
    assert authorize(der, store, "REX.internal.") == "h1"  # zones compare as DNS names do


def test_addresses_compare_as_addresses(store: MemoryStore) -> None:
    der, _ = _der(["h6.host.rex.internal"], ["2001:db8:0:0:0:0:0:11"])
    assert authorize(der, store, ZONE) == "h6"
    register(store, "h6", "2001:0db8:0000::0011")
    assert authorize(der, store, ZONE) == "h6"
    mapped, _ = _der(["h1.host.rex.internal"], ["::ffff:198.51.100.11"])
    assert authorize(mapped, store, ZONE) == "h1"


@pytest.mark.parametrize(
    ("names", "ips"),
    [
        (["h1.host.rex.internal"], ["203.0.113.5"]),  # a jail's address with a host's name
        (["web.jail.rex.internal", "h1.example.com"], ["198.51.100.11"]),  # no host name
        (["h9.host.rex.internal"], ["198.51.100.11"]),  # not registered
        (["h1.host.other.zone"], ["198.51.100.11"]),  # another zone
        (["x.h1.host.rex.internal"], ["198.51.100.11"]),  # not one label
        ([f"h{i}.host.rex.internal" for i in range(1, 7)], ["198.51.100.11"]),  # too many
    ],
)
def test_anything_else_is_no_host(store: MemoryStore, names: list[str], ips: list[str]) -> None:
    der, _ = _der(names, ips)
    assert authorize(der, store, ZONE) is None


def test_no_certificate_or_garbage_is_no_host(store: MemoryStore) -> None:
    assert authorize(None, store, ZONE) is None
    assert authorize(b"", store, ZONE) is None
    assert authorize(b"\x30\x03\x02\x01\x00", store, ZONE) is None


def test_a_malformed_host_record_is_no_host(store: MemoryStore) -> None:
    der, _ = _der(["h1.host.rex.internal"], ["198.51.100.11"])
    register(store, "h1", "not an address")
    assert authorize(der, store, ZONE) is None
    from rexcarcer.state.base import put_json

    put_json(store, "hosts/h1", ["a list"])
    assert authorize(der, store, ZONE) is None


def test_a_revoked_serial_is_refused(store: MemoryStore) -> None:
    der, serial = _der(["h1.host.rex.internal"], ["198.51.100.11"])
    other, _ = _der(["h1.host.rex.internal"], ["198.51.100.11"])
    assert registry.revoke_serial(store, serial, subject="h1", not_after=2**40,
                                  issuer=AUTHORITY.fingerprint)  # fmt: skip
    assert authorize(der, store, ZONE) is None
    assert authorize(other, store, ZONE) == "h1"  # its successor
    # it is listed in the CA's CRL like a jail's
    [rev] = registry.revoked(store, AUTHORITY.fingerprint, now=0)
    assert (rev.serial, rev.jail, rev.reason) == (serial, "h1", "keyCompromise")


def test_candidates() -> None:
    names = ["H1.Host.Rex.Internal.", "h1.host.rex.internal", "-x.host.rex.internal",
             "host.rex.internal", "a.b.host.rex.internal", "h2.host.rex.internal"]  # fmt: skip
    assert candidates(names, "rex.internal") == ["h1", "h2"]
