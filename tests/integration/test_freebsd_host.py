"""FreeBSD itself: `rex host setup` on the CI machine (a disposable FreeBSD 14
VM), then DESIGN's first example with a package from pkg, started by the
jail's rc(8), answering by name through local_unbound. Runs only in the
FreeBSD CI (.cirrus.yml); tests/unit/test_freebsd_model.py runs the same flow
on a model of FreeBSD everywhere."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.capability import freebsd_only
from tests.integration.conftest import FREEBSD_BASE, sh, wait_until

freebsd_only("rex host setup changes the machine's rc.conf, pf and local_unbound")

SUBNET = "198.51.100.0/24"
HOST = "198.51.100.1"
Done = subprocess.CompletedProcess[str]


@pytest.fixture
def host(pool: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """This machine set up by `rex host setup`, with NAT for the jail subnet so
    that a build step reaches the package mirror (pf, as docs/freebsd.md shows)."""
    env = {
        "PATH": "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin",
        "REX_ROOT": str(tmp_path / "state"), "REX_DATASET": f"{pool}/host",
        "REX_SUBNET": SUBNET, "REX_DNS": "on", "PYTHONDONTWRITEBYTECODE": "1",
    }  # fmt: skip
    ext = sh("route", "-n", "get", "default").stdout.split("interface:")[1].split()[0]
    sh("kldload", "-n", "pf")
    rules = (f'nat-anchor "rexcarcer/*"\nrdr-anchor "rexcarcer/*"\n'
             f"nat on {ext} inet from {SUBNET} to any -> ({ext})\n"
             'anchor "rexcarcer/*"\npass all\n')  # fmt: skip
    sh("pfctl", "-f", "-", input=rules)
    sh("pfctl", "-e", check=False)  # already enabled is fine
    yield env
    for name in ("docs",):
        rex(env, "destroy", name, check=False)


def rex(
    env: dict[str, str], *args: str | Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "rexcarcer", *map(str, args)], env=env,
                          capture_output=True, text=True, check=False, timeout=1800)  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"rex {args} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def test_host_setup_then_a_jail_with_nginx_answers_by_name(
    host: dict[str, str], tmp_path: Path
) -> None:
    dry = rex(host, "host", "setup", "--dry-run").stdout
    assert "$ service local_unbound setup" in dry
    rex(host, "host", "setup")
    assert HOST in sh("ifconfig", "rex0").stdout
    assert sh("service", "local_unbound", "status", check=False).returncode == 0
    assert f"{HOST}:514" in sh("sockstat", "-4", "-P", "udp", "-p", "514").stdout
    assert rex(host, "doctor", check=False).returncode in (0, 1)  # racct may be off
    rex(host, "base", "import", FREEBSD_BASE, "freebsd")
    ctx = tmp_path / "docs"
    (ctx / "public").mkdir(parents=True)
    (ctx / "public" / "index.html").write_text("<h1>docs</h1>\n")
    (ctx / "docs.rex").write_text(
        "BASE freebsd\nPROVISION RUN pkg install nginx\n"  # no -y: ASSUME_ALWAYS_YES
        "PROVISION COPY ./public /usr/local/www/nginx\nENV DOCS_ROOT=/usr/local/www/nginx\n"
        "ENABLE nginx\n"
    )
    rex(host, "up", ctx / "docs.rex")
    address = sh("host", "-t", "A", "docs.jail.rex.internal", HOST).stdout.split()[-1]
    assert address.startswith("198.51.100.")
    page = wait_until(lambda: sh("fetch", "-qo", "-", f"http://{address}/", check=False).stdout,
                      "nginx answering in the jail")  # fmt: skip
    assert page == "<h1>docs</h1>\n"
    assert shutil.which("jls") and "docs" in sh("jls", "name").stdout
