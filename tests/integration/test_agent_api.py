"""The agents' mutual-TLS API against a real jail (Linux namespaces, zfs-fuse),
with real TLS on ::1 and 127.0.0.1.

While 300 connections that never start TLS and 300 that finish the handshake
and then send nothing are held open, a host's ``GET /v1/health`` and a
``rex exec`` through the API into the jail succeed; the idle connections are
closed after the handshake and header timeouts, and the server's threads stay
bounded (the old server took a thread per connection). Bad Content-Lengths
and a traversal in a jail or file name are refused before the body is read,
and the traversal changes no file outside the run directory.

The jail is made with the ``rex`` CLI in the test's network namespace. The API
runs in this process, in the root namespace, on loopback only: it serves
health and exec (``nsenter`` into the jail) here; ``up`` and the lifecycle
verbs would set up interfaces in this process's namespace, so they raise
(a 500, which fails the test) instead of reaching the engine.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rexcarcer.agent import remote
from rexcarcer.agent.listener import Limits
from rexcarcer.buildctx import MAX_CONTEXT, pack
from rexcarcer.cluster import model, tls
from rexcarcer.config import Config, load_config
from rexcarcer.progress import QuietProgress
from rexcarcer.rexfile.parser import load
from rexcarcer.service.local import LocalService
from rexcarcer.service.remote import RemoteService
from rexcarcer.state.base import put_json
from rexcarcer.state.memory import MemoryStore
from rexcarcer.wiring import open_engine
from tests.api_support import (
    client_context,
    close_all,
    count_open,
    error_of,
    host_config,
    idle_tcp,
    idle_tls,
    new_ca,
    publish_ca,
    raw,
    register,
    wait_closed,
)
from tests.integration.conftest import Rex, copy_example, wait_until

IDLE = 300
LIMITS = Limits(handshake=8.0, header=12.0)


class ExecOnly(remote.Api):
    """The real API and authorisation; exec reaches the real jail."""

    def up(self, name: str, rexfile_name: str, origin: str | None, body: bytes) -> dict[str, Any]:
        raise AssertionError(f"up {name!r} reached the engine")

    def lifecycle(self, name: str, verb: str) -> dict[str, Any]:
        raise AssertionError(f"{verb} {name!r} reached the engine")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _tree(top: Path, skip: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``top`` but ``skip``: size, mode, mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if Path(dirpath) == skip or os.path.ismount(dirpath):
            dirnames.clear()
            continue
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mode, st.st_mtime_ns)
    return out


@pytest.fixture
def served(rex: Rex, tmp_path: Path) -> Iterator[tuple[Config, remote.ApiServer, RemoteService]]:
    app = copy_example(tmp_path) / "hello.rex"
    rex.run("up", app, "--name", "web")
    server_config = load_config(environ=rex.env)
    client = host_config(tmp_path / "client", "h1")
    if (server_config.root / "ca").exists():  # the CA `rex up` made for the jail's identity
        shutil.copytree(server_config.root / "ca", client.root / "ca")
    else:
        new_ca(server_config.root)
        shutil.copytree(server_config.root / "ca", client.root / "ca")
    store = MemoryStore()
    publish_ca(store, server_config)
    register(store, "h1", "127.0.0.1")
    register(store, server_config.host, "::1")
    local = LocalService(lambda: open_engine(server_config, QuietProgress()))
    files = tls.ensure(server_config, "::1")
    before = _threads()
    server = remote.serve(ExecOnly(server_config, store, local), files, ["::1", "127.0.0.1"], 0,
                          LIMITS)  # fmt: skip
    put_json(store, model.alive_key(server_config.host),
             {"api": remote.url_for("::1", server.port)})  # fmt: skip
    try:
        yield client, server, RemoteService(client, store, server_config.host)
    finally:
        server.close()
    # the loop's thread is joined; the pools' threads end on their own, soon after
    wait_until(lambda: _threads() <= before, "the API's threads ending", timeout=30)


def test_a_host_is_served_while_600_connections_idle(
    served: tuple[Config, remote.ApiServer, RemoteService],
) -> None:
    client, server, door = served
    ctx = client_context(client, "127.0.0.1")
    ctx.check_hostname = False  # the server's certificate names ::1; one test connects to 127.0.0.1
    threads = _threads()
    started = time.monotonic()  # the first idle connection's deadlines run from here
    held_tls = idle_tls("::1", server.port, ctx, IDLE // 2)
    held_tls += idle_tls("127.0.0.1", server.port, ctx, IDLE - IDLE // 2)
    held_tcp = idle_tcp("127.0.0.1", server.port, IDLE // 2)
    held_tcp += idle_tcp("::1", server.port, IDLE - IDLE // 2)
    try:
        wait_until(lambda: server.open_connections() >= 2 * IDLE, "the server holds all 600")
        for address in ("::1", "127.0.0.1"):
            with httpx.Client(verify=ctx, timeout=10) as http:
                answer = http.get(f"{remote.url_for(address, server.port)}/v1/health")
            assert (answer.status_code, answer.json()) == (200, {"host": "testhost"})
        lines: list[str] = []
        status = door.exec("web", ["sh", "-c", "echo $GREETING; exit 7"], interactive=False,
                           sink=lines.append)  # fmt: skip
        assert (status, lines) == (7, ["hello\n"])
        # all of that while every idle connection was still held
        assert time.monotonic() - started < min(LIMITS.handshake, LIMITS.header)
        assert count_open(held_tcp) == len(held_tcp) and count_open(held_tls) == len(held_tls)
        # a thread per connection would be 600 more; here: the loop and the two pools at most
        grown = _threads() - threads
        assert grown <= 1 + LIMITS.auth_threads + LIMITS.work_threads, grown
        wait_closed(held_tcp, within=LIMITS.handshake + 10)
        assert time.monotonic() - started >= LIMITS.handshake  # not before their time
        wait_closed(held_tls, within=LIMITS.header + 10)
        assert time.monotonic() - started >= LIMITS.header
        assert server.open_connections() == 0
        with httpx.Client(verify=ctx, timeout=10) as http:
            assert http.get(f"{remote.url_for('::1', server.port)}/v1/health").status_code == 200
    finally:
        close_all(held_tcp + held_tls)


def test_bad_lengths_and_traversal_are_refused_before_the_body(
    served: tuple[Config, remote.ApiServer, RemoteService], rex: Rex, tmp_path: Path
) -> None:
    client, server, _door = served
    ctx = client_context(client, "127.0.0.1")
    ctx.check_hostname = False
    up = "/v1/up?name=web2&file=hello.rex"
    for address in ("::1", "127.0.0.1"):
        for length, status in (("-1", 400), ("abc", 400), (str(2**63), 413),
                               (str(MAX_CONTEXT + 1), 413)):  # fmt: skip
            head = f"POST {up} HTTP/1.1\r\nContent-Length: {length}"
            assert raw(address, server.port, ctx, head)[0] == status, (address, length)
        head = f"POST /v1/jails/web/exec HTTP/1.1\r\nContent-Length: {(1 << 20) + 1}"
        assert raw(address, server.port, ctx, head)[0] == 413

    context = pack(load(tmp_path / "hello" / "hello.rex"))
    run_dir = rex.root / "run"
    before = _tree(tmp_path, skip=run_dir)  # the state directory, the client's, the .rex
    for query in ("name=../../victim&file=hello.rex", "name=web2&file=../../victim.rex",
                  "name=web2&file=..", "name=%2E%2E&file=hello.rex"):  # fmt: skip
        with httpx.Client(verify=ctx, timeout=10) as http:
            answer = http.post(f"{remote.url_for('::1', server.port)}/v1/up?{query}",
                               content=context)  # fmt: skip
        assert answer.status_code == 400, (query, answer.text)
        assert error_of(answer.content)["exit_code"] == 2
    for bad in ("..", "..%2F..%2Fvictim", "Web"):
        status, payload = raw("::1", server.port, ctx, f"POST /v1/jails/{bad}/destroy HTTP/1.1")
        assert status == 400 and error_of(payload)["exit_code"] == 2
    assert _tree(tmp_path, skip=run_dir) == before
    assert not list(tmp_path.rglob("victim*")) and not list(tmp_path.parent.glob("victim*"))
