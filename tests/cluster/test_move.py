"""Jails between hosts on the three-host test bed (conftest.py): real zfs-fuse
streams, real namespaces, the agents' mutual-TLS API and unbound on every host.

- rex export on h1, rex import on h2: the same data; a truncated or altered
  copy, or an import on a host of another cluster, is refused with nothing
  received (until that host trusts this cluster's CA);
- rex move h1 -> h2, asked on h3: the data arrives, the name resolves to the
  new address on every host, the identity is h2's; then cp, console, history
  and volumes of the jail through h2's agent;
- a move whose target dies half-way leaves the jail running where it was; a
  fixed IP moves only where its range is; an unknown host changes nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.capability import require_tools
from tests.cluster.conftest import ClusterHost, stop
from tests.cluster.test_cluster import _stop_dns
from tests.cluster.test_placement import _same_ca
from tests.cluster.test_security import address_of
from tests.integration.conftest import Rex, copy_example, rex, sh, wait_until  # noqa: F401
from tests.schemas import validate

UNBOUND = {"h1": "203.0.113.1", "h2": "203.0.113.65", "h3": "203.0.113.129"}
REX = "BASE busybox\nVOLUME data /srv/data\nPROVISION RUN echo made-on-h1 > /etc/motd\n"
AGENTS: dict[str, subprocess.Popen[str]] = {}  # the agents this module started


def _agent(h: ClusterHost) -> None:
    AGENTS[h.name] = h.popen("agent", "--lease-ttl", "3", "--idle", "1")


def _alive(h: ClusterHost, names: list[str]) -> bool:
    listed = h.hosts()
    return all(listed[n]["alive"] for n in names)


@pytest.fixture(scope="module")
def bed(
    zfs_hosts: list[ClusterHost], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ClusterHost]]:
    require_tools("unbound", "dig", "script")
    _same_ca(zfs_hosts)
    src = copy_example(tmp_path_factory.mktemp("anchor"))
    try:
        for h in zfs_hosts:
            h.rex("host", "serve", "--detach")
            _agent(h)
        wait_until(lambda: _alive(zfs_hosts[0], ["h1", "h2", "h3"]), "the agents coming up")
        for h in zfs_hosts:  # its bridge carries the address unbound answers on
            h.rex("up", src / "client.rex", "--name", f"anchor-{h.name}", "--host", h.name)
        yield zfs_hosts
    finally:
        for p in AGENTS.values():
            stop(p)
        for h in zfs_hosts:
            _stop_dns(h)


def _dig(h: ClusterHost, name: str) -> str:
    return h.ns("dig", "+short", "+time=1", "+tries=1", f"@{UNBOUND[h.name]}", name).stdout.strip()


def _rexfile(tmp_path: Path) -> Path:
    path = tmp_path / "data.rex"
    path.write_text(REX)
    return path


def _fill(h: ClusterHost, jail: str, mib: int) -> str:
    """``mib`` MiB of random data in the jail's volume; its SHA-256."""
    script = (f"dd if=/dev/urandom of=/srv/data/blob bs=65536 count={mib * 16} 2>/dev/null"
              " && sha256sum /srv/data/blob")  # fmt: skip
    return h.rex("exec", jail, "--", "sh", "-c", script).stdout.split()[0]


def _digest(h: ClusterHost, jail: str) -> str:
    return h.rex("exec", jail, "--", "sha256sum", "/srv/data/blob").stdout.split()[0]


def _ls(h: ClusterHost) -> dict[str, dict[str, object]]:
    return {j["name"]: j for j in json.loads(h.rex("-o", "json", "ls").stdout)}


def _datasets(h: ClusterHost, jail: str) -> list[str]:
    """What ``h`` holds of ``jail``: its root, volumes, or a transfer's temporary ones."""
    names = sh("zfs", "list", "-H", "-o", "name", "-r", h.dataset).stdout.split()
    return [n for n in names if f"/{jail}" in n or f"_in-{jail}" in n]


def _flip(src: Path, dest: Path, offset: int) -> Path:
    data = bytearray(src.read_bytes())
    data[offset] ^= 0x01
    dest.write_bytes(bytes(data))
    return dest


