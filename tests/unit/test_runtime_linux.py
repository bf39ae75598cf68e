"""Linux runtime: the exact command lines, recorded by a scripted runner."""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import sys
from pathlib import Path

import pytest

from rexcarcer.errors import RuntimeBackendError
from rexcarcer.fsutil import read_small
from rexcarcer.limits.cgroup import CgroupDriver
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime import linux, procfs
from rexcarcer.runtime.base import BuildNet, JailEnd, JailSpec, JailState, JailStatus
from rexcarcer.runtime.linux import LinuxRuntime, netns_name
from tests.capability import missing


def test_interface_names_are_deterministic_and_short() -> None:
    names = {linux.veth_name("abc123", f"jail-{i}") for i in range(1000)}
    assert len(names) == 1000
    assert all(len(n) <= 15 for n in names)
    assert linux.veth_name("abc123", "web") == linux.veth_name("abc123", "web")


def test_start_argv_passes_values_as_arguments_not_script_text() -> None:
    argv = linux.start_argv("rex-t-web", Path("/pool/jails/web"), "web.jail.rex.internal",
                            status_file=Path("/state/run/web.exit"))  # fmt: skip
    assert argv[:3] == ["nsenter", "--net=/run/netns/rex-t-web", "--"]
    # a host-side shell runs unshare and keeps its status: how the jail ended
    assert argv[3:9] == ["/bin/sh", "-c", linux.WAITER, "rex-wait", "/state/run/web.exit",
                         "unshare"]  # fmt: skip
    assert "--mount-proc=/pool/jails/web/proc" in argv
    for i, arg in enumerate(argv):
        if arg == "-c":
            script = argv[i + 1]
            assert "web.jail" not in script and "/pool/jails" not in script
            assert "/state/run" not in script
    assert argv[-6:-4] == ["/pool/jails/web", "web.jail.rex.internal"]
    assert argv[-4] == linux.INIT and argv[-3] == ""  # no secrets directory
    unshare = argv.index("unshare")
    # a cgroup namespace of its own
    assert "--cgroup" in argv[unshare : argv.index("/bin/sh", unshare)]
    # the jail's init is exec'd by jailenter.py, which drops capabilities first
    assert argv[-2:] == [sys.executable, str(Path(linux.__file__).with_name("jailenter.py"))]
    setup = argv[argv.index("-c", argv.index("unshare")) + 1]
    assert setup.rstrip().endswith('exec "$python" -I -S "$enter" init "$init"')


def test_exec_argv_goes_through_the_capability_drop() -> None:
    enter = str(Path(linux.__file__).with_name("jailenter.py"))
    assert linux.exec_argv(42, ["true"]) == [
        sys.executable,
        "-I",
        "-S",
        enter,
        "exec",
        "42",
        "true",
    ]


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


def _build_net() -> BuildNet:
    return BuildNet("build-0123abcd", ipaddress.ip_interface("203.0.113.7/24"),
                    ipaddress.ip_address("203.0.113.1"), "rex0")  # fmt: skip


def test_a_build_step_gets_a_jail_s_network_and_gives_it_back(tmp_path: Path) -> None:
    r = ScriptedRunner()
    r.on(["ip", "-o", "addr", "show"], "5: rex0    inet 203.0.113.1/24 brd ...\n")
    root = tmp_path / "img"
    root.mkdir()
    rt = _runtime(r, tmp_path)
    net = _build_net()
    ns, veth = linux.build_netns_name("t", net.name), linux.build_veth_name("t", net.name)
    assert (
        ns == "rex-t-_build-0123abcd" and len(veth) <= 15 and veth != linux.veth_name("t", net.name)
    )
    planned = rt.build_commands(root, "echo hi", {}, net)
    done = rt.build_run(root, "echo hi", env={}, network=net)
    assert done.ok
    step = [c for c in r.calls if c[0] == "nsenter" and "nft" not in c]
    assert step == [tuple(linux.build_net_argv(ns, root, "echo hi"))]
    # the step's packets carry only its own address (the source guard in its namespace)
    assert tuple(linux.source_guard_argv(ns, net.address)) in r.calls
    assert step[0][:3] == ("nsenter", f"--net=/run/netns/{ns}", "--") and "--net" not in step[0]
    # what ran is what was planned (queries left out); this namespace has no
    # such veth (if_nametoindex), so there is none to remove afterwards
    assert [list(c) for c in r.calls if c[:3] != ("ip", "-o", "addr")] == planned[:-2]
    assert planned[-2:] == [["ip", "link", "del", veth], ["ip", "netns", "del", ns]]
    assert ["ip", "-n", ns, "addr", "add", "203.0.113.7/24", "dev", "eth0"] in planned
    assert not any("default" in c for c in planned)


