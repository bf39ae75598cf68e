"""The jailer services' configuration (golden files) and the service-manager
commands of `rex host setup` (scripted runner)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from rexcarcer.config import Config, load_config
from rexcarcer.dns import DnsError
from rexcarcer.dns.services import (
    ServerSettings,
    render_local_unbound_conf,
    render_rex_conf,
    settings_for,
    setup_files,
    unbound_user,
    write_configs,
)
from rexcarcer.errors import NotSupported, UsageError
from rexcarcer.platform import linux
from rexcarcer.platform.base import Flavour, HostFacts, SetupCommand, SetupFile, SetupInputs
from rexcarcer.platform.base import UnboundLayout as Layout
from rexcarcer.platform.freebsd import FreeBSDPlatform
from rexcarcer.platform.linux import LinuxPlatform
from rexcarcer.run import ScriptedRunner

DATA = Path(__file__).resolve().parents[1] / "data" / "dns"
WORK = Path("/var/lib/rexcarcer/unbound")
LAYOUT = Layout(Flavour.REX, WORK, WORK / "unbound.conf", WORK / "unbound.conf",
                WORK / "rexcarcer-data.conf", WORK / "control.sock", "unbound",
                "unbound-checkconf", WORK / "unbound.log", WORK / "serve.json")  # fmt: skip
DEFAULT = ServerSettings(zone="rex.internal", subnet=ipaddress.ip_network("198.51.100.0/24"),
                         listen=ipaddress.ip_address("198.51.100.1"), port=53)  # fmt: skip


def layout_for(config: Config) -> Layout:
    platform = FreeBSDPlatform if config.runtime == "freebsd" else LinuxPlatform
    return platform(ScriptedRunner(), config).unbound_layout()


def test_linux_config_matches_golden_file() -> None:
    # checked with `unbound-checkconf` 1.17.1 when the golden file was written
    assert (
        render_rex_conf(DEFAULT, LAYOUT, username="unbound")
        == (DATA / "linux-unbound.conf").read_text()
    )


def test_linux_config_with_forwarders_and_a_wide_subnet_matches_golden_file() -> None:
    s = ServerSettings(zone="cluster.example.net", subnet=ipaddress.ip_network("10.20.0.0/20"),
                       listen=ipaddress.ip_address("10.20.0.1"), port=53,
                       forwarders=("127.0.0.53", "192.0.2.53"))  # fmt: skip
    text = render_rex_conf(s, LAYOUT, username="")
    assert text == (DATA / "linux-unbound-forward.conf").read_text()
    assert text.count('in-addr.arpa." static') == 16
    assert "do-not-query-localhost: no" in text  # 127.0.0.53 would be refused otherwise


def test_freebsd_conf_d_file_matches_golden_file() -> None:
    text = render_local_unbound_conf(DEFAULT)
    assert text == (DATA / "freebsd-rexcarcer.conf").read_text()
    # interface: replaces the default listeners, so localhost is listed again
    assert "interface: 127.0.0.1\n" in text and "interface: ::1\n" in text
    assert "ip-transparent: yes" in text and "ip-freebind" not in text  # Linux-only option


def test_config_refuses_paths_that_would_break_out_of_a_quoted_value() -> None:
    for bad in ['/tmp/x"\ninclude: "/etc/evil', "/tmp/with space"]:
        w = Path(bad)
        layout = Layout(Flavour.REX, w, w / "c", w / "c", w / "d", w / "s", "u", "c", w, w)
        with pytest.raises(DnsError, match="refusing a path"):
            render_rex_conf(DEFAULT, layout, username="")


def test_systemd_unit_matches_golden_file_and_refuses_odd_values() -> None:
    argv = ["/usr/local/bin/python3.11", "-m", "rexcarcer", "--root", "/var/lib/rexcarcer",
            "host", "serve"]  # fmt: skip
    env = {"REX_SUBNET": "198.51.100.0/24", "REX_ZONE": "rex.internal"}
    assert linux.systemd_unit(argv, env) == (DATA / "rexcarcer-jailer.service").read_text()
    with pytest.raises(UsageError, match="systemd unit"):
        linux.systemd_unit(argv, {"REX_ZONE": "x\nExecStartPre=/bin/evil"})


def test_public_ranges_are_admitted_by_unbound() -> None:
    # a jail with a public fixed IP asks from that address (research item 21):
    # without a line for its range unbound answers REFUSED
    public = ServerSettings(zone="rex.internal", subnet=DEFAULT.subnet, listen=DEFAULT.listen,
                            port=53, public=(ipaddress.ip_network("203.0.113.0/24"),))  # fmt: skip
    for text in (render_local_unbound_conf(public), render_rex_conf(public, LAYOUT, username="")):
        assert "access-control: 198.51.100.0/24 allow\n" in text
        assert "access-control: 203.0.113.0/24 allow\n" in text
    env = {"REX_SUBNET": "198.51.100.0/24", "REX_PUBLIC_IPS": "203.0.113.0/24@vtnet0"}
    assert settings_for(load_config(environ=env)).public == public.public


def _inputs(tmp_path: Path) -> SetupInputs:
    conf = SetupFile(tmp_path / "unbound.conf", "server:\n", "conf")
    return SetupInputs(unbound=(conf,), unbound_server=conf.path, collector=(),
                       collector_check=("rsyslogd", "-N1"), collector_rc="",
                       serve=("/usr/bin/python3", "-m", "rexcarcer", "host", "serve"),
                       serve_env=(("REX_ROOT", "/srv/rex"),),
                       agent=("/usr/bin/python3", "-m", "rexcarcer", "agent"))  # fmt: skip


def test_setup_with_systemd_writes_the_unit_then_asks_systemctl(tmp_path: Path) -> None:
    steps = linux.setup_steps(_inputs(tmp_path), HostFacts(service_manager=True),
                              ("unbound-checkconf", "c"), unit_dir=tmp_path)  # fmt: skip
    unit = next(s for s in steps if isinstance(s, SetupFile) and s.path.name.endswith(".service"))
    assert unit.content is not None and "-m rexcarcer host serve\n" in unit.content
    assert "Environment=REX_ROOT=/srv/rex\n" in unit.content
    assert [" ".join(s.argv) for s in steps if isinstance(s, SetupCommand)] == [
        "unbound-checkconf c",
        "systemctl daemon-reload",
        "systemctl enable rexcarcer-jailer.service",
        "systemctl restart rexcarcer-jailer.service",
        "systemctl enable rexcarcer-agent.service",  # the jails' boot path
        "systemctl restart rexcarcer-agent.service",
    ]


def test_the_agent_unit_keeps_the_jails_when_it_stops() -> None:
    argv = ["/usr/bin/python3", "-m", "rexcarcer", "--root", "/var/lib/rexcarcer", "agent"]
    unit = linux.agent_unit(argv, {"REX_SUBNET": "198.51.100.0/24"})
    assert "ExecStart=/usr/bin/python3 -m rexcarcer --root /var/lib/rexcarcer agent\n" in unit
    assert "Environment=REX_SUBNET=198.51.100.0/24\n" in unit
    assert "After=network.target rexcarcer-jailer.service" in unit
    # the unit contrib/ ships says the same about how the agent is stopped
    shipped = (Path(__file__).parents[2] / "contrib/systemd/rexcarcer-agent.service").read_text()
    for line in ("KillMode=process", "Restart=always", "WantedBy=multi-user.target"):
        assert f"\n{line}\n" in unit and f"\n{line}\n" in shipped
    with pytest.raises(UsageError, match="systemd unit"):
        linux.agent_unit(argv, {"REX_ZONE": "x y"})


def test_setup_on_freebsd_enables_the_agent_through_its_rc_script(tmp_path: Path) -> None:
    from rexcarcer.platform import freebsd_host as fh

    assert fh.agent_steps(HostFacts(), tmp_path) == []  # no rc.d script: nothing to enable
    rc = str(fh.at(tmp_path, fh.AGENT_RC))
    steps = fh.agent_steps(HostFacts(files=((rc, "#!/bin/sh\n"),)), tmp_path)
    assert [" ".join(s.argv) for s in steps if isinstance(s, SetupCommand)] == [
        "sysrc rexcarcer_agent_enable=YES",
        "service rexcarcer_agent start",
    ]
    running = HostFacts(files=((rc, "#!/bin/sh\n"),), running=frozenset({"rexcarcer_agent"}),
                        rc_conf=(("rexcarcer_agent_enable", "YES"),))  # fmt: skip
    assert [" ".join(s.argv) for s in fh.agent_steps(running, tmp_path)
            if isinstance(s, SetupCommand)] == ["service rexcarcer_agent restart"]  # fmt: skip


def test_setup_without_a_service_manager_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NotSupported, match="no service manager") as err:
        linux.setup_steps(_inputs(tmp_path), HostFacts(service_manager=False), ("c",))
    assert "rex host serve" in (err.value.hint or "")


def test_setup_files_follow_the_flavour(tmp_path: Path) -> None:
    env = {"REX_SUBNET": "203.0.113.0/24", "REX_RUNTIME": "freebsd"}
    bsd = load_config(root=tmp_path, environ=env)
    files = setup_files(bsd, layout_for(bsd), "data\n")
    assert [str(f.path) for f in files] == ["/var/unbound/conf.d/rexcarcer.conf",
                                            "/var/unbound/conf.d/rexcarcer-data.conf"]  # fmt: skip
    assert files[0].content == render_local_unbound_conf(settings_for(bsd))


def test_layouts_and_settings_follow_the_configuration(tmp_path: Path) -> None:
    env = {"REX_SUBNET": "203.0.113.0/24", "REX_RUNTIME": "linux", "REX_ZONE": "Corp.Internal."}
    config = load_config(root=tmp_path, environ=env)
    layout = layout_for(config)
    assert layout.control == tmp_path / "unbound" / "control.sock"  # follows --root
    assert settings_for(config).zone == "corp.internal"
    assert str(settings_for(config).listen) == "203.0.113.1"
    bsd = layout_for(load_config(root=tmp_path, environ={**env, "REX_RUNTIME": "freebsd"}))
    assert bsd.server_conf == Path("/var/unbound/conf.d/rexcarcer.conf")
    assert bsd.data.parent == bsd.server_conf.parent  # inside the chroot, included by glob


def test_write_configs_is_idempotent_and_checks_the_socket_path(tmp_path: Path) -> None:
    config = load_config(root=tmp_path, environ={"REX_SUBNET": "203.0.113.0/24",
                                                 "REX_RUNTIME": "linux"})  # fmt: skip
    assert write_configs(config, layout_for(config)) is True
    assert write_configs(config, layout_for(config)) is False
    deep = tmp_path / ("x" * 120)
    long = load_config(root=deep, environ={"REX_SUBNET": "203.0.113.0/24", "REX_RUNTIME": "linux"})
    with pytest.raises(DnsError, match="too long"):
        write_configs(long, layout_for(long))


def test_unbound_user_only_when_it_can_reach_the_directory(tmp_path: Path) -> None:
    private = tmp_path / "private" / "unbound"
    private.mkdir(parents=True)
    os.chmod(private.parent, 0o700)
    assert unbound_user(private, user="root") == ""
    assert unbound_user(Path("/"), user="no-such-user-rex") == ""
    assert unbound_user(Path("/"), user="root") == "root"
