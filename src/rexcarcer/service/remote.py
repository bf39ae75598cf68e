"""The jail service on another host, through its agent's API over mutual TLS
(the third door; the server is agent/remote.py).

::

    POST /v1/up?name=JAIL&file=NAME.rex&origin=PATH   body: the build context
    POST /v1/jails/JAIL/start|stop|restart|destroy
    POST /v1/jails/JAIL/exec                           body: {"argv": [...]}

Answers: 200 ``{"jail": JailInfo}`` (exec: one JSON object a line,
``{"out": LINE}`` ... then ``{"exit": STATUS}``); errors ``{"error", "hint",
"exit_code"}``, raised here as ``RemoteError`` with that exit code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

from rexcarcer.buildctx import pack
from rexcarcer.cluster import AgentApiError, RemoteError, model
from rexcarcer.cluster.tls import TlsFiles
from rexcarcer.config import Config
from rexcarcer.errors import UsageError
from rexcarcer.model.jail import ExportInfo, GenerationInfo, JailInfo, VolumeInfo
from rexcarcer.model.plan import Action
from rexcarcer.progress import Progress
from rexcarcer.rexfile.ast import Rexfile
from rexcarcer.run import OutputSink
from rexcarcer.state.base import Store

if TYPE_CHECKING:
    import httpx

TIMEOUT = 10.0  # seconds to connect; the build itself may take long
BUILD_TIMEOUT = 3600.0


def api_url(store: Store, host: str) -> str:
    """The URL the host's agent published beside its liveness key."""
    entry = store.get(model.alive_key(host))
    if entry is None:
        raise AgentApiError(
            f"host {host!r} is not alive: its agent does not run",
            hint=f"start `rex agent` on {host}, or run the command there",
        )
    url = entry.json().get("api")
    if not url:
        raise AgentApiError(
            f"host {host!r}'s agent serves no API",
            hint="its agent runs with --no-api, or found no cluster CA (see its log)",
        )
    return str(url)


def credentials(config: Config, store: Store) -> TlsFiles:
    from rexcarcer.cluster import tls
    from rexcarcer.secret.publish import keep_sealing_key

    rec = store.get(model.host_key(config.host))
    if rec is None:
        raise AgentApiError(
            f"this host ({config.host}) has not joined the cluster: it has no API credentials",
            hint="run `rex up` on a cluster host (`rex cluster join` first)",
        )
    address = str(rec.json()["address"])
    # a new key seals this host's secrets again before it is published (secret/)
    return keep_sealing_key(config, store, lambda: tls.ensure(config, address, store=store))


class Agent:
    """Another host's agent, through this host's credentials."""

    def __init__(self, config: Config, store: Store, host: str) -> None:
        self.host = host
        self.files = credentials(config, store)
        self.url = api_url(store, host)

    def _client(self, read: float | None) -> httpx.Client:
        import httpx

        timeout = httpx.Timeout(TIMEOUT, read=read)
        return httpx.Client(verify=self.files.client_context(), timeout=timeout)

    def _request(self, method: str, path: str, key: str = "jail", **kw: Any) -> Any:
        import httpx

        try:
            with self._client(BUILD_TIMEOUT) as http:
                answer = http.request(method, f"{self.url}{path}", **kw)
        except httpx.HTTPError as exc:
            raise AgentApiError(
                f"cannot reach host {self.host}'s agent at {self.url}: {exc}",
                hint="check that `rex agent` runs there and that both hosts share the cluster CA",
            ) from exc
        return result(self.host, answer.status_code, answer.content, key)

    def _post(self, path: str, **kw: Any) -> dict[str, Any]:
        found: dict[str, Any] = self._request("POST", path, **kw)
        return found


