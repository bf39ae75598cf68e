"""Linux runtime: the exact command lines, recorded by a scripted runner."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime import linux
from rexcarcer.runtime.base import JailSpec
from rexcarcer.runtime.linux import LinuxRuntime, netns_name


def test_interface_names_are_deterministic_and_short() -> None:
    names = {linux.veth_name("abc123", f"jail-{i}") for i in range(1000)}
    assert len(names) == 1000
    assert all(len(n) <= 15 for n in names)
    assert linux.veth_name("abc123", "web") == linux.veth_name("abc123", "web")


def test_start_argv_passes_values_as_arguments_not_script_text() -> None:
    argv = linux.start_argv("rex-t-web", Path("/pool/jails/web"), "web.jail.rex.internal")
    assert argv[:3] == ["nsenter", "--net=/run/netns/rex-t-web", "--"]
    assert "--mount-proc=/pool/jails/web/proc" in argv
    script = argv[argv.index("-c") + 1]
    assert "web.jail" not in script and "/pool/jails" not in script
    assert argv[-4:-2] == ["/pool/jails/web", "web.jail.rex.internal"]
    assert argv[-2] == linux.INIT and argv[-1] == ""  # no secrets directory
    assert "--cgroup" in argv[: argv.index("/bin/sh")]  # a cgroup namespace of its own


def test_exec_argv_enters_every_namespace_and_the_root() -> None:
    assert linux.exec_argv(42, ["true"]) == [
        "nsenter", "--target=42", "--pid", "--mount", "--uts", "--ipc", "--net",
        "--cgroup", "--root", "--wd", "--", "true",
    ]  # fmt: skip


def test_bridge_is_created_once_and_a_ready_one_is_left_alone(tmp_path: Path) -> None:
    r = ScriptedRunner()
    r.on(["ip", "-o", "addr", "show"], "", returncode=1)  # no bridge yet
    rt = LinuxRuntime(r, run_dir=tmp_path, bridge="rex0",
                      host_address=ipaddress.ip_interface("203.0.113.1/24"), token="t")  # fmt: skip
    rt.ensure_bridge()
    # checked again under the lock; the address comes last: a bridge with it is ready
    assert r.calls == [
        ("ip", "-o", "addr", "show", "dev", "rex0"),
        ("ip", "-o", "addr", "show", "dev", "rex0"),
        ("ip", "link", "add", "rex0", "type", "bridge"),
        ("ip", "link", "set", "rex0", "up"),
        ("ip", "addr", "add", "203.0.113.1/24", "dev", "rex0"),
    ]
    ready = ScriptedRunner()
    shown = "5: rex0    inet 203.0.113.1/24 brd 203.0.113.255 scope global rex0\\ ...\n"
    ready.on(["ip", "-o", "addr", "show"], shown)
    _runtime(ready, tmp_path).ensure_bridge()
    assert len(ready.calls) == 1


def test_a_bridge_another_run_addressed_meanwhile_is_fine(tmp_path: Path) -> None:
    r = ScriptedRunner()
    r.on(["ip", "-o", "addr", "show"], "", returncode=1)
    r.on(["ip", "link", "add"], "RTNETLINK answers: File exists", returncode=2)
    r.on(["ip", "addr", "add"], "Error: ipv4: Address already assigned.", returncode=2)
    _runtime(r, tmp_path).ensure_bridge()
    assert r.calls[-1][:3] == ("ip", "addr", "add")


def _runtime(r: ScriptedRunner, run_dir: Path) -> LinuxRuntime:
    address = ipaddress.ip_interface("203.0.113.1/24")
    return LinuxRuntime(r, run_dir=run_dir, bridge="rex0", host_address=address, token="t")


def test_stop_of_an_unknown_jail_only_cleans_network(tmp_path: Path) -> None:
    r = ScriptedRunner()
    rt = LinuxRuntime(r, run_dir=tmp_path, bridge="rex0",
                      host_address=ipaddress.ip_interface("203.0.113.1/24"), token="t")  # fmt: skip
    rt.stop("ghost")
    assert r.calls == [("ip", "link", "del", linux.veth_name("t", "ghost"))]
    assert rt.status(["ghost"])["ghost"].state == "stopped"


def _spec(address: str) -> JailSpec:
    return JailSpec(name="web", root=Path("/j/web"), hostname="web", interface="rex0",
                    address=ipaddress.ip_interface(address))  # fmt: skip


def test_a_cluster_jail_routes_the_cluster_cidr_via_its_host(tmp_path: Path) -> None:
    r = ScriptedRunner()
    rt = LinuxRuntime(r, run_dir=tmp_path, bridge="rex0", token="t",
                      host_address=ipaddress.ip_interface("203.0.113.1/26"),
                      routes=[ipaddress.ip_network("203.0.113.0/24")])  # fmt: skip
    rt._plumb(_spec("203.0.113.5/26"))
    ns = netns_name("t", _spec("203.0.113.5/26").name)
    assert r.calls[-1] == ("ip", "-n", ns, "route", "replace", "203.0.113.0/24",
                           "via", "203.0.113.1", "dev", "eth0")  # fmt: skip
    assert not any("default" in c for c in r.calls)


def test_a_single_host_jail_gets_no_extra_route(tmp_path: Path) -> None:
    r = ScriptedRunner()
    rt = LinuxRuntime(r, run_dir=tmp_path, bridge="rex0", token="t",
                      host_address=ipaddress.ip_interface("203.0.113.1/26"))  # fmt: skip
    rt._plumb(_spec("203.0.113.5/26"))
    assert not any("route" in c for c in r.calls)
