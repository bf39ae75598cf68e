"""The text of ``rex ls``, ``rex up`` and ``rex plan`` from their JSON forms.

One renderer for both doors: the click commands (cli/jail_cmds.py) pass the
``as_json()`` of what the service returned, the front door's thin client
(cli/thin.py) passes the agent's answer as it came; so the two print the
same. Nothing here imports click, the model or the configuration.
"""

from __future__ import annotations

from rexcarcer.cli.output import table

TYPE_CHECKING = False  # typing imports re: this module is on the thin client's path
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

LS_HEADERS = ["name", "state", "health", "ip", "hostname", "services", "published", "base"]


def ls_table(jails: Sequence[Mapping[str, Any]], *, wide: bool) -> str:
    """``rex ls`` as a table (docs/schemas/ls.v1.json in, text out)."""
    headers = LS_HEADERS + (["image", "created", "host"] if wide else ["host"])
    return table(headers, [ls_row(j, wide=wide) for j in jails])


def ls_row(j: Mapping[str, Any], *, wide: bool) -> list[str]:
    services = ",".join(f"{s['name']}:{s['port']}" + (f"/{s.get('proto', 'tcp')}" if wide else "")
                        for s in j.get("services") or ())  # fmt: skip
    published = ",".join(publish_text(p) for p in j.get("publish") or ())
    ips = j.get("ips") or []
    row = [str(j["name"]), str(j["state"]), j.get("health") or "-", ips[0] if ips else "-",
           j.get("hostname") or "-", services or "-", published or "-",
           str(j.get("base", ""))]  # fmt: skip
    if wide:
        row += [j.get("image") or "-", when(j.get("created") or 0)]
    return [*row, j.get("host") or "-"]


def publish_text(p: Mapping[str, Any]) -> str:
    """A published port as model/jail.py PublishEntry prints it:
    ``[ON:]HOSTPORT->PORT/PROTO``."""
    on = f"{p['on']}:" if p.get("on") else ""
    return f"{on}{p['host_port']}->{p['port']}/{p.get('proto', 'tcp')}"


def when(created: int) -> str:
    if not created:
        return "-"
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))


def up_summary(j: Mapping[str, Any], *, cluster: bool) -> str:
    """The line ``rex up`` prints: name, state, address, host name (and host)."""
    ips = j.get("ips") or []
    address = ips[0] if ips else "no address"
    where = f" on {j.get('host', '')}" if cluster else ""
    return f"{j['name']} is {j['state']}: {address} ({j.get('hostname', '')}){where}"


def plan_lines(actions: Sequence[Mapping[str, Any]]) -> list[str]:
    """``rex plan``: an action a line, then its files (with their content) and
    command lines (model/plan.py Action.as_json: commands, then notes)."""
    out: list[str] = []
    for a in actions:
        out.append(f"{a['action']:8} {a['description']}")
        for f in a.get("files") or ():
            out += [f"           {line}" for line in file_lines(f)]
        out += [f"           $ {line}" for line in a.get("commands") or ()]
    return out


def file_lines(f: Mapping[str, Any]) -> list[str]:
    """model/plan.py FileWrite.lines from its JSON form."""
    head = f"write {f['path']} ({f.get('mode', '0644')})"
    if f.get("note"):
        head += f": {f['note']}"
    content = f.get("content")
    if content is None:
        return [head]
    return [head, *(f"  | {line}" for line in str(content).splitlines())]
