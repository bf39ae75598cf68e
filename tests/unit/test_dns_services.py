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
    agent_steps,
    agent_unit,
    freebsd_steps,
    has_local_unbound_include,
    render_local_unbound_conf,
    render_rex_conf,
    settings_for,
    setup_steps,
    systemd_unit,
    unbound_user,
    write_configs,
)
from rexcarcer.errors import NotSupported
from rexcarcer.platform.base import Flavour
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
    assert systemd_unit(argv, env) == (DATA / "rexcarcer-jailer.service").read_text()
    with pytest.raises(DnsError, match="systemd unit"):
        systemd_unit(argv, {"REX_ZONE": "x\nExecStartPre=/bin/evil"})


def test_freebsd_steps_enable_then_start_or_restart() -> None:
    def argvs(**kw: bool) -> list[str]:
        return [" ".join(s.argv) for s in freebsd_steps(**kw)]

    assert argvs(has_include=True, changed=False, running=False) == [
        "sysrc local_unbound_enable=YES",
        "service local_unbound configtest",
        "service local_unbound start",
    ]
    assert argvs(has_include=True, changed=False, running=True)[-1] == (
        "service local_unbound configtest"  # nothing changed: left alone
    )
    assert argvs(has_include=True, changed=True, running=True)[-1] == (
        "service local_unbound restart"  # listeners only change on a restart
    )
    assert argvs(has_include=False, changed=False, running=False)[0] == (
        "service local_unbound setup"
    )


def test_local_unbound_include_is_detected(tmp_path: Path) -> None:
    conf = tmp_path / "unbound.conf"
    conf.write_text("server:\n\tusername: unbound\n\ninclude: /var/unbound/conf.d/*.conf\n")
    assert has_local_unbound_include(conf)
    conf.write_text("server:\n\tusername: unbound\n# include: /var/unbound/conf.d/*.conf\n")
    assert not has_local_unbound_include(conf)
    assert not has_local_unbound_include(tmp_path / "missing")


def _layout(tmp_path: Path, flavour: Flavour) -> Layout:
    return Layout(flavour, tmp_path, tmp_path / "unbound.conf", tmp_path / "conf.d" / "rex.conf",
                  tmp_path / "conf.d" / "data.conf", tmp_path / "ctl", "local-unbound",
                  "local-unbound-checkconf", tmp_path / "log", tmp_path / "state")  # fmt: skip


def test_setup_on_freebsd_asks_service_for_the_state(tmp_path: Path) -> None:
    runner = ScriptedRunner(strict=True)
    runner.on(["service", "local_unbound", "status"], "local_unbound is running as pid 7.")
    layout = _layout(tmp_path, Flavour.LOCAL_UNBOUND)
    layout.conf.write_text("include: /var/unbound/conf.d/*.conf\n")
    steps = setup_steps(layout, runner, changed=True, global_args=[], systemd=False)
    assert runner.calls == [("service", "local_unbound", "status")]
    assert [s.argv[-1] for s in steps] == ["local_unbound_enable=YES", "configtest", "restart"]


def test_setup_with_systemd_writes_the_unit(tmp_path: Path) -> None:
    layout = _layout(tmp_path, Flavour.REX)
    args = ["--root", "/srv/rex"]
    steps = setup_steps(layout, ScriptedRunner(strict=True), changed=False, global_args=args,
                        systemd=True, unit_dir=tmp_path)  # fmt: skip
    unit = (tmp_path / "rexcarcer-jailer.service").read_text()
    assert "-m rexcarcer --root /srv/rex host serve\n" in unit
    agent = (tmp_path / "rexcarcer-agent.service").read_text()
    assert "-m rexcarcer --root /srv/rex agent\n" in agent
    assert "\nKillMode=process\n" in agent and "\nRestart=always\n" in agent
    assert [" ".join(s.argv) for s in steps] == [
        "systemctl daemon-reload",
        "systemctl enable rexcarcer-jailer.service",
        "systemctl restart rexcarcer-jailer.service",
        "systemctl enable rexcarcer-agent.service",  # the jails' boot path
        "systemctl restart rexcarcer-agent.service",
    ]
    assert agent_steps(layout, ScriptedRunner(strict=True)) == []  # started with the others


def test_the_agent_unit_keeps_the_jails_when_it_stops() -> None:
    argv = ["/usr/bin/python3", "-m", "rexcarcer", "--root", "/var/lib/rexcarcer", "agent"]
    unit = agent_unit(argv, {"REX_SUBNET": "198.51.100.0/24"})
    assert "ExecStart=/usr/bin/python3 -m rexcarcer --root /var/lib/rexcarcer agent\n" in unit
    assert "Environment=REX_SUBNET=198.51.100.0/24\n" in unit
    assert "After=network.target rexcarcer-jailer.service" in unit
    # the unit contrib/ ships says the same about how the agent is stopped
    shipped = (Path(__file__).parents[2] / "contrib/systemd/rexcarcer-agent.service").read_text()
    for line in ("KillMode=process", "Restart=always", "WantedBy=multi-user.target"):
        assert f"\n{line}\n" in unit and f"\n{line}\n" in shipped
    with pytest.raises(DnsError, match="systemd unit"):
        agent_unit(argv, {"REX_ZONE": "x y"})


def test_setup_on_freebsd_enables_the_agent_through_its_rc_script(tmp_path: Path) -> None:
    layout = _layout(tmp_path, Flavour.LOCAL_UNBOUND)
    with pytest.raises(NotSupported, match=r"rc\.d script is not installed") as err:
        agent_steps(layout, ScriptedRunner(strict=True), rc_d=tmp_path)
    assert "sysutils/rexcarcer" in (err.value.hint or "")
    (tmp_path / "rexcarcer_agent").write_text("#!/bin/sh\n")
    runner = ScriptedRunner(strict=True)
    runner.on(["service", "rexcarcer_agent", "status"], "", returncode=1)
    steps = agent_steps(layout, runner, rc_d=tmp_path)
    assert [" ".join(s.argv) for s in steps] == [
        "sysrc rexcarcer_agent_enable=YES",
        "service rexcarcer_agent start",
    ]
    running = ScriptedRunner(strict=True)
    running.on(["service", "rexcarcer_agent", "status"], "rexcarcer_agent is running as pid 9.")
    assert agent_steps(layout, running, rc_d=tmp_path)[-1].argv[-1] == "restart"


def test_setup_without_a_service_manager_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NotSupported, match="no service manager") as err:
        setup_steps(_layout(tmp_path, Flavour.REX), ScriptedRunner(), changed=False,
                    global_args=[], systemd=False)  # fmt: skip
    assert "rex host serve" in (err.value.hint or "")


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