class RemoteService(Agent):
    """Jail verbs on host ``host``; the others are answered where the jail runs."""

    def up(self, rexfile: Rexfile, name: str, *, on_host: str | None = None) -> JailInfo:
        assert rexfile.path is not None
        params = {"name": name, "file": rexfile.path.name, "origin": rexfile.display}
        return JailInfo.from_json(self._post("/v1/up", params=params, content=pack(rexfile)))

    def plan(self, rexfile: Rexfile, name: str, *, on_host: str | None = None) -> list[Action]:
        raise self._elsewhere("plan")

    def build(self, rexfile: Rexfile) -> str:
        raise self._elsewhere("build")

    def start(self, name: str) -> JailInfo:
        return JailInfo.from_json(self._post(f"/v1/jails/{name}/start"))

    def stop(self, name: str) -> JailInfo:
        return JailInfo.from_json(self._post(f"/v1/jails/{name}/stop"))

    def restart(self, name: str) -> JailInfo:
        return JailInfo.from_json(self._post(f"/v1/jails/{name}/restart"))

    def destroy(self, name: str, *, volumes: bool = False) -> list[str]:
        params = {"volumes": "1"} if volumes else {}
        done = self._post(f"/v1/jails/{name}/destroy", params=params)
        return [str(v) for v in done.get("kept", [])]

    def rollback(self, name: str, *, to: int | None = None) -> JailInfo:
        params = {"to": str(to)} if to is not None else {}
        return JailInfo.from_json(self._post(f"/v1/jails/{name}/rollback", params=params))

    def history(self, name: str) -> list[GenerationInfo]:
        found = self._request("GET", f"/v1/jails/{name}/history", "generations")
        return [GenerationInfo.from_json(g) for g in found]

    def volumes(self) -> list[VolumeInfo]:
        return [VolumeInfo.from_json(v) for v in self._request("GET", "/v1/volumes", "volumes")]

    def volume_rm(self, jail: str, volume: str) -> None:
        self._request("POST", f"/v1/jails/{jail}/volumes/{volume}/rm", "volume")

    def volume_snapshot(self, jail: str, volume: str, label: str | None) -> str:
        params = {"label": label} if label else {}
        path = f"/v1/jails/{jail}/volumes/{volume}/snapshot"
        return str(self._request("POST", path, "snapshot", params=params))

    def _on_host(self, verb: str, name: str) -> UsageError:
        return UsageError(f"jail {name} runs on host {self.host}",
                          hint=f"run `rex {verb} {name}` on {self.host}")  # fmt: skip

    def exec(
        self, name: str, argv: Sequence[str], *, interactive: bool, sink: OutputSink | None
    ) -> int:
        """Output (stdout and stderr merged, line by line) to ``sink`` as it comes;
        no terminal or standard input travels (``rex console`` has both)."""
        import httpx

        out = sink or _stdout
        try:
            with (
                self._client(None) as http,  # no read timeout: a command may be quiet
                http.stream("POST", f"{self.url}/v1/jails/{name}/exec",
                            json={"argv": list(argv)}) as answer,
            ):  # fmt: skip
                if answer.status_code != 200:
                    result(self.host, answer.status_code, answer.read())
                for line in answer.iter_lines():
                    frame = json.loads(line)
                    if "out" in frame:
                        out(str(frame["out"]))
                    elif "exit" in frame:
                        return int(frame["exit"])
                    else:
                        result(self.host, 422, line.encode())
        except httpx.HTTPError as exc:
            raise AgentApiError(
                f"lost host {self.host}'s agent at {self.url} while running the command: {exc}",
                hint=f"run the command on {self.host} (`rex exec {name} -- ...` there)",
            ) from exc
        except ValueError as exc:
            raise AgentApiError(
                f"host {self.host}'s agent sent a malformed exec frame: {exc}"
            ) from exc
        raise AgentApiError(
            f"host {self.host}'s agent ended the command without an exit status",
            hint=f"run the command on {self.host} to see what happens",
        )

    def cp_in(self, name: str, dst: str, tar: IO[bytes]) -> None:
        size = _size(tar)
        headers = {"Content-Length": str(size), "Content-Type": "application/x-tar"}
        self._post(f"/v1/jails/{name}/cp-in", params={"dst": dst},
                   content=_chunks(tar, size), headers=headers)  # fmt: skip

    def cp_out(self, name: str, src: str, out: IO[bytes]) -> None:
        """The tar arrives in frames (frames.py): data, then the end, or an error."""
        import httpx

        from rexcarcer.service import frames

        try:
            with (
                self._client(None) as http,
                http.stream("GET", f"{self.url}/v1/jails/{name}/cp-out",
                            params={"src": src}) as answer,
            ):  # fmt: skip
                if answer.status_code != 200:
                    result(self.host, answer.status_code, answer.read())
                frames.read(answer.iter_raw(), out, self.host)
        except httpx.HTTPError as exc:
            raise AgentApiError(f"lost host {self.host}'s agent while copying {name}:{src}: "
                                f"{exc}", hint="copy again") from exc  # fmt: skip

    def console(self, name: str) -> int:
        from rexcarcer.service.console import run_console

        return run_console(f"{self.url}/v1/jails/{name}/console",
                           self.files.client_context(), self.host)  # fmt: skip

    def export(self, name: str, out: IO[bytes]) -> ExportInfo:
        raise self._on_host("export", name)

    def import_(self, source: IO[bytes], *, name: str | None = None) -> JailInfo:
        raise self._elsewhere("import")

    def move(self, name: str, to: str) -> JailInfo:
        return JailInfo.from_json(self._post(f"/v1/jails/{name}/move", params={"to": to}))

    def ls(self) -> list[JailInfo]:
        raise self._elsewhere("ls")

    def logs(self, name: str, *, lines: int | None, follow: bool, sink: OutputSink) -> None:
        raise UsageError(
            f"jail {name} runs on host {self.host}: its log is collected there",
            hint=f"run `rex logs {name}` on {self.host}",
        )

    def _elsewhere(self, verb: str) -> UsageError:
        return UsageError(f"`rex {verb}` is answered by this host, not by {self.host}'s agent")

    def close(self) -> None:
        pass