def test_a_build_step_without_a_network_has_none(tmp_path: Path) -> None:
    rt = _runtime(ScriptedRunner(), tmp_path)
    [argv] = rt.build_commands(tmp_path, "true", {})
    assert argv[:8] == ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net",
                        "--kill-child"]  # fmt: skip


def test_only_a_declared_public_address_gets_a_host_route(tmp_path: Path) -> None:
    r = ScriptedRunner()
    rt = LinuxRuntime(r, run_dir=tmp_path, bridge="rex0", token="t",
                      host_address=ipaddress.ip_interface("203.0.113.1/24"),
                      public=[(ipaddress.ip_network("198.51.100.16/28"), "eth1")])  # fmt: skip
    argvs = rt.plumb_argvs(_spec("198.51.100.20/28"))
    veth = linux.veth_name("t", "web")
    # routed to the jail's own veth, which is not on the bridge; the host
    # answers ARP for it on the range's declared interface
    assert ["ip", "route", "replace", "198.51.100.20/32", "dev", veth] in argvs
    assert ["ip", "link", "add", veth, "up", "type", "veth", "peer", "name", "eth0", "netns",
            linux.netns_name("t", "web")] in argvs  # fmt: skip
    assert not any("master" in a for a in argvs)
    assert ["ip", "neigh", "replace", "proxy", "198.51.100.20", "dev", "eth1"] in argvs
    assert ["sysctl", "-q", "-w", f"net.ipv4.conf.{veth}.proxy_arp=1"] in argvs
    assert not any("eth1.proxy_arp" in " ".join(a) for a in argvs)
    # a jail-subnet address stays on the bridge, with no proxy entry
    inside = rt.plumb_argvs(_spec("203.0.113.9/24"))
    # one process makes the pair, up, on the bridge
    assert ["ip", "link", "add", veth, "up", "master", "rex0", "type", "veth", "peer", "name",
            "eth0", "netns", linux.netns_name("t", "web")] in inside  # fmt: skip
    assert not any(a[:3] == ["ip", "link", "set"] and a[3] == veth for a in inside)
    assert not any("neigh" in a for a in inside)
    for undeclared in ("198.51.100.40/24", "192.0.2.5/24"):
        with pytest.raises(RuntimeBackendError, match="every public range declared"):
            rt.plumb_argvs(_spec(undeclared))
    spec = JailSpec(name="web", root=tmp_path, hostname="web", interface="rex0",
                    address=ipaddress.ip_interface("198.51.100.40/24"))  # fmt: skip
    with pytest.raises(RuntimeBackendError, match="every public range declared"):
        rt.start(spec)
    assert not any(c[:3] == ("ip", "route", "replace") for c in r.calls)


def test_the_source_guard_admits_only_the_jails_own_address() -> None:
    four = linux.source_guard_argv("ns", ipaddress.ip_interface("203.0.113.5/24"))
    assert four[:4] == ["nsenter", "--net=/run/netns/ns", "nft", "-j"] and len(four) == 5
    cmds = json.loads(four[4])["nftables"]
    assert cmds[0] == {"add": {"table": {"family": "inet", "name": "rexcarcer_source"}}}
    chain = cmds[1]["add"]["chain"]
    assert (chain["hook"], chain["type"], chain["policy"]) == ("output", "filter", "accept")
    rules = [c["add"]["rule"]["expr"] for c in cmds[2:]]
    assert rules[0][-1] == {"accept": None} and rules[0][0]["match"]["right"] == "lo"
    v4 = rules[1]
    assert v4[1]["match"] == {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                              "right": "203.0.113.5"} and v4[-1] == {"drop": None}  # fmt: skip
    assert rules[2][1]["match"]["right"] == {
        "set": [{"prefix": {"addr": "fe80::", "len": 10}}, "::"]
    }
    six = linux.source_guard_argv("ns", ipaddress.ip_interface("2001:db8::5/64"))
    rules6 = [c["add"]["rule"]["expr"] for c in json.loads(six[4])["nftables"][2:]]
    assert len(rules6[1]) == 2 and rules6[1][-1] == {"drop": None}  # every IPv4 source dropped
    own = rules6[2][1]["match"]["right"]["set"]
    assert own[0] == "2001:db8::5" and "::" in own


