"""Throughput and latency of the agents' mutual-TLS API (agent/remote.py).

    .venv/bin/python bench/bench_api.py [--requests N] [--connections N]
                                        [--clients C] [--idle I]

``GET /v1/health`` with a host's client certificate, over TLS 1.3 on
127.0.0.1: each request authorised as in production (cluster/auth.py, against
a memory store), answered by the real server. Two ways of asking: keep-alive
(C client threads, each one connection, N requests in all) and a new
connection (TCP and TLS handshake) for each request (``Connection: close``,
N' requests). Each alone, then again while I idle connections are held open
(half never start TLS, half finish the handshake and send nothing; the server's
timeouts are raised for the run so that they stay, and the table says how many
were still open at the end). The clients are httpx in this process, on the
same two cores as the server: the figures are of both, not of the server alone.
No root needed; nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import httpx

from rexcarcer.agent import remote
from rexcarcer.agent.listener import Limits
from rexcarcer.cluster import model, tls
from rexcarcer.config import load_config
from rexcarcer.pki import ca
from rexcarcer.pki.layout import CaPaths
from rexcarcer.service.local import LocalService
from rexcarcer.state.base import put_json
from rexcarcer.state.memory import MemoryStore


def _no_engine() -> Any:
    raise AssertionError("health needs no engine")


def _measure(url: str, ctx: ssl.SSLContext, total: int, clients: int, close: bool) -> list[float]:
    """Latencies (s) of ``total`` health requests from ``clients`` threads."""
    latencies: list[float] = []
    lock = threading.Lock()
    headers = {"Connection": "close"} if close else {}

    def client(n: int) -> None:
        mine = []
        with httpx.Client(verify=ctx, timeout=30, headers=headers) as http:
            for _ in range(n):
                t0 = time.perf_counter()
                answer = http.get(f"{url}/v1/health")
                mine.append(time.perf_counter() - t0)
                assert answer.status_code == 200, answer.text
        with lock:
            latencies.extend(mine)

    share = [total // clients + (i < total % clients) for i in range(clients)]
    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def _idle(port: int, ctx: ssl.SSLContext, n: int) -> list[socket.socket]:
    out: list[socket.socket] = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        out.append(ctx.wrap_socket(s, server_hostname="127.0.0.1") if i % 2 else s)
    return out


def _still_open(socks: list[socket.socket]) -> int:
    held = 0
    for s in socks:
        s.setblocking(False)
        try:
            held += s.recv(1) != b""
        except (BlockingIOError, ssl.SSLWantReadError):
            held += 1
        except OSError:
            pass
    return held


def _row(name: str, idle: str, lat: list[float], wall: float) -> str:
    q = statistics.quantiles(lat, n=100)
    return (f"{name:34} {idle:>9} {len(lat):>8} {len(lat) / wall:>9.0f} "
            f"{statistics.median(lat) * 1000:>8.2f} {q[98] * 1000:>8.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000, help="keep-alive requests")
    ap.add_argument("--connections", type=int, default=600, help="requests on new connections")
    ap.add_argument("--clients", type=int, default=4, help="client threads")
    ap.add_argument("--idle", type=int, default=300, help="idle connections held")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rexbench-api-"))
    server = None
    held: list[socket.socket] = []
    try:
        h1 = load_config(root=work / "h1", environ={"REX_HOST": "h1"})
        h2 = load_config(root=work / "h2", environ={"REX_HOST": "h2"})
        now = ca.utcnow()
        ca.install(CaPaths.under(h1.root), ca.self_signed(ca.CaSettings(), now), now=now)
        shutil.copytree(h1.root / "ca", h2.root / "ca")
        store = MemoryStore()
        for h in ("h1", "h2"):
            put_json(store, model.host_key(h), {"name": h, "address": "127.0.0.1"})
        api = remote.Api(h2, store, LocalService(_no_engine))
        limits = Limits(handshake=600, header=600)  # the idle ones stay for the whole run
        server = remote.serve(api, tls.ensure(h2, "127.0.0.1"), "127.0.0.1", 0, limits)
        url = remote.url_for("127.0.0.1", server.port)
        ctx = tls.ensure(h1, "127.0.0.1").client_context()
        _measure(url, ctx, 100, 1, close=False)  # warm up

        runs: list[tuple[str, Callable[[], list[float]]]] = [
            (f"keep-alive ({args.clients} connections)",
             lambda: _measure(url, ctx, args.requests, args.clients, close=False)),
            ("new connection per request",
             lambda: _measure(url, ctx, args.connections, args.clients, close=True)),
        ]  # fmt: skip
        rows = []
        for idle in (0, args.idle):
            if idle:
                held = _idle(server.port, ctx, idle)
                while server.open_connections() < idle:
                    time.sleep(0.01)
            for name, run in runs:
                t0 = time.perf_counter()
                lat = run()
                rows.append(_row(name, str(idle), lat, time.perf_counter() - t0))
        threads = len(os.listdir("/proc/self/task")) if Path("/proc/self/task").exists() else -1
        still = _still_open(held)
        print(f"GET /v1/health over mutual TLS on 127.0.0.1, {args.clients} client threads, "
              f"{os.cpu_count()} cores (clients and server share them)")  # fmt: skip
        print(f"{'scenario':34} {'idle held':>9} {'requests':>8} {'req/s':>9} "
              f"{'p50 ms':>8} {'p99 ms':>8}")  # fmt: skip
        for row in rows:
            print(row)
        print(
            f"idle connections still open at the end: {still} of {len(held)} "
            f"(half before TLS, half after the handshake); threads in this process: {threads}"
        )
    finally:
        for s in held:
            s.close()
        if server is not None:
            server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
