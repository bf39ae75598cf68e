"""The agent's UNIX socket: this host's jail service for its own ``rex`` commands
(the client is service/socket.py, the framing service/wire.py).

Who may connect is checked twice: the socket file is 0660 with the configured
group (0600, root only, without one), and every connection's peer credentials
(SO_PEERCRED / LOCAL_PEERCRED, through the platform) must be root's or carry
that group. Members of the group are root-equivalent (docs/security.md).

Each connection is one request, served in a thread of its own with a fresh
engine; at most ``MAX_CLIENTS`` run at once, further ones wait for a slot.

``up``, ``plan`` and ``build`` take the build context as a tar (service/socket.py
packs it), or, from the front door's thin client (cli/thin.py), the bytes of
the ``.rex`` file alone (``"text": true``). The agent parses those under the
client's name for the file, so an error reads as the client's own parse would;
a file with COPY steps needs its sources, and the answer is then a ``need``
frame: the client sends the request again with the tar.
"""

from __future__ import annotations

import contextlib
import grp
import io
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from rexcarcer.buildctx import rexfile_name, unpack, unpack_text
from rexcarcer.errors import RexError, UsageError
from rexcarcer.model.jail import JailInfo
from rexcarcer.names import check_jail_name
from rexcarcer.platform.base import PeerIds, Platform
from rexcarcer.progress import Progress
from rexcarcer.rexfile.ast import Copy, Rexfile
from rexcarcer.rexfile.parser import load, parse_bytes
from rexcarcer.service import wire
from rexcarcer.service.api import JailService

log = logging.getLogger("rexcarcer.agent")

MAX_CLIENTS = 64
IDLE_TIMEOUT = 30.0  # seconds to send the request line and body