def test_export_then_import_on_another_host(
    bed: list[ClusterHost],
    tmp_path: Path,
    rex: Rex,  # noqa: F811
) -> None:
    h1, h2, _h3 = bed
    h1.rex("up", _rexfile(tmp_path), "--name", "exp1", "--host", "h1")
    try:
        digest = _fill(h1, "exp1", 4)
        file = tmp_path / "exp1.rexjail"
        made = json.loads(h1.rex("-o", "json", "export", "exp1", file).stdout)
        validate("export", made)
        assert made["host"] == "h1" and [p["part"] for p in made["parts"]] == ["root", "data"]
        assert file.stat().st_size == (1 << 20) + made["size"]
        # altered or truncated copies: refused, nothing received
        bad = _flip(file, tmp_path / "bad", (1 << 20) + made["parts"][0]["size"] + 5000)
        refused = h2.rex("import", bad, "--name", "exp2", check=False)
        assert refused.returncode == 53 and "altered" in refused.stderr, refused.stderr
        cut = tmp_path / "cut"
        cut.write_bytes(file.read_bytes()[: -(1 << 16)])
        refused = h2.rex("import", cut, "--name", "exp2", check=False)
        assert refused.returncode == 53 and "truncated" in refused.stderr, refused.stderr
        assert "exp2" not in _ls(h2) and not _datasets(h2, "exp2")
        # the name is the cluster's: exp1 exists (on h1)
        taken = h2.rex("import", file, check=False)
        assert taken.returncode == 12 and "named 'exp1' exists on host h1" in taken.stderr
        # intact, under another name: the same data, on h2, with an address of h2
        info = json.loads(h2.rex("-o", "json", "import", file, "--name", "exp2").stdout)
        validate("import", info)
        assert info["host"] == "h2" and info["state"] == "running", info
        assert info["ips"][0].startswith("203.0.113.") and 64 <= int(
            info["ips"][0].split("/")[0].split(".")[-1]) < 128  # fmt: skip
        assert _digest(h1, "exp2") == digest  # asked on h1, run by h2's agent
        assert h1.rex("exec", "exp2", "--", "cat", "/etc/motd").stdout == "made-on-h1\n"
        # a host of another cluster: refused until it trusts this cluster's CA
        foreign = rex.run("import", file, check=False)
        assert foreign.returncode == 53 and "does not chain" in foreign.stderr, foreign.stderr
        assert not rex.jails()
        rex.run("trust", "add", h1.root / "agent-tls" / "cluster.crt")
        rex.run("import", file)
        got = rex.run("exec", "exp1", "--", "sha256sum", "/srv/data/blob").stdout.split()[0]
        assert got == digest
    finally:
        h2.rex("destroy", "--volumes", "exp2", check=False)
        h1.rex("destroy", "--volumes", "exp1", check=False)


def test_move_keeps_the_data_and_the_name_follows(bed: list[ClusterHost], tmp_path: Path) -> None:
    h1, h2, h3 = bed
    h1.rex("up", _rexfile(tmp_path), "--name", "mover", "--host", "h1")
    try:
        digest = _fill(h1, "mover", 8)
        old = address_of(h1, "mover")
        for h in bed:
            wait_until(lambda h=h: _dig(h, "mover.jail.rex.internal") == old,
                       f"mover at {old} in {h.name}'s resolver")  # fmt: skip
        # asked on h3: h1's agent moves its jail to h2's agent
        info = json.loads(h3.rex("-o", "json", "move", "mover", "--to", "h2").stdout)
        validate("move", info)
        new = info["ips"][0].split("/")[0]
        assert info["host"] == "h2" and info["state"] == "running" and new != old, info
        assert 64 <= int(new.split(".")[-1]) < 128
        for h in bed:
            assert _ls(h)["mover"]["host"] == "h2"
            wait_until(lambda h=h: _dig(h, "mover.jail.rex.internal") == new,
                       f"mover at {new} in {h.name}'s resolver")  # fmt: skip
        assert _digest(h3, "mover") == digest
        assert not _datasets(h1, "mover"), _datasets(h1, "mover")
        assert f"{h2.dataset}/volumes/mover.data" in _datasets(h2, "mover")
        assert not [d for d in _datasets(h2, "mover") if "_in-" in d or "@" in d]
        # its identity is h2's now: its address, signed by h2's jail CA
        pem = h1.rex("exec", "mover", "--", "cat", "/etc/ssl/rc/host.crt").stdout
        from cryptography import x509

        cert = x509.load_pem_x509_certificates(pem.encode())[0]
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == [new]
        assert "jails of h2.host" in cert.issuer.rfc4514_string()
        # the jail's other verbs through h2's agent: files, console, history, volumes
        _through_the_agent(h1, h3, tmp_path)
    finally:
        h2.rex("destroy", "--volumes", "mover", check=False)
        h1.rex("destroy", "--volumes", "mover", check=False)