# -- status: the run file and /proc/PID/stat, read once per jail ------------------------

V2_MOUNTINFO = "35 24 0:30 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def _proc_stat() -> procfs.ProcStat:
    if not Path("/proc/self/stat").exists():
        missing("/proc (Linux procfs)")
    st = procfs.stat(os.getpid())
    assert st is not None
    return st


def _v2_groups(tmp_path: Path, jail: str) -> CgroupDriver:
    root = tmp_path / "cg"
    group = root / "rexcarcer" / jail
    group.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    for name, text in {"memory.current": "8192\n", "memory.events": "oom_kill 1\n",
                       "pids.current": "2\n", "cpu.stat": "usage_usec 7\n"}.items():  # fmt: skip
        (group / name).write_text(text)
    return CgroupDriver(root, mountinfo=V2_MOUNTINFO.format(root=root), read=read_small)


def test_status_names_a_live_init_by_pid_and_start_time(tmp_path: Path) -> None:
    st = _proc_stat()  # this test's own process stands in for a jail's init
    run = {"init_pid": os.getpid(), "init_start": st.starttime, "waiter_pid": None}
    (tmp_path / "web.json").write_text(json.dumps(run))
    # the same PID with another start time: a recycled PID, not the jail's init
    (tmp_path / "old.json").write_text(json.dumps({**run, "init_start": st.starttime + 1}))
    (tmp_path / "old.exit").write_text("137\n")
    rt = LinuxRuntime(ScriptedRunner(strict=True), run_dir=tmp_path, bridge="rex0", token="t",
                      host_address=ipaddress.ip_interface("203.0.113.1/24"),
                      cgroups=lambda: _v2_groups(tmp_path, "web"))  # fmt: skip
    got = rt.status(["web", "old", "none"])
    assert got["web"] == JailStatus("web", JailState.RUNNING, os.getpid())
    assert got["old"] == JailStatus("old", JailState.STOPPED, None, JailEnd(137))
    assert got["none"] == JailStatus("none", JailState.STOPPED)
    used = rt.status(["web", "old"], usage=True)
    assert used["web"].usage == {"memory": 8192, "oom_kills": 1, "pids": 2, "cpu_ns": 7000}
    assert used["web"].usage == rt.usage("web")
    assert used["old"].usage is None and rt.usage("old") == {}


def test_a_process_that_names_itself_badly_is_still_alive() -> None:
    """A jail's init runs the jail's own /bin/sh: its command name (prctl
    PR_SET_NAME) may hold parentheses and bytes that are not UTF-8."""
    _proc_stat()
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_name, pr_get_name = 15, 16  # linux/prctl.h
    old = ctypes.create_string_buffer(16)
    assert libc.prctl(pr_get_name, old, 0, 0, 0) == 0
    assert libc.prctl(pr_set_name, b"\xff) 1 (Z \xfe", 0, 0, 0) == 0
    try:
        assert Path("/proc/self/comm").read_bytes() == b"\xff) 1 (Z \xfe\n"
        st = procfs.stat(os.getpid())
        assert st is not None and st.pid == os.getpid() and st.state not in ("Z", "X")
        assert procfs.alive(os.getpid(), st.starttime)
    finally:
        libc.prctl(pr_set_name, old.value, 0, 0, 0)


def test_a_link_is_looked_up_in_this_process() -> None:
    # if_nametoindex(3) in this network namespace: `lo` is in every one
    assert linux._link_exists("lo")
    assert not linux._link_exists("rxnosuchlink0")
    assert not linux._link_exists("x" * 40)  # longer than IFNAMSIZ
