"""The framing between ``rex`` and its host's agent on the UNIX socket.

One request per connection. The client sends one JSON line, then, when the line
says so, a body of exactly that many bytes (the build context of ``up``,
``plan`` and ``build``)::

    {"v": 1, "op": "up", "args": {"name": "web", ...}, "body": 10240}\\n<body>

The agent answers with JSON lines until the last one, ``result`` or ``error``::

    {"step": "Starting web"}            a progress step (``==>`` on the terminal)
    {"output": "line"}                  a build step's output
    {"out": "line"}                     exec and logs output
    {"data": "BASE64"}                  bytes of a stream (rex cp out of a jail)
    {"result": ...}                     done
    {"error": {"message", "hint", "exit_code"}}
    {"need": "context"}                 a ``"text": true`` request (the .rex file
                                        alone) names COPY sources: send the tar

JSON lines and a length-prefixed body keep the client to the standard library
(their C halves, ``_socket`` and ``_json``: service/jsonc.py): the CLI's
start-up stays small, and the agent reads the peer's credentials from the
socket itself (agent/local.py).
"""

from __future__ import annotations

from rexcarcer.errors import RexError, UsageError
from rexcarcer.service import jsonc

TYPE_CHECKING = False  # typing imports re: the front door's thin client (cli/thin.py) imports this
if TYPE_CHECKING:
    from _socket import socket
    from collections.abc import Callable, Iterator
    from typing import IO, Any

    from rexcarcer.progress import Progress

VERSION = 1
# A request whose body is the .rex file alone ("text": true, cli/thin.py): an
# agent from before it refuses the version with its hint to match rex and the
# agent, rather than failing to unpack a tar. Agents take both.
TEXT_VERSION = 2
VERSIONS = (VERSION, TEXT_VERSION)
MAX_LINE = 1 << 20  # a request or frame line; bodies are counted separately
MAX_BODY = 1 << 30


class AgentError(RexError):
    """An error the agent reported: its message, hint and exit code travel as
    they are, so the CLI exits as it would have in process."""

    def __init__(self, message: str, *, hint: str | None, exit_code: int) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


def encode(obj: Any) -> bytes:
    return jsonc.dumps(obj).encode() + b"\n"


def error_frame(exc: RexError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}}


def raise_error(frame: dict[str, Any]) -> None:
    err = frame["error"]
    raise AgentError(str(err.get("message")), hint=err.get("hint"),
                     exit_code=int(err.get("exit_code") or RexError.exit_code))  # fmt: skip


class Reader:
    """Lines and exact-length bodies from a stream socket."""

    def __init__(self, sock: socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 16)
        self.buf += data
        return bool(data)

    def line(self) -> bytes | None:
        """The next line (without its newline), or None at the end of the stream."""
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_LINE:
                raise UsageError(f"a line longer than {MAX_LINE} bytes on the agent socket")
            if not self._fill():
                return None
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def body(self, size: int) -> bytes:
        if not 0 <= size <= MAX_BODY:
            raise UsageError(f"a request body of {size} bytes (at most {MAX_BODY})")
        while len(self.buf) < size:
            if not self._fill():
                raise UsageError("the request body ended early")
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def frames(self) -> Iterator[dict[str, Any]]:
        while (line := self.line()) is not None:
            obj = jsonc.loads(line.decode())
            if not isinstance(obj, dict):
                raise UsageError("a frame on the agent socket is not a JSON object")
            yield obj


class ContextNeeded(Exception):
    """The agent's answer to a ``.rex`` file sent alone that has COPY steps: the
    request must be sent again with the build context (agent/local.py)."""


def exchange(
    sock: socket,
    request: dict[str, Any],
    body: bytes,
    progress: Progress,
    *,
    sink: Callable[[str], None] | None = None,
    data: IO[bytes] | None = None,
    where: str = "the agent",
) -> Any:
    """Send one request on ``sock`` and read its frames to the end: progress to
    ``progress``, exec and logs output to ``sink``, stream bytes to ``data``;
    the result, or the agent's error raised as AgentError."""
    version = TEXT_VERSION if request.get("args", {}).get("text") is True else VERSION
    sock.sendall(encode({**request, "v": version, "body": len(body)}) + body)
    for frame in Reader(sock).frames():
        if "step" in frame:
            progress.step(str(frame["step"]))
        elif "output" in frame:
            progress.output(str(frame["output"]))
        elif "out" in frame:
            if sink is not None:
                sink(str(frame["out"]))
        elif "data" in frame and data is not None:
            import base64

            data.write(base64.b64decode(str(frame["data"])))
        elif "result" in frame:
            return frame["result"]
        elif "error" in frame:
            raise_error(frame)
        elif frame.get("need") == "context":
            raise ContextNeeded
    raise AgentError(f"{where} ended the request without an answer", hint="see the agent's log",
                     exit_code=UsageError.exit_code)  # fmt: skip