def _through_the_agent(h1: ClusterHost, h3: ClusterHost, tmp_path: Path) -> None:
    (tmp_path / "note").write_text("copied in from h1")
    h1.rex("cp", tmp_path / "note", "mover:/srv/data/")
    h3.rex("cp", "mover:/srv/data/note", tmp_path / "back")
    assert (tmp_path / "back").read_text() == "copied in from h1"
    argv = shlex.join(h1.argv("console", "mover"))
    done = subprocess.run(["script", "-qec", argv, "/dev/null"], env=h1.env,
                          input="echo console-on-$(hostname)\nexit 5\n",
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 5, done.stdout + done.stderr
    assert "console-on-mover" in done.stdout, done.stdout
    gens = json.loads(h3.rex("-o", "json", "history", "mover").stdout)
    assert [g["current"] for g in gens] == [True]
    snap = json.loads(h1.rex("-o", "json", "volume", "snapshot", "mover.data").stdout)
    volumes = json.loads(h3.rex("-o", "json", "volume", "ls").stdout)
    [vol] = [v for v in volumes if v["jail"] == "mover"]
    assert vol["host"] == "h2" and snap["snapshot"] in vol["snapshots"]


def test_a_failed_move_leaves_the_jail_running_where_it_was(
    bed: list[ClusterHost], tmp_path: Path
) -> None:
    h1, h2, h3 = bed
    unknown = h1.rex("move", "anchor-h1", "--to", "h9", check=False)
    assert unknown.returncode == 11 and "no host 'h9'" in unknown.stderr
    pinned = tmp_path / "pinned.rex"
    pinned.write_text("BASE busybox\nIP 203.0.113.20/26\n")  # in h1's subnet
    h1.rex("up", pinned, "--name", "pinned", "--host", "h1")
    h1.rex("up", _rexfile(tmp_path), "--name", "big", "--host", "h1")
    try:
        refused = h1.rex("move", "pinned", "--to", "h2", check=False)
        assert refused.returncode == 24 and "declares no range" in refused.stderr, refused
        assert _ls(h1)["pinned"]["host"] == "h1" and _ls(h1)["pinned"]["state"] == "running"
        assert not _datasets(h2, "pinned")
        digest = _fill(h1, "big", 200)
        # h3's agent dies while the first copy arrives: the move fails, big runs on h1
        pipe = subprocess.PIPE
        move = subprocess.Popen(h1.argv("move", "big", "--to", "h3"), env=h1.env, stdout=pipe,
                                stderr=pipe, text=True)  # fmt: skip
        try:
            wait_until(lambda: [d for d in _datasets(h3, "big") if "_in-" in d],
                       "the first stream arriving on h3", timeout=120)  # fmt: skip
            stop(AGENTS["h3"], signal.SIGKILL)
            _out, err = move.communicate(timeout=120)
        finally:
            if move.poll() is None:
                os.kill(move.pid, signal.SIGKILL)
                move.wait()
        assert move.returncode == 54 and "runs on h1" in err, err
        assert _ls(h1)["big"]["host"] == "h1" and _ls(h1)["big"]["state"] == "running"
        assert _digest(h1, "big") == digest
        # h3 back: its leftovers are swept by the next move, which goes through
        _agent(h3)
        wait_until(lambda: _alive(h1, ["h3"]), "h3's agent back")
        time.sleep(0.5)
        h1.rex("move", "big", "--to", "h3")
        assert _ls(h1)["big"]["host"] == "h3" and _digest(h1, "big") == digest
        assert not [d for d in _datasets(h3, "big") if "_in-" in d]
        assert not _datasets(h1, "big")
    finally:
        for h in bed:
            h.rex("destroy", "--volumes", "big", check=False)
        h1.rex("destroy", "pinned", check=False)
