"""Where the engine gets a jail's base (engine/base.py ``BaseSource``): a local
base by name, or a published base by URL, fetched and verified once
(receive.py) and local from then on. The base's current version, unless ``BASE
... sha256:<hex>`` pins one: then the version whose manifest has that digest,
current or not (a jail can stay on a version while the base moves on)."""

from __future__ import annotations

from rexcarcer.base.local import find_base
from rexcarcer.base.versions import at_version
from rexcarcer.errors import Conflict
from rexcarcer.host import Host
from rexcarcer.model.base import BaseInfo
from rexcarcer.rexfile.ast import Base


class Bases:
    def ensure(self, host: Host, base: Base) -> BaseInfo:
        if base.is_url:  # fetched, verified and received once; then local
            from rexcarcer.base.receive import ensure_base

            return ensure_base(host, base.ref, base.pin)
        return _named(host, base)

    def local(self, host: Host, base: Base) -> BaseInfo | None:
        if base.is_url:
            from rexcarcer.base.receive import local_base_for

            return local_base_for(host, base.ref, base.pin)
        return _named(host, base)


def _named(host: Host, base: Base) -> BaseInfo:
    info = find_base(host, base.ref)
    if not base.pin:
        return info
    pinned = next((v for v in info.versions if v.props.get("digest") == base.pin.lower()), None)
    if pinned is not None:
        return at_version(info, pinned.version)
    raise Conflict(
        f"base {info.name!r} does not match the pin sha256:{base.pin} "
        f"(its digest: {info.props.get('digest') or 'none, it was not fetched'})",
        hint="pin a fetched base's digest (`rex base ls -o json`), or remove the pin",
    )
