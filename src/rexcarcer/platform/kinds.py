"""The platforms rex knows, which one this process runs on, and the built-in
settings that depend on it (config.py adds the portable ones)."""

from __future__ import annotations

import sys
from enum import StrEnum


class PlatformKind(StrEnum):
    FREEBSD = "freebsd"
    LINUX = "linux"
    FAKE = "fake"


def detect() -> PlatformKind:
    """The platform this process runs on."""
    return PlatformKind.FREEBSD if sys.platform.startswith("freebsd") else PlatformKind.LINUX


# FreeBSD: hier(7) puts variable state under /var/db and local configuration
# under /usr/local/etc; local_unbound's control socket is fixed by
# local-unbound-setup(8). Linux: the FHS /var/lib and /etc; rex's own unbound
# keeps its socket under the state directory (filled in by config.py).
DEFAULTS: dict[PlatformKind, dict[str, str]] = {
    PlatformKind.FREEBSD: {
        "root": "/var/db/rexcarcer",
        "dataset": "zroot/rex",
        "unbound_control": "/var/run/local_unbound.ctl",
        "config_file": "/usr/local/etc/rexcarcer.toml",
    },
    PlatformKind.LINUX: {
        "root": "/var/lib/rexcarcer",
        "dataset": "rexpool/rex",
        "unbound_control": "",
        "config_file": "/etc/rexcarcer.toml",
    },
}
DEFAULTS[PlatformKind.FAKE] = DEFAULTS[PlatformKind.LINUX]