class FrameProgress:
    """Progress sent to the client as ``step`` and ``output`` frames."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self.send = send

    def step(self, message: str) -> None:
        self.send({"step": message})

    def output(self, line: str) -> None:
        self.send({"output": line})


class LocalServer:
    def __init__(
        self,
        path: Path,
        platform: Platform,
        service: Callable[[Progress], JailService],
        *,
        group: str = "",
        work: Path,
    ) -> None:
        self.path = path
        self.platform = platform
        self.service = service
        self.gid = _group_id(group) if group else None
        self.work = work
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.sock: socket.socket | None = None
        self.stopped = threading.Event()

    # -- the socket --------------------------------------------------------------------

    def listen(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if _answers(self.path):
                raise UsageError(f"another agent already serves {self.path}",
                                 hint="stop it first (one agent per host)")  # fmt: skip
            self.path.unlink()  # left by an agent that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # never reachable by others, even for an instant
        try:
            sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            raise UsageError(
                f"cannot listen on {self.path}: {exc.strerror}",
                hint="set REX_AGENT_SOCKET to a shorter or writable path",
            ) from exc
        finally:
            os.umask(old)
        if self.gid is not None:
            os.chown(self.path, 0, self.gid)
            os.chmod(self.path, 0o660)
        sock.listen(128)
        self.sock = sock

    def serve_forever(self) -> None:
        assert self.sock is not None
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                if self.stopped.is_set():
                    return
                raise
            self.slots.acquire()
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name="agent-local").start()  # fmt: skip

    def start(self) -> threading.Thread:
        self.listen()
        thread = threading.Thread(target=self.serve_forever, name="agent-socket", daemon=True)
        thread.start()
        log.info("agent: serving rex on %s", self.path)
        return thread

    def stop(self) -> None:
        self.stopped.set()
        if self.sock is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    # -- one connection ----------------------------------------------------------------

    def allowed(self, peer: PeerIds) -> bool:
        return peer.uid == 0 or (self.gid is not None and self.gid in peer.gids)

    def _serve(self, conn: socket.socket) -> None:
        def send(frame: dict[str, Any]) -> None:
            conn.sendall(wire.encode(frame))

        try:
            with conn:
                peer = self.platform.peer_ids(conn)
                if not self.allowed(peer):
                    log.warning("agent: refused uid %d on %s", peer.uid, self.path)
                    send(wire.error_frame(UsageError(
                        "permission denied: the agent serves root and its group only",
                        hint="run rex as root, or join the group set in REX_AGENT_GROUP",
                    )))  # fmt: skip
                    return
                conn.settimeout(IDLE_TIMEOUT)
                reader = wire.Reader(conn)
                request = _request(reader)
                if request is None:  # a client that only checked the agent runs
                    return
                op, args, body = request
                conn.settimeout(None)
                log.info(
                    "agent: %s %s for uid %d",
                    op,
                    args.get("name") or args.get("file") or "",
                    peer.uid,
                )
                try:
                    send({"result": self.handle(op, args, body, send)})
                except wire.ContextNeeded:
                    send({"need": "context"})
                except RexError as exc:
                    send(wire.error_frame(exc))
        except (OSError, ValueError, RexError) as exc:  # the client went away or spoke nonsense
            log.info("agent: a request on %s ended: %s", self.path, exc)
        finally:
            self.slots.release()

    def handle(
        self, op: str, args: dict[str, Any], body: bytes, send: Callable[[dict[str, Any]], None]
    ) -> Any:
        svc = self.service(FrameProgress(send))
        try:
            return self._dispatch(svc, op, args, body, send)
        finally:
            svc.close()

    def _dispatch(
        self,
        svc: JailService,
        op: str,
        args: dict[str, Any],
        body: bytes,
        send: Callable[[dict[str, Any]], None],
    ) -> Any:
        def out(line: str) -> None:
            send({"out": line})

        text = op in ("up", "plan") and args.get("text") is True  # name: the file's stem by default
        name = _str(args, "name") if op not in ("build", "ls", "volumes") and not text else ""
        if op in ("up", "plan", "build"):
            with self._context(args, body) as rexfile:
                if text:
                    given = args.get("name")
                    name = check_jail_name(given if isinstance(given, str) and given
                                           else rexfile.default_name)  # fmt: skip
                on_host = args.get("on_host")
                on_host = on_host if isinstance(on_host, str) else None
                if op == "up":
                    return svc.up(rexfile, name, on_host=on_host).as_json()
                if op == "plan":
                    return [a.as_json() for a in svc.plan(rexfile, name, on_host=on_host)]
                return svc.build(rexfile)
        if op == "start":
            return _info(svc.start(name))
        if op == "stop":
            return _info(svc.stop(name))
        if op == "restart":
            return _info(svc.restart(name))
        if op == "destroy":
            return svc.destroy(name, volumes=bool(args.get("volumes")))
        if op == "rollback":
            to = args.get("to")
            if to is not None and (type(to) is not int or to < 1):
                raise UsageError("rollback: the generation is a number >= 1")
            return svc.rollback(name, to=to).as_json()
        if op == "history":
            return [g.as_json() for g in svc.history(name)]
        if op == "cp-in":
            svc.cp_in(name, _str(args, "dst"), io.BytesIO(body))
            return None
        if op == "cp-out":
            stream = io.BufferedWriter(_DataFrames(send), buffer_size=DATA_FRAME)
            svc.cp_out(name, _str(args, "src"), stream)
            stream.flush()
            return None
        if op == "move":
            return svc.move(name, _str(args, "to")).as_json()
        if op == "volumes":
            return [v.as_json() for v in svc.volumes()]
        if op == "volume-rm":
            svc.volume_rm(name, _str(args, "volume"))
            return None
        if op == "volume-snapshot":
            label = args.get("label")
            return svc.volume_snapshot(name, _str(args, "volume"),
                                       label if isinstance(label, str) else None)  # fmt: skip
        if op == "exec":
            argv = args.get("argv")
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise UsageError("exec: argv must be a non-empty list of strings")
            return svc.exec(name, argv, interactive=False, sink=out)
        if op == "ls":
            return [i.as_json() for i in svc.ls()]
        if op == "logs":
            lines = args.get("lines")
            if lines is not None and (type(lines) is not int or lines < 0):
                raise UsageError("logs: lines must be a number >= 0")
            svc.logs(name, lines=lines, follow=bool(args.get("follow")), sink=out)
            return None
        raise UsageError(f"the agent has no operation {op!r}", hint="is rex newer than its agent?")

    @contextlib.contextmanager
    def _context(self, args: dict[str, Any], body: bytes) -> Any:
        self.work.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="ctx-", dir=self.work))
        origin = args.get("origin")
        origin = origin if isinstance(origin, str) and origin else None
        try:
            if args.get("text") is True:
                path = work / rexfile_name(_str(args, "file"))
                # parsed (and its size checked) before anything is written
                rexfile: Rexfile = parse_bytes(body, file=origin or str(path), path=path)
                if any(isinstance(step, Copy) for step in rexfile.steps):
                    raise wire.ContextNeeded
                unpack_text(body, path)  # another host's agent is sent the file (routed.py)
            else:
                rexfile = load(unpack(body, work, _str(args, "file")))
            yield replace(rexfile, origin=origin)
        finally:
            shutil.rmtree(work, ignore_errors=True)


DATA_FRAME = 256 << 10  # bytes of a data frame: its base64 stays below wire.MAX_LINE


class _DataFrames(io.RawIOBase):
    """A stream the client receives as ``{"data": BASE64}`` frames (rex cp out)."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.send = send

    def writable(self) -> bool:
        return True

    def write(self, data: Any, /) -> int:  # a bytes-like object
        import base64

        payload = bytes(data)
        self.send({"data": base64.b64encode(payload).decode()})
        return len(payload)


def _request(reader: wire.Reader) -> tuple[str, dict[str, Any], bytes] | None:
    line = reader.line()
    if line is None:
        return None
    import json

    req = json.loads(line)
    if not isinstance(req, dict) or req.get("v") not in wire.VERSIONS:
        raise UsageError("a request of another protocol version",
                         hint="run the rex that matches this agent")  # fmt: skip
    op, args, size = req.get("op"), req.get("args"), req.get("body", 0)
    if not isinstance(op, str) or not isinstance(args, dict) or type(size) is not int:
        raise UsageError("a malformed request")
    return op, args, reader.body(size)


def _str(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise UsageError(f"the request lacks {key!r}")
    return value


def _info(info: JailInfo) -> dict[str, Any]:
    return info.as_json()


def _group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError as exc:
        raise UsageError(f"no group {name!r} (REX_AGENT_GROUP)",
                         hint="create it, or unset REX_AGENT_GROUP") from exc  # fmt: skip


def _answers(path: Path) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        sock.close()
