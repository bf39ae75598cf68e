"""``rex up`` in a cluster: decide where (placement.py), then run it here or send
the build context to that host's agent (api.py) over mutual TLS. ``rex
start/stop/restart/destroy`` of a jail on another host go to its agent too."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rexcarcer.cluster import AgentApiError, RemoteError, membership, model
from rexcarcer.cluster.placement import Placement, place
from rexcarcer.cluster.tls import TlsFiles
from rexcarcer.config import Config
from rexcarcer.rexfile.ast import Rexfile
from rexcarcer.run import OutputSink
from rexcarcer.state.base import Store

if TYPE_CHECKING:
    from rexcarcer.engine.host import Host

TIMEOUT = 10.0  # seconds to connect; the build itself may take long
BUILD_TIMEOUT = 3600.0


def decide(store: Store, rexfile: Rexfile, name: str, wanted: str | None, me: str) -> Placement:
    owner = store.get(model.JAILS + name)
    # the host running this command is up even when its agent is not
    hosts = [replace(h, alive=True) if h.name == me else h for h in membership.list_hosts(store)]
    return place(
        hosts,
        wanted=wanted,
        pinned=rexfile.ip.ip if rexfile.ip is not None else None,
        owner=str(owner.json().get("host")) if owner is not None else None,
    )


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
    return tls.ensure(config, str(rec.json()["address"]))


def up_remote(files: TlsFiles, url: str, host: str, rexfile: Rexfile, name: str) -> dict[str, Any]:
    """Send the build context to ``host``'s agent; the jail's info, or its error."""
    from rexcarcer.cluster.context import pack

    assert rexfile.path is not None
    params = {"name": name, "file": rexfile.path.name}
    return _post(files, url, host, "/v1/up", params=params, content=pack(rexfile))


def _post(files: TlsFiles, url: str, host: str, path: str, **kw: Any) -> dict[str, Any]:
    import httpx

    timeout = httpx.Timeout(TIMEOUT, read=BUILD_TIMEOUT)
    try:
        with httpx.Client(verify=files.client_context(), timeout=timeout) as http:
            answer = http.post(f"{url}{path}", **kw)
    except httpx.HTTPError as exc:
        raise AgentApiError(
            f"cannot reach host {host}'s agent at {url}: {exc}",
            hint="check that `rex agent` runs there and that both hosts share the cluster CA",
        ) from exc
    return _result(host, answer.status_code, answer.content)


def lifecycle(host: Host, name: str, verb: str) -> dict[str, Any] | None:
    """``rex start|stop|restart|destroy NAME`` in a cluster: done by the jail's
    own host, through its agent when that is not this one. The jail's info
    from the other host, or None when it was done here."""
    from rexcarcer.engine import jails

    owner = jails.remote_owner(host, jails.record(host, name))
    if owner is None:
        getattr(jails, verb)(host, name)
        return None
    host.progress.step(f"{verb.capitalize()} {name} on {owner}")
    files = credentials(host.config, host.store)
    return _post(files, api_url(host.store, owner), owner, f"/v1/jails/{name}/{verb}")


def exec_remote(host: Host, owner: str, name: str, argv: list[str], out: OutputSink) -> int:
    """``rex exec`` of a jail on ``owner``: its output (stdout and stderr merged,
    line by line) to ``out`` as it comes; its exit status."""
    import json

    import httpx

    files = credentials(host.config, host.store)
    url = api_url(host.store, owner)
    # no read timeout: a command may be quiet for a long time
    timeout = httpx.Timeout(TIMEOUT, read=None)
    try:
        with (
            httpx.Client(verify=files.client_context(), timeout=timeout) as http,
            http.stream("POST", f"{url}/v1/jails/{name}/exec", json={"argv": argv}) as answer,
        ):
            if answer.status_code != 200:
                _result(owner, answer.status_code, answer.read())
            for line in answer.iter_lines():
                frame = json.loads(line)
                if "out" in frame:
                    out(str(frame["out"]))
                elif "exit" in frame:
                    return int(frame["exit"])
                else:
                    _result(owner, 422, line.encode())
    except httpx.HTTPError as exc:
        raise AgentApiError(
            f"lost host {owner}'s agent at {url} while running the command: {exc}",
            hint=f"run the command on {owner} (`rex exec {name} -- ...` there)",
        ) from exc
    except ValueError as exc:
        raise AgentApiError(f"host {owner}'s agent sent a malformed exec frame: {exc}") from exc
    raise AgentApiError(
        f"host {owner}'s agent ended the command without an exit status",
        hint=f"run the command on {owner} to see what happens",
    )


def _result(host: str, status: int, content: bytes) -> dict[str, Any]:
    import json

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


def up(host: Host, rexfile: Rexfile, name: str, wanted: str | None) -> dict[str, Any]:
    """``rex up`` on a cluster host: placed, then run here or on the chosen host."""
    from rexcarcer.engine import jails

    where = decide(host.store, rexfile, name, wanted, host.config.host)
    host.progress.step(f"Placing {name} on {where.host}: {where.why}")
    if where.host == host.config.host:
        return jails.up(host, rexfile, name).as_json()
    files = credentials(host.config, host.store)
    return up_remote(files, api_url(host.store, where.host), where.host, rexfile, name)
