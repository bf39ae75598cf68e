"""Join tokens: one-time, expiring, known only to the CA host and whoever it
gave the token to; and the HMAC that authenticates a join request with one.

A token reads ``rex1.<id>.<expires>.<secret>``: 16 hex digits of id, the expiry
(Unix time), and 128 bits of secret, HMAC-SHA256(join.key, "rex1.<id>.<expires>")
where ``join.key`` is 32 random bytes beside the CA's key on the CA host
(``$REX_ROOT/ca/join.key``, 0600). So the CA host recomputes any token from its
id and expiry, and an expiry cannot be moved without the secret changing.

etcd holds only a hash: ``cluster/tokens/<id>`` = {"sha256" of the whole token,
"expires", "created", "by"}. Reading etcd gives no token; the CA host consumes
(deletes) the record in the transaction that answers the one join it allows.

A join request (enroll.py) carries ``mac``: HMAC-SHA256 keyed with the token
over the request's canonical JSON (sorted keys, no spaces, without ``mac``),
so the CSRs, the host's name, address and ranges cannot be changed in etcd
without the CA host noticing; the CA host's answer carries one too, so the
joining host knows the certificates (and the root) came from the CA host.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rexcarcer.cluster import ClusterError
from rexcarcer.fsutil import atomic_write
from rexcarcer.model import keys
from rexcarcer.state.base import Store, create_json

PREFIX = keys.CLUSTER_TOKENS
DEFAULT_TTL = 3600
MAX_TTL = 7 * 86400
_TOKEN = re.compile(r"rex1\.([0-9a-f]{16})\.([0-9]{1,12})\.([0-9a-f]{32})")
_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    expires: int
    secret: str

    @property
    def text(self) -> str:
        return f"rex1.{self.id}.{self.expires}.{self.secret}"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``2d`` -> seconds (1 s to 7 days)."""
    m = _DURATION.fullmatch(text.strip())
    seconds = int(m.group(1)) * _UNITS[m.group(2)] if m else 0
    if not 1 <= seconds <= MAX_TTL:
        raise ClusterError(
            f"bad token lifetime {text!r}",
            hint="give seconds or a number with s, m, h or d, at most 7 days (e.g. 1h)",
        )
    return seconds


def join_key(path: Path, *, create: bool = False) -> bytes:
    """The CA host's token secret; made on first use when ``create``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise ClusterError(
                f"no join key in {path}: this host made no join token",
                hint="make tokens with `rex cluster token` on the CA host",
            ) from None
        data = os.urandom(32)
        try:
            atomic_write(path, data, mode=0o600)
        except OSError as exc:
            raise ClusterError(f"cannot write {path}: {exc}") from exc
    except OSError as exc:
        raise ClusterError(f"cannot read {path}: {exc}") from exc
    if len(data) != 32:
        raise ClusterError(f"{path} is not a join key (32 bytes)", hint=f"remove {path}")
    return data


def derive(key: bytes, token_id: str, expires: int) -> Token:
    msg = f"rex1.{token_id}.{expires}".encode()
    return Token(token_id, expires, hmac.new(key, msg, hashlib.sha256).hexdigest()[:32])


def mint(key: bytes, ttl: int, now: float) -> Token:
    return derive(key, secrets.token_hex(8), int(now) + ttl)


def parse(text: str) -> Token:
    m = _TOKEN.fullmatch(text.strip())
    if m is None:
        raise ClusterError(
            "that is not a join token",
            hint="a token reads rex1.<id>.<expiry>.<secret>; make one with `rex cluster "
            "token` on the CA host",
        )
    return Token(m.group(1), int(m.group(2)), m.group(3))


def publish(store: Store, token: Token, by: str, now: float) -> None:
    record = {"sha256": token.digest, "expires": token.expires, "created": int(now), "by": by}
    if not create_json(store, PREFIX + token.id, record):
        raise ClusterError("a token with this id exists already", hint="run it again")


def canonical(body: dict[str, Any]) -> bytes:
    """What a MAC or signature covers: the JSON without ``mac`` and ``sig``."""
    rest = {k: v for k, v in body.items() if k not in ("mac", "sig")}
    return json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()


def mac(token: Token, body: dict[str, Any]) -> str:
    return hmac.new(token.text.encode(), canonical(body), hashlib.sha256).hexdigest()


def mac_ok(token: Token, body: dict[str, Any]) -> bool:
    given = body.get("mac")
    return isinstance(given, str) and hmac.compare_digest(given, mac(token, body))
