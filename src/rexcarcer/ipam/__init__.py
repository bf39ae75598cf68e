"""IP address management through the state store.

An address is taken when the key ``ipam/<address>`` exists; claiming is a
create-if-absent transaction, so two ``rex up`` runs (or two hosts, on etcd)
can never hold one address. The host's own address (the subnet's first) is
never handed out.

A build step (engine/build.py) holds an address of its own while it runs; its
entry is marked ``"build": true`` so that a jail's release never frees it and
the sweep after a killed run frees only those.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from rexcarcer.errors import AddressError, Conflict
from rexcarcer.model import keys
from rexcarcer.rexfile.ast import IPInterface
from rexcarcer.state.base import Compare, Delete, Store, create_json

PREFIX = keys.IPAM
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Lease:
    address: IPInterface
    jail: str


def _key(addr: Address) -> str:
    return f"{PREFIX}{addr}"


def owner(store: Store, addr: Address) -> str | None:
    entry = store.get(_key(addr))
    return str(entry.json()["jail"]) if entry else None


def taken(store: Store) -> dict[str, str]:
    """address → jail, for every claimed address."""
    return {e.key[len(PREFIX) :]: str(e.json()["jail"]) for e in store.list(PREFIX)}


def next_free(store: Store, subnet: Network) -> IPInterface | None:
    """The address ``allocate`` would claim now (nothing is claimed)."""
    used: set[Address] = {ipaddress.ip_address(a) for a in taken(store)}
    used.add(ipaddress.ip_address(str(next(iter(subnet.hosts())))))  # the host's own
    found = next((a for a in subnet.hosts() if a not in used), None)
    return ipaddress.ip_interface(f"{found}/{subnet.prefixlen}") if found is not None else None


def allocate(
    store: Store, subnet: Network, jail: str, *, host: str = "", build: bool = False
) -> IPInterface:
    """Claim the lowest free address of ``subnet`` for ``jail`` (with ``build``:
    for the build step named ``jail``)."""
    value: dict[str, object] = {"jail": jail, "host": host}
    if build:
        value["build"] = True
    for _ in range(1000):
        free = next_free(store, subnet)
        candidate = free.ip if free is not None else None
        if candidate is None:
            raise AddressError(
                f"no free address left in the jail subnet {subnet}",
                hint="destroy unused jails or set a larger REX_SUBNET",
            )
        if create_json(store, _key(candidate), value):
            return ipaddress.ip_interface(f"{candidate}/{subnet.prefixlen}")
    raise AddressError(f"could not claim an address in {subnet}: too much contention")


def claim(store: Store, address: IPInterface, jail: str, *, host: str = "") -> None:
    """Claim a fixed address; already ours is fine."""
    if create_json(store, _key(address.ip), {"jail": jail, "host": host}):
        return
    holder = owner(store, address.ip)
    if holder == jail:
        return
    raise Conflict(
        f"address {address.ip} is already used by jail {holder!r}",
        hint="pick another IP, or leave IP out so that rex assigns one",
    )


def release(store: Store, addr: Address, jail: str) -> None:
    """Release ``addr`` if ``jail`` holds it (a no-op otherwise)."""
    entry = store.get(_key(addr))
    if entry is None or entry.json()["jail"] != jail:
        return
    store.commit([Compare(entry.key, entry.revision)], [Delete(entry.key)])


def release_all(store: Store, jail: str) -> None:
    """Release every address of jail ``jail`` (never a build step's)."""
    for entry in store.list(PREFIX):
        data = entry.json()
        if data.get("jail") == jail and not data.get("build"):
            release(store, ipaddress.ip_address(entry.key[len(PREFIX) :]), jail)


@dataclass(frozen=True, slots=True)
class BuildLease:
    address: Address
    owner: str  # build-<first 8 of the step key>
    host: str


def build_leases(store: Store) -> list[BuildLease]:
    """The addresses build steps hold (on every host)."""
    out = []
    for entry in store.list(PREFIX):
        data = entry.json()
        if data.get("build"):
            addr = ipaddress.ip_address(entry.key[len(PREFIX) :])
            out.append(BuildLease(addr, str(data["jail"]), str(data.get("host", ""))))
    return out
