"""A small cluster PKI on the memory store, built the way `rex cluster init` and
`rex cluster join` build it: CA host h1 (it holds the cluster CA), members that
join with a token through the signer. Shared by the unit tests of roles,
authorize and enrolment."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

from rexcarcer.cluster import cashare, enroll, membership, signer, tokens
from rexcarcer.cluster.model import make_settings
from rexcarcer.config import TESTING_ENV, Config, load_config
from rexcarcer.pki import ca
from rexcarcer.pki.layout import CaPaths
from rexcarcer.progress import QuietProgress
from rexcarcer.state.memory import MemoryStore

ZONE = "rex.internal"
ADDRESSES = {"h1": "198.51.100.11", "h2": "198.51.100.12", "h3": "198.51.100.13"}


def config(root: Path, host: str) -> Config:
    return load_config(root=root / host, environ={**TESTING_ENV, "REX_HOST": host})


def member(store: MemoryStore, cfg: Config, host: str) -> tuple[Config, membership.Joined]:
    """Register ``host`` (``rex cluster join`` does this before its request)."""
    joined = membership.join(store, None, host, ADDRESSES[host])
    return dataclasses.replace(cfg, host=host, zone=ZONE, subnet=joined.subnet), joined


def cluster(tmp_path: Path) -> tuple[MemoryStore, Config]:
    """``rex cluster init`` and ``join`` on h1, the CA host; (store, h1's config)."""
    store = MemoryStore()
    membership.init(store, make_settings("203.0.113.0/24", ZONE, 26))
    h1 = config(tmp_path, "h1")
    now = ca.utcnow()
    ca.install(CaPaths.under(h1.root), ca.self_signed(ca.CaSettings(), now), now=now)
    cashare.publish(store, CaPaths.under(h1.root), "h1")
    h1, joined = member(store, h1, "h1")
    enroll.issue_here(store, h1, address=ADDRESSES["h1"], subnet=joined.subnet)
    return store, h1


def token(store: MemoryStore, h1: Config, ttl: int = 3600) -> tokens.Token:
    from rexcarcer.cluster import onboard

    return onboard.make_token(h1, store, ttl)


def sign(store: MemoryStore, h1: Config) -> int:
    """One pass of the CA host's agent over the pending requests."""
    return signer.sign_pending(store, CaPaths.under(h1.root), ZONE)


def join(
    store: MemoryStore, h1: Config, tmp_path: Path, host: str, public: list[str] | None = None
) -> Config:
    """A member joined with a fresh token and signed by h1: its config."""
    cfg, _ = member(store, config(tmp_path, host), host)
    ranges = [ipaddress.ip_network(r) for r in public or []]
    pending = enroll.start_join(store, cfg, host=host, address=ADDRESSES[host],
                                token=token(store, h1), public=ranges)  # fmt: skip
    assert sign(store, h1) == 1
    got = enroll.wait(store, pending, 5, QuietProgress())
    enroll.finish(store, cfg, pending, got)
    return cfg
