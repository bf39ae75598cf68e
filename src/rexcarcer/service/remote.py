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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rexcarcer.buildctx import pack
from rexcarcer.cluster import AgentApiError, RemoteError, model
from rexcarcer.cluster.tls import TlsFiles
from rexcarcer.config import Config
from rexcarcer.errors import UsageError
from rexcarcer.model.jail import GenerationInfo, JailInfo, VolumeInfo
from rexcarcer.model.plan import Action
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

    rec = store.get(model.host_key(config.host))
    if rec is None:
        raise AgentApiError(
            f"this host ({config.host}) has not joined the cluster: it has no API credentials",
            hint="run `rex up` on a cluster host (`rex cluster join` first)",
        )
    return tls.ensure(config, str(rec.json()["address"]), store=store)


class RemoteService:
    """Jail verbs on host ``host``; the others are answered where the jail runs."""

    def __init__(self, config: Config, store: Store, host: str) -> None:
        self.host = host
        self.files = credentials(config, store)
        self.url = api_url(store, host)

    def _client(self, read: float | None) -> httpx.Client:
        import httpx

        timeout = httpx.Timeout(TIMEOUT, read=read)
        return httpx.Client(verify=self.files.client_context(), timeout=timeout)

    def _post(self, path: str, **kw: Any) -> dict[str, Any]:
        import httpx

        try:
            with self._client(BUILD_TIMEOUT) as http:
                answer = http.post(f"{self.url}{path}", **kw)
        except httpx.HTTPError as exc:
            raise AgentApiError(
                f"cannot reach host {self.host}'s agent at {self.url}: {exc}",
                hint="check that `rex agent` runs there and that both hosts share the cluster CA",
            ) from exc
        return result(self.host, answer.status_code, answer.content)

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
        if volumes:
            raise self._on_host("destroy --volumes", name)
        self._post(f"/v1/jails/{name}/destroy")
        return []  # the other host's `rex volume ls` lists what it kept

    def rollback(self, name: str, *, to: int | None = None) -> JailInfo:
        raise self._on_host("rollback", name)

    def history(self, name: str) -> list[GenerationInfo]:
        raise self._on_host("history", name)

    def volumes(self) -> list[VolumeInfo]:
        raise self._elsewhere("volume ls")

    def volume_rm(self, jail: str, volume: str) -> None:
        raise self._on_host("volume rm", jail)

    def volume_snapshot(self, jail: str, volume: str, label: str | None) -> str:
        raise self._on_host("volume snapshot", jail)

    def _on_host(self, verb: str, name: str) -> UsageError:
        return UsageError(f"jail {name} runs on host {self.host}",
                          hint=f"run `rex {verb} {name}` on {self.host}")  # fmt: skip

    def exec(
        self, name: str, argv: Sequence[str], *, interactive: bool, sink: OutputSink | None
    ) -> int:
        """Output (stdout and stderr merged, line by line) to ``sink`` as it comes;
        no terminal or standard input travels."""
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

    def cp_in(self, name: str, dst: str, tar: bytes) -> None:
        raise self._on_host("cp", name)

    def cp_out(self, name: str, src: str) -> bytes:
        raise self._on_host("cp", name)

    def console(self, name: str) -> int:
        raise self._on_host("console", name)

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


def _stdout(line: str) -> None:
    import sys

    sys.stdout.write(line)
    sys.stdout.flush()


def result(host: str, status: int, content: bytes) -> dict[str, Any]:
    """The jail of a 200 answer, or the remote error raised with its exit code."""
    try:
        data: dict[str, Any] = json.loads(content)
    except ValueError as exc:
        raise AgentApiError(f"host {host}'s agent answered {status} without JSON") from exc
    if status == 200 and isinstance(data.get("jail"), dict):
        jail: dict[str, Any] = data["jail"]
        return jail
    raise RemoteError(
        host,
        str(data.get("error", f"HTTP {status}")),
        hint=data.get("hint"),
        exit_code=int(data.get("exit_code") or AgentApiError.exit_code),
    )
