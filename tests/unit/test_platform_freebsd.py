"""The FreeBSD platform's builders and parsers (platform/freebsd_host.py): the
facts `rex host setup` reads, the steps it decides, sockstat(1) output, the
trust store; plus the `--platform freebsd` dry runs of the CLI."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rexcarcer.config import PublicRange, load_config
from rexcarcer.errors import ConfigError, NotSupported, UnsafePath
from rexcarcer.firewall.pf import PfFirewall
from rexcarcer.platform import freebsd_host as fh
from rexcarcer.platform import trust
from rexcarcer.platform.base import HostFacts, SetupCommand
from rexcarcer.platform.kinds import PlatformKind
from rexcarcer.run import NoRunner
from rexcarcer.wiring import fresh_host_reads

DATA = Path(__file__).resolve().parents[1] / "data" / "freebsd"


def _config(subnet: str = "198.51.100.0/24") -> object:
    return load_config(environ={"REX_RUNTIME": "freebsd", "REX_SUBNET": subnet})


def _argvs(steps: list[object]) -> list[str]:
    return [" ".join(s.argv) for s in steps if isinstance(s, SetupCommand)]


def test_sysrc_and_ifconfig_output_are_read() -> None:
    rc = fh.parse_sysrc_all("hostname: bsd1\ncloned_interfaces: lo1 bridge0\nbogus line\n")
    assert rc == (("hostname", "bsd1"), ("cloned_interfaces", "lo1 bridge0"))
    text = (
        "rex0: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> metric 0 mtu 16384\n"
        "\toptions=680003<RXCSUM,TXCSUM,LINKSTATE,RXCSUM_IPV6,TXCSUM_IPV6>\n"
        "\tinet 198.51.100.1 netmask 0xffffff00\n"
        "\tinet6 fe80::1%rex0 prefixlen 64 scopeid 0x3\n"
        "\tinet6 2001:db8:66::1 prefixlen 64\n"
    )
    assert fh.parse_ifconfig_addresses(text) == {"198.51.100.1", "fe80::1", "2001:db8:66::1"}


def test_a_free_lo_unit_skips_what_exists_is_cloned_or_renamed() -> None:
    rc = (("cloned_interfaces", "lo2"), ("ifconfig_lo3_name", "bastille0"))
    facts = HostFacts(interfaces=frozenset({"lo0", "lo1"}), rc_conf=rc)
    assert fh.free_lo_unit(facts) == "lo4"


def test_ipv6_jail_subnet_gets_inet6_and_the_ipv6_rc_variable() -> None:
    steps = fh.interface_steps(_config("2001:db8:66::/64"), fh.fresh_facts())  # type: ignore[arg-type]
    assert _argvs(steps) == [
        "ifconfig lo1 create name rex0",
        "ifconfig rex0 inet6 2001:db8:66::1/64 up",
        "sysrc cloned_interfaces+=lo1 ifconfig_lo1_name=rex0",
        "sysrc ifconfig_rex0_ipv6=inet6 2001:db8:66::1/64",
    ]


def test_an_existing_interface_only_gets_what_it_lacks() -> None:
    facts = HostFacts(interfaces=frozenset({"lo0", "rex0"}), addresses=frozenset(),
                      rc_conf=(("ifconfig_lo1_name", "rex0"),))  # fmt: skip
    assert _argvs(fh.interface_steps(_config(), facts)) == [  # type: ignore[arg-type]
        "ifconfig rex0 inet 198.51.100.1/24 alias",
        "sysrc ifconfig_rex0=inet 198.51.100.1/24",
    ]
    done = HostFacts(interfaces=frozenset({"rex0"}), addresses=frozenset({"198.51.100.1"}),
                     rc_conf=(("ifconfig_lo1_name", "rex0"),
                              ("ifconfig_rex0", "inet 198.51.100.1/24")))  # fmt: skip
    assert fh.interface_steps(_config(), done) == []  # type: ignore[arg-type]


def test_sockstat_output_names_the_collector() -> None:
    # constructed in sockstat(1)'s documented column order, not captured on FreeBSD
    text = (DATA / "sockstat-udp-514.txt").read_text()
    assert fh.listener(text, "198.51.100.1", 514) == 4242
    assert fh.listener(text, "2001:db8:66::1", 514) == 4243
    assert fh.listener(text, "127.0.0.1", 514) is None  # syslogd's, not rsyslogd's
    assert fh.sockstat_argv(514) == ["sockstat", "-4", "-6", "-P", "udp", "-p", "514"]


def test_freebsd_update_conf_keeps_the_key_and_takes_world_only() -> None:
    host = "KeyPrint abc\nServerName update.FreeBSD.org\nComponents src world kernel\n"
    text = fh.update_conf(host)
    assert "KeyPrint abc\n" in text and text.endswith("Components world\n")
    assert "kernel" not in text
    root, work, conf = Path("/r"), Path("/w"), Path("/c")
    fetch, install = fh.update_argvs(root, work, conf, "14.1-RELEASE-p5")
    assert fetch[:3] == ["env", "PAGER=cat", "freebsd-update"] and fetch[-1] == "fetch"
    assert install[-1] == "install" and "--not-running-from-cron" in install


def test_trust_slot_never_replaces_what_the_jail_planted(tmp_path: Path) -> None:
    certs = tmp_path / "etc" / "ssl" / "certs"
    certs.mkdir(parents=True)
    os.symlink("/etc/master.passwd", certs / "abcdef01.0")  # root in the jail did this
    (certs / "abcdef01.1").write_bytes(b"another CA")
    assert trust.slot(tmp_path, "abcdef01", b"ours") == "/etc/ssl/certs/abcdef01.2"
    (certs / "abcdef01.2").write_bytes(b"ours")
    assert trust.slot(tmp_path, "abcdef01", b"ours") == "/etc/ssl/certs/abcdef01.2"
    for n in range(3, 10):
        (certs / f"abcdef01.{n}").write_bytes(b"x")
    with pytest.raises(UnsafePath):
        trust.slot(tmp_path, "abcdef01", b"new")


def test_the_no_runner_runs_nothing() -> None:
    with pytest.raises(NotSupported, match="not running jls"):
        NoRunner().run(["jls"])


def test_public_ranges_are_parsed_and_choose_the_interface() -> None:
    env = {"REX_SUBNET": "198.51.100.0/24",
           "REX_PUBLIC_IPS": "203.0.113.0/24@vtnet0, 2001:db8:5::/64@vtnet1"}  # fmt: skip
    config = load_config(environ=env)
    assert config.public_ips == (
        PublicRange(ipaddress.ip_network("203.0.113.0/24"), "vtnet0"),
        PublicRange(ipaddress.ip_network("2001:db8:5::/64"), "vtnet1"),
    )
    assert config.interface_for(ipaddress.ip_address("203.0.113.8")) == "vtnet0"
    assert config.interface_for(ipaddress.ip_address("198.51.100.7")) == "rex0"
    for bad in ("203.0.113.0/24", "203.0.113.1/24@vtnet0", "203.0.113.0/24@bad name"):
        with pytest.raises(ConfigError):
            load_config(environ={**env, "REX_PUBLIC_IPS": bad})


# -- the CLI's dry runs for FreeBSD, on this (Linux) machine ----------------------------


def _rex(tmp_path: Path, *args: str) -> tuple[int, str]:
    """The real CLI, in a process of its own (errors become an exit status there)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REX_SUBNET": "198.51.100.0/24",
        "REX_ROOT": str(tmp_path / "state"),
        "REX_PUBLIC_IPS": "203.0.113.0/24@vtnet0",
    }
    argv = [sys.executable, "-m", "rexcarcer", *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout + done.stderr


def test_host_setup_dry_run_for_freebsd_prints_every_file_and_command(tmp_path: Path) -> None:
    code, out = _rex(tmp_path, "host", "setup", "--platform", "freebsd", "--dry-run")
    assert code == 0, out
    for line in ("$ ifconfig lo1 create name rex0", "$ ifconfig rex0 inet 198.51.100.1/24 up",
                 "$ sysrc local_unbound_enable=YES", "$ service local_unbound setup",
                 "$ service local_unbound configtest", "$ service local_unbound start",
                 "$ sysrc rexcarcer_logs_enable=YES", "$ service rexcarcer_logs restart",
                 "write /var/unbound/conf.d/rexcarcer.conf (0644)",
                 "write /usr/local/etc/rc.d/rexcarcer_logs (0755)",
                 "|     access-control: 203.0.113.0/24 allow"):  # fmt: skip
        assert line in out, line
    assert out.index("sysrc local_unbound_enable=YES") < out.index("service local_unbound setup")
    assert "points this host's /etc/resolv.conf" in out  # says what setup does
    assert not (tmp_path / "state").exists()  # a dry run makes no state directory
    code, js = _rex(tmp_path, "-o", "json", "host", "setup", "--platform", "freebsd", "--dry-run")
    actions = json.loads(js)
    assert {a["action"] for a in actions} == {"run", "write", "mkdir"}


def test_platform_without_dry_run_is_refused(tmp_path: Path) -> None:
    code, out = _rex(tmp_path, "host", "setup", "--platform", "freebsd")
    assert code == 2 and "--dry-run" in out


def test_plan_for_freebsd_admits_on_this_machine_as_on_a_fresh_freebsd_host(
    tmp_path: Path,
) -> None:
    # rex plan --platform freebsd runs the engine rex up would use there, with its
    # network policy: what the policy reads on the host (ifconfig -a, pfctl) is
    # answered as a fresh FreeBSD host would, nothing else is run
    rexfile = tmp_path / "web.rex"
    base = "BASE https://bases.example.com/freebsd/FreeBSD-14.1-RELEASE\n"
    rexfile.write_text(
        f"{base}PROVISION RUN pkg install -y nginx\nENABLE nginx\nIP 203.0.113.8/24\n"
    )
    code, out = _rex(tmp_path, "plan", str(rexfile), "--platform", "freebsd")
    assert code == 0, out
    assert out.startswith("fetch    fetch, verify and receive the base https://bases.example.com/")
    rexfile.write_text(f"{base}IP 192.0.2.9/24\n")  # in no range this host declares
    code, out = _rex(tmp_path, "plan", str(rexfile), "--platform", "freebsd")
    assert code == 46 and "IP 192.0.2.9/24 is refused" in out, out


def test_a_fresh_hosts_reads_are_answered_and_nothing_else_runs() -> None:
    reads = fresh_host_reads(PlatformKind.FREEBSD)
    runner = NoRunner(fresh=reads)
    assert runner.run(["ifconfig", "-a"]).stdout == ""
    assert not runner.run(["pfctl", "-a", "rexcarcer", "-s", "Anchors"]).ok
    with pytest.raises(NotSupported):
        runner.run(["pfctl", "-a", "rexcarcer/guard", "-f", "-"])
    assert PfFirewall(runner).anchors() == set()