CHUNK = 1 << 20


def _size(stream: IO[bytes]) -> int:
    try:
        here = stream.tell()
        size = stream.seek(0, 2) - here
        stream.seek(here)
    except (OSError, ValueError) as exc:
        raise UsageError("what is copied to another host must be a file") from exc
    return size


def _chunks(stream: IO[bytes], size: int | None = None) -> Iterator[bytes]:
    """``stream`` in chunks (``size`` bytes, or to its end): an httpx body sent as
    it is read, never held whole."""
    left = size
    while left is None or left > 0:
        data = stream.read(CHUNK if left is None else min(CHUNK, left))
        if not data:
            return
        if left is not None:
            left -= len(data)
        yield data


def _stdout(line: str) -> None:
    import sys

    sys.stdout.write(line)
    sys.stdout.flush()


def result(host: str, status: int, content: bytes, key: str = "jail") -> Any:
    """The ``key`` of a 200 answer (the jail, by default), or the remote error
    raised with its exit code."""
    try:
        data: dict[str, Any] = json.loads(content)
    except ValueError as exc:
        raise AgentApiError(f"host {host}'s agent answered {status} without JSON") from exc
    if status == 200 and isinstance(data, dict) and key in data:
        if key == "jail" and not isinstance(data[key], dict):
            raise AgentApiError(f"host {host}'s agent answered a malformed jail")
        return data[key]
    raise RemoteError(
        host,
        str(data.get("error", f"HTTP {status}")),
        hint=data.get("hint"),
        exit_code=int(data.get("exit_code") or AgentApiError.exit_code),
    )


class RemoteTarget(Agent):
    """The host a jail moves to, through its agent (engine/moving.py's
    ``Target``); the streams travel chunked, as ``zfs send`` writes them."""

    def __init__(self, config: Config, store: Store, host: str, progress: Progress) -> None:
        super().__init__(config, store, host)
        self.progress = progress

    def begin(self, name: str) -> None:
        self._post(f"/v1/incoming/{name}/begin")

    def send(self, name: str, part: str, stream: IO[bytes], *, since: str | None) -> None:
        from rexcarcer.base.progress import transfer_for

        params = {"part": part, **({"since": since} if since else {})}
        transfer = transfer_for(self.progress)
        what = "the last changes of the" if since else "the"
        transfer.start(f"sending {what} {part} to {self.host}", None)

        def body() -> Iterator[bytes]:
            for chunk in _chunks(stream):
                transfer.advance(len(chunk))
                yield chunk

        try:
            self._post(f"/v1/incoming/{name}/receive", params=params, content=body())
        finally:
            transfer.finish()

    def commit(self, name: str, *, label: str, osrelease: str | None, revision: int) -> JailInfo:
        params = {"snapshot": label, "revision": str(revision),
                  **({"osrelease": osrelease} if osrelease else {})}  # fmt: skip
        return JailInfo.from_json(self._post(f"/v1/incoming/{name}/commit", params=params))

    def abort(self, name: str) -> None:
        self._post(f"/v1/incoming/{name}/abort")
