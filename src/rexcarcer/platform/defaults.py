"""The built-in settings that depend on the OS, keyed by its name as a plain
string: the front door (cli/fast.py, cli/thin.py) reads them without the enum
import of platform/kinds.py, which keys the same table by ``PlatformKind``
(config.py adds the portable settings)."""

from __future__ import annotations

import sys


def this_os() -> str:
    """ "freebsd" or "linux": the platform this process runs on."""
    return "freebsd" if sys.platform.startswith("freebsd") else "linux"


# FreeBSD: hier(7) puts variable state under /var/db and local configuration
# under /usr/local/etc; local_unbound's control socket is fixed by
# local-unbound-setup(8). Linux: the FHS /var/lib and /etc; rex's own unbound
# keeps its socket under the state directory (filled in by config.py).
DEFAULTS: dict[str, dict[str, str]] = {
    "freebsd": {
        "root": "/var/db/rexcarcer",
        "dataset": "zroot/rex",
        "unbound_control": "/var/run/local_unbound.ctl",
        "config_file": "/usr/local/etc/rexcarcer.toml",
    },
    "linux": {
        "root": "/var/lib/rexcarcer",
        "dataset": "rexpool/rex",
        "unbound_control": "",
        "config_file": "/etc/rexcarcer.toml",
    },
}
