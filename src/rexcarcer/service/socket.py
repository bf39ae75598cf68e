"""The jail service through this host's agent, over its UNIX socket (the second
door; the server is agent/local.py, the framing service/wire.py).

Files a request names on this host (the ``.rex`` file and its COPY sources)
are read here, by the client, and streamed to the agent as the build context:
the agent never opens a host path on a client's word.

``exec`` goes straight into the jail when this process may do so (root): the
agent is not in the way of a terminal. Otherwise the agent runs the command
and streams its output (no terminal, no standard input).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from rexcarcer.buildctx import pack
from rexcarcer.errors import UsageError
from rexcarcer.model.jail import ExportInfo, GenerationInfo, JailInfo, VolumeInfo
from rexcarcer.model.plan import Action
from rexcarcer.progress import Progress
from rexcarcer.rexfile.ast import Rexfile
from rexcarcer.run import OutputSink
from rexcarcer.service import wire
from rexcarcer.service.api import JailService

# sockaddr_un.sun_path: 108 bytes on Linux, 104 on FreeBSD (with the NUL)
SUN_PATH_MAX = 103


def connect(path: Path) -> socket.socket | None:
    """A connection to the agent, or None when no agent listens at ``path``."""
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise UsageError(f"the agent socket path {path} is too long for a UNIX socket",
                         hint="set REX_AGENT_SOCKET to a shorter path")  # fmt: skip
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UsageError(
                f"permission denied on the agent socket {path}",
                hint="run rex as root, or as a member of the group the agent admits "
                "(REX_AGENT_GROUP)",
            ) from exc
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
            return None
        raise UsageError(f"cannot reach the agent at {path}: {exc.strerror}") from exc
    return sock


def agent_answers(path: Path) -> bool:
    """Whether an agent listens at ``path`` (it runs on this host)."""
    try:
        sock = connect(path)
    except UsageError:  # not ours to use, but someone listens
        return True
    if sock is None:
        return False
    sock.close()  # the agent reads no request and lets it go
    return True


class SocketService:
    def __init__(
        self, path: Path, progress: Progress, direct: Callable[[], JailService] | None = None
    ) -> None:
        self.path = path
        self.progress = progress
        self.direct = direct  # the in-process service, for exec as root (None: never)

    def _call(self, op: str, args: dict[str, Any], body: bytes = b"",
              sink: OutputSink | None = None, data: IO[bytes] | None = None) -> Any:  # fmt: skip
        sock = connect(self.path)
        if sock is None:
            raise wire.AgentError(f"the agent at {self.path} went away", hint="try again",
                                  exit_code=UsageError.exit_code)  # fmt: skip
        with sock:
            return wire.exchange(sock, {"op": op, "args": args}, body, self.progress, sink=sink,
                                 data=data, where=f"the agent at {self.path}")  # fmt: skip

    def _context(self, rexfile: Rexfile) -> tuple[dict[str, Any], bytes]:
        if rexfile.path is None:
            raise UsageError("only a .rex file on disk can be sent to the agent")
        return {"file": rexfile.path.name, "origin": rexfile.display}, pack(rexfile)

    def up(self, rexfile: Rexfile, name: str, *, on_host: str | None = None) -> JailInfo:
        args, body = self._context(rexfile)
        result = self._call("up", {**args, "name": name, "on_host": on_host}, body)
        return JailInfo.from_json(result)

    def plan(self, rexfile: Rexfile, name: str, *, on_host: str | None = None) -> list[Action]:
        args, body = self._context(rexfile)
        result = self._call("plan", {**args, "name": name, "on_host": on_host}, body)
        return [Action.from_json(a) for a in result]

    def build(self, rexfile: Rexfile) -> str:
        args, body = self._context(rexfile)
        return str(self._call("build", args, body))

    def start(self, name: str) -> JailInfo:
        return JailInfo.from_json(self._call("start", {"name": name}))

    def stop(self, name: str) -> JailInfo:
        return JailInfo.from_json(self._call("stop", {"name": name}))

    def restart(self, name: str) -> JailInfo:
        return JailInfo.from_json(self._call("restart", {"name": name}))

    def destroy(self, name: str, *, volumes: bool = False) -> list[str]:
        return [str(v) for v in self._call("destroy", {"name": name, "volumes": volumes})]

    def rollback(self, name: str, *, to: int | None = None) -> JailInfo:
        return JailInfo.from_json(self._call("rollback", {"name": name, "to": to}))

    def history(self, name: str) -> list[GenerationInfo]:
        return [GenerationInfo.from_json(g) for g in self._call("history", {"name": name})]

    def volumes(self) -> list[VolumeInfo]:
        return [VolumeInfo.from_json(v) for v in self._call("volumes", {})]

    def volume_rm(self, jail: str, volume: str) -> None:
        self._call("volume-rm", {"name": jail, "volume": volume})

    def volume_snapshot(self, jail: str, volume: str, label: str | None) -> str:
        return str(self._call("volume-snapshot", {"name": jail, "volume": volume, "label": label}))

    def exec(
        self, name: str, argv: Sequence[str], *, interactive: bool, sink: OutputSink | None
    ) -> int:
        if self.direct is not None and os.geteuid() == 0:
            return self.direct().exec(name, argv, interactive=interactive, sink=sink)
        return int(self._call("exec", {"name": name, "argv": list(argv)}, sink=sink or _stdout))

    def _root(self) -> JailService | None:
        """The in-process service when this process may use it (root)."""
        return self.direct() if self.direct is not None and os.geteuid() == 0 else None

    def cp_in(self, name: str, dst: str, tar: IO[bytes]) -> None:
        direct = self._root()
        if direct is not None:  # streamed, in process
            return direct.cp_in(name, dst, tar)
        body = tar.read(wire.MAX_BODY + 1)
        self._call("cp-in", {"name": name, "dst": dst}, body)
        return None

    def cp_out(self, name: str, src: str, out: IO[bytes]) -> None:
        direct = self._root()
        if direct is not None:
            return direct.cp_out(name, src, out)
        self._call("cp-out", {"name": name, "src": src}, data=out)
        return None

    def console(self, name: str) -> int:
        direct = self._root()
        if direct is None:
            raise UsageError("a console needs a terminal in the jail: run `rex console` as root",
                             hint="or use `rex exec NAME -- COMMAND`")  # fmt: skip
        return direct.console(name)

    def export(self, name: str, out: IO[bytes]) -> ExportInfo:
        return self._as_root("export").export(name, out)

    def import_(self, source: IO[bytes], *, name: str | None = None) -> JailInfo:
        return self._as_root("import").import_(source, name=name)

    def _as_root(self, verb: str) -> JailService:
        direct = self._root()
        if direct is None:
            raise UsageError(f"rex {verb} reads and writes ZFS streams: run it as root")
        return direct

    def move(self, name: str, to: str) -> JailInfo:
        return JailInfo.from_json(self._call("move", {"name": name, "to": to}))

    def ls(self) -> list[JailInfo]:
        return [JailInfo.from_json(j) for j in self._call("ls", {})]

    def logs(self, name: str, *, lines: int | None, follow: bool, sink: OutputSink) -> None:
        self._call("logs", {"name": name, "lines": lines, "follow": follow}, sink=sink)

    def close(self) -> None:
        pass


def _stdout(line: str) -> None:
    import sys

    sys.stdout.write(line)
    sys.stdout.flush()
