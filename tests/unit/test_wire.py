"""The agent socket's framing (service/wire.py) and the agent's reading of a
request (agent/local.py): versions, and the frames a client acts on."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from rexcarcer.agent.local import _request
from rexcarcer.errors import UsageError
from rexcarcer.progress import QuietProgress
from rexcarcer.service import wire

pytestmark = pytest.mark.unit


def _agent(frames: list[dict[str, object]]) -> tuple[socket.socket, list[bytes]]:
    """A client socket whose other end records the request and answers ``frames``."""
    client, server = socket.socketpair()
    seen: list[bytes] = []

    def serve() -> None:
        with server:
            reader = wire.Reader(server)
            line = reader.line()
            assert line is not None
            seen.append(line)
            seen.append(reader.body(json.loads(line)["body"]))
            for f in frames:
                server.sendall(wire.encode(f))

    threading.Thread(target=serve, daemon=True).start()
    return client, seen


def test_exchange_streams_progress_and_returns_the_result() -> None:
    client, seen = _agent([{"step": "Starting"}, {"output": "built"}, {"result": {"a": 1}}])
    progress = QuietProgress()
    with client:
        got = wire.exchange(client, {"op": "ls", "args": {}}, b"", progress)
    assert got == {"a": 1} and progress.messages == ["Starting"] and progress.lines == ["built"]
    assert json.loads(seen[0]) == {"op": "ls", "args": {}, "v": wire.VERSION, "body": 0}


def test_a_rex_file_alone_is_the_text_version_and_may_be_asked_for_its_context() -> None:
    client, seen = _agent([{"need": "context"}])
    with client, pytest.raises(wire.ContextNeeded):
        wire.exchange(client, {"op": "up", "args": {"text": True}}, b"BASE x\n", QuietProgress())
    assert json.loads(seen[0])["v"] == wire.TEXT_VERSION and seen[1] == b"BASE x\n"


def test_errors_and_silence() -> None:
    client, _ = _agent([{"error": {"message": "no", "hint": "h", "exit_code": 11}}])
    with client, pytest.raises(wire.AgentError) as err:
        wire.exchange(client, {"op": "ls", "args": {}}, b"", QuietProgress())
    assert (err.value.message, err.value.hint, err.value.exit_code) == ("no", "h", 11)
    client, _ = _agent([])
    with client, pytest.raises(wire.AgentError, match="ended the request without an answer"):
        wire.exchange(client, {"op": "ls", "args": {}}, b"", QuietProgress(), where="it")


@pytest.mark.parametrize("version", [1, 2])
def test_the_agent_reads_both_versions(version: int) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(
            wire.encode({"v": version, "op": "up", "args": {"text": True}, "body": 3}) + b"abc"
        )
        assert _request(wire.Reader(b)) == ("up", {"text": True}, b"abc")


def test_the_agent_refuses_another_version() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(wire.encode({"v": 3, "op": "ls", "args": {}, "body": 0}))
        with pytest.raises(UsageError, match="another protocol version"):
            _request(wire.Reader(b))


# -- service/jsonc.py: json's C half, the same text as json ----------------------

VALUES: list[object] = [
    {"v": 2, "op": "up", "args": {"name": "web", "text": True, "host": None}, "body": 120},
    {"result": [{"name": "web", "usage": {"memory": 12345678901234}, "ratio": 0.25}]},
    {"step": "Starting caf\u00e9 \u2603 \U0001f600", "tab": 'a\tb\n"q" \\'},
    [],
    {},
    "plain",
    -0.0,
    1e300,
    [True, False, None, 0, -1],
]


@pytest.mark.parametrize("value", VALUES)
def test_jsonc_writes_and_reads_what_json_does(value: object) -> None:
    from rexcarcer.service import jsonc

    text = jsonc.dumps(value)
    assert text == json.dumps(value, separators=(",", ":"))
    assert jsonc.loads(text) == value
    assert jsonc.loads(" \n" + json.dumps(value, indent=2) + "\r\n ") == value


@pytest.mark.parametrize("bad", ["", "{", '{"a":1} x', "{'a':1}", "[1,]", "nul", '"\x01"'])
def test_jsonc_refuses_what_json_refuses(bad: str) -> None:
    from rexcarcer.service import jsonc

    with pytest.raises(ValueError):
        json.loads(bad)
    with pytest.raises(ValueError):
        jsonc.loads(bad)


def test_jsonc_refuses_what_it_cannot_write() -> None:
    from rexcarcer.service import jsonc

    with pytest.raises(TypeError, match="not JSON serializable"):
        jsonc.dumps({"a": object()})


def test_jsonc_without_json_c_half_uses_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from rexcarcer.service import jsonc

    monkeypatch.setattr(jsonc, "_SCAN", None)
    monkeypatch.setattr(jsonc, "_ENCODE", None)
    for value in VALUES:
        assert jsonc.loads(jsonc.dumps(value)) == value
    with pytest.raises(ValueError):
        jsonc.loads("{")


def test_the_thin_client_path_imports_neither_json_nor_socket_py() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from rexcarcer.service import wire; from rexcarcer.cli import thin, render; "
        "print(sorted(m for m in ('json', 'socket', 're', 'enum') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
