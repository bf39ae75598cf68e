"""The unbound driver's wire protocol against a fake control socket, the
persisted include: file, and the sentinel probe against a fake DNS server."""

from __future__ import annotations

import contextlib
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest

from rexcarcer.dns import DnsError, probe
from rexcarcer.dns.records import Record, sentinel
from rexcarcer.dns.unbound import (
    FakeUnbound,
    Unbound,
    UnboundUnreachable,
    read_data_file,
    wait_ready,
    write_data_file,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "dns"
BULK = {"local_datas", "local_datas_remove"}
A = Record("a.jail.rex.internal.", "A", "203.0.113.2", 30)


class FakeControl:
    """A unix socket that speaks unbound's side of UBCT1 and records each request."""

    def __init__(self, path: Path, replies: dict[str, str] | None = None) -> None:
        self.path = path
        self.replies = replies or {}
        self.requests: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\n" not in data:
            data += conn.recv(4096)
        command = data.split(b"\n", 1)[0].split()[1].decode()
        if command in BULK:
            while not data.endswith(b"\x04\n"):
                data += conn.recv(65536)
        return data

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = self._read(conn)
                self.requests.append(data)
                command = data.split(b"\n", 1)[0].split()[1].decode()
                conn.sendall(self.replies.get(command, "ok\n").encode())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def control(tmp_path: Path) -> Iterator[FakeControl]:
    fake = FakeControl(tmp_path / "c.sock", {
        "status": (DATA / "status.txt").read_text(),
        "list_local_data": (DATA / "list_local_data.txt").read_text(),
        "local_datas": "added 1 datas\n",
        "local_datas_remove": "removed 1 datas\n",
    })  # fmt: skip
    yield fake
    fake.close()


def test_single_command_framing(control: FakeControl) -> None:
    Unbound(control.path).local_data(A.line())
    assert control.requests == [b"UBCT1 local_data a.jail.rex.internal. 30 IN A 203.0.113.2\n"]


def test_bulk_commands_send_one_line_each_then_eot(control: FakeControl) -> None:
    ub = Unbound(control.path)
    ub.add([A, sentinel("rex.internal")])
    ub.remove(["a.jail.rex.internal.", "b.jail.rex.internal."])
    assert control.requests == [
        b"UBCT1 local_datas\na.jail.rex.internal. 30 IN A 203.0.113.2\n"
        b'_rex-sentinel.rex.internal. 0 IN TXT "rexcarcer" "runtime"\n\x04\n',
        b"UBCT1 local_datas_remove\na.jail.rex.internal.\nb.jail.rex.internal.\n\x04\n",
    ]


def test_status_and_list_parse_saved_replies(control: FakeControl) -> None:
    ub = Unbound(control.path)
    assert ub.status() == f"unbound 1.17.1 on {control.path}"
    assert A in ub.list()
    assert ub.has(sentinel("rex.internal"))  # no listener: looked up in the list


def test_an_error_reply_raises_with_unbounds_words(tmp_path: Path) -> None:
    saved = (DATA / "local_datas_error.txt").read_text()
    fake = FakeControl(tmp_path / "e.sock", {"local_datas": saved, "local_data": "error x\n"})
    try:
        with pytest.raises(DnsError, match="line 2 position 5 'bogus'"):
            Unbound(fake.path).command("local_datas", ["ok.rex.internal. 30 IN A 1.2.3.4", "bogus"])
        with pytest.raises(DnsError, match="refused local_data: error x"):
            Unbound(fake.path).local_data(A.line())
    finally:
        fake.close()


def test_line_breaks_never_reach_the_socket(control: FakeControl) -> None:
    ub = Unbound(control.path)
    for bad in ["status\nreload", "local_data x\x04"]:
        with pytest.raises(DnsError, match="line break"):
            ub.command(bad)
    with pytest.raises(DnsError, match="line break"):
        ub.command("local_datas_remove", ["a.\nb."])
    with pytest.raises(DnsError, match="malformed"):
        ub.local_datas(["a.example.com. 30 IN A 1.2.3.4\nlocal-zone: x static"])
    assert control.requests == []


def test_unreachable_socket_says_how_to_start_unbound(tmp_path: Path) -> None:
    with pytest.raises(UnboundUnreachable) as err:
        Unbound(tmp_path / "none.sock").status()
    assert "rex host serve" in (err.value.hint or "")
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # a socket file nobody listens on: refused
    with pytest.raises(UnboundUnreachable):
        Unbound(stale).status()
    with pytest.raises(UnboundUnreachable):
        wait_ready(Unbound(stale), timeout=0.05)


def test_data_file_is_replaced_atomically_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "conf.d" / "rexcarcer-data.conf"
    write_data_file(path, [A])
    write_data_file(path, [A, Record("b.jail.rex.internal.", "A", "203.0.113.3", 30)])
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert len(read_data_file(path)) == 2 and A in read_data_file(path)
    assert read_data_file(tmp_path / "missing.conf") == []


def test_fake_unbound_reload_keeps_only_the_persisted_file() -> None:
    fake = FakeUnbound()
    fake.add([A, sentinel("rex.internal")])
    fake.persisted = {A}
    fake.reload()
    assert fake.list() == [A] and not fake.has(sentinel("rex.internal"))
    fake.up = False
    with pytest.raises(UnboundUnreachable):
        fake.remove([A.name])


# -- the sentinel probe -----------------------------------------------------------------


def test_query_packet_is_valid_dns() -> None:
    msg = dns.message.from_wire(probe.build_query(4242, "_rex-sentinel.rex.internal.", "TXT"))
    assert msg.id == 4242 and msg.question[0].to_text() == "_rex-sentinel.rex.internal. IN TXT"
    with pytest.raises(DnsError):
        probe.build_query(1, "a..b", "A")


def _udp_server(
    answer: Callable[[dns.message.Message], dns.message.Message],
) -> tuple[int, socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def loop() -> None:
        while True:
            try:
                data, peer = sock.recvfrom(4096)
                if not data:  # shut down
                    return
                query = dns.message.from_wire(data)
                sock.sendto(b"\x00\x00garbage", peer)  # a stray packet is ignored
                sock.sendto(answer(query).to_wire(), peer)
            except OSError:
                return

    threading.Thread(target=loop, daemon=True).start()
    return sock.getsockname()[1], sock


def test_probe_counts_answers_and_falls_back_when_nothing_listens(control: FakeControl) -> None:
    def reply(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        name = q.question[0].name.to_text()
        if name.startswith("_rex"):
            r.answer.append(dns.rrset.from_text(name, 0, "IN", "TXT", '"rexcarcer" "runtime"'))
        else:
            r.set_rcode(dns.rcode.NXDOMAIN)
        return r

    port, sock = _udp_server(reply)
    try:
        assert probe.query("127.0.0.1", port, "_rex-sentinel.rex.internal.", "TXT") == (0, 1)
        assert probe.query("127.0.0.1", port, "x.rex.internal.", "A") == (3, 0)
        assert Unbound(control.path, listener=("127.0.0.1", port)).has(sentinel("rex.internal"))
        assert not Unbound(control.path, listener=("127.0.0.1", port)).has(A)
    finally:
        with contextlib.suppress(OSError):  # ENOTCONN, but it wakes the thread's recvfrom,
            sock.shutdown(socket.SHUT_RDWR)  # which a bare close() would not
        sock.close()
    # nothing on the listener: the control socket's list decides
    assert Unbound(control.path, listener=("127.0.0.1", port)).has(A)
