"""Jail logs without root: the collector's configuration, the jail-side files,
the lookup table, the hook on the in-memory drivers, and reading/following."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from rexcarcer.config import TESTING_ENV, load_config
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import ConfigError
from rexcarcer.logs import LogsError, collector, reader, service
from rexcarcer.logs.hook import LogHook
from rexcarcer.model.jail import JailRecord
from rexcarcer.platform import freebsd as bsd
from rexcarcer.platform import linux
from rexcarcer.platform.fake import FakePlatform
from rexcarcer.platform.kinds import PlatformKind
from rexcarcer.rexfile.ast import Base, Rexfile, Run
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime import procfs
from rexcarcer.runtime.linux import INIT, RC_PRE
from tests.capability import require_tools
from tests.unit.fakes import fake_engine, fake_host

DATA = Path(__file__).resolve().parents[1] / "data" / "logs"
HOST = ipaddress.ip_address("203.0.113.1")


# -- the collector's configuration -----------------------------------------------------


def test_rsyslog_conf_listens_on_the_bridge_only_and_files_by_address(tmp_path: Path) -> None:
    paths = collector.CollectorPaths.under(tmp_path)
    conf = collector.render_conf(paths, collector.CollectorSettings(HOST))
    assert 'input(type="imudp" address="203.0.113.1" port="514" ipfreebind="1"' in conf
    assert "imuxsock" not in conf and "imklog" not in conf  # never the host's own logging
    assert f'lookup_table(name="rexcarcer-jails" file="{paths.table}"' in conf
    assert 'set $.jail = lookup("rexcarcer-jails", $fromhost-ip);' in conf
    assert 'property(name="$.jail" securepath="replace")' in conf
    assert f'constant(value="{paths.logs}/")' in conf
    assert 'net.enableDNS="off"' in conf
    assert "HOSTNAME" not in conf.split("RexJailFile")[1].split("}")[0]  # never in the path
    freebsd = collector.render_conf(paths, collector.CollectorSettings(HOST, freebind=False))
    assert "ipfreebind" not in freebsd


def test_a_path_that_would_break_the_config_is_refused(tmp_path: Path) -> None:
    paths = collector.CollectorPaths.under(tmp_path / 'x"y')
    with pytest.raises(LogsError, match="refusing a value"):
        collector.render_conf(paths, collector.CollectorSettings(HOST))


def test_rsyslogd_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    require_tools("rsyslogd")
    host = fake_host(tmp_path)
    web = JailRecord.from_json({"name": "web", "address": "203.0.113.2/24"})
    service.write_config(host, [web])
    paths = service.paths_for(host.config)
    done = subprocess.run(collector.check_argv(paths), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_limits_render_into_the_input_and_the_file_action(tmp_path: Path) -> None:
    paths = collector.CollectorPaths.under(tmp_path)
    bounded = collector.CollectorSettings(HOST, max_size=1 << 20, rate_burst=500, rate_interval=2)
    conf = collector.render_conf(paths, bounded)
    assert 'port="514" ipfreebind="1" RateLimit.Interval="2" RateLimit.Burst="500" ' in conf
    assert (
        f'rotation.sizeLimit="1048576" rotation.sizeLimitCommand="/bin/sh {paths.rotate}")' in conf
    )
    unbounded = collector.render_conf(paths, collector.CollectorSettings(HOST))
    assert "RateLimit" not in unbounded and "rotation." not in unbounded


def test_the_defaults_bound_every_jail_file_and_the_input(tmp_path: Path) -> None:
    cfg = load_config(root=tmp_path, environ=TESTING_ENV)
    assert cfg.log_max_size == 10 << 20 and cfg.log_rate_limit == (50000, 5)
    env = {**TESTING_ENV, "REX_LOG_MAX_SIZE": "256k", "REX_LOG_RATE_LIMIT": "0"}
    cfg = load_config(root=tmp_path, environ=env)
    assert cfg.log_max_size == 256 << 10 and cfg.log_rate_limit == (0, 0)
    assert load_config(root=tmp_path, environ={**env, "REX_LOG_MAX_SIZE": "0"}).log_max_size == 0
    for key, bad, needle in [
        ("REX_LOG_MAX_SIZE", "10X", "bad value for log_max_size"),
        ("REX_LOG_MAX_SIZE", "-1M", "bad value for log_max_size"),
        ("REX_LOG_MAX_SIZE", "4K", "below 64K"),
        ("REX_LOG_RATE_LIMIT", "100", "BURST/SECONDS"),
        ("REX_LOG_RATE_LIMIT", "100/0", "BURST/SECONDS"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            load_config(root=tmp_path, environ={**TESTING_ENV, key: bad})


def test_the_rotation_script_rotates_every_file_at_the_limit(tmp_path: Path) -> None:
    """The script rsyslogd runs, run here by /bin/sh on real files."""
    paths = collector.CollectorPaths.under(tmp_path)
    paths.logs.mkdir(parents=True)
    (paths.logs / "big.log").write_bytes(b"x" * 70_000)
    (paths.logs / "big.log.1").write_bytes(b"older")
    (paths.logs / "small.log").write_bytes(b"y" * 10)
    (paths.logs / "link.log").symlink_to(paths.logs / "big.log.1")
    paths.rotate.parent.mkdir(parents=True, exist_ok=True)
    paths.rotate.write_text(collector.rotate_script(paths, 65536))
    subprocess.run(["/bin/sh", str(paths.rotate)], check=True, cwd="/")
    assert (paths.logs / "big.log.1").read_bytes() == b"x" * 70_000  # the older one is gone
    assert (paths.logs / "big.log").read_bytes() == b""
    assert (paths.logs / "big.log").stat().st_mode & 0o777 == 0o640
    assert (paths.logs / "small.log").read_bytes() == b"y" * 10
    assert sorted(p.name for p in paths.logs.iterdir()) == [
        "big.log", "big.log.1", "link.log", "small.log"]  # fmt: skip


def test_check_reports_rsyslogd_refusals_and_absence(tmp_path: Path) -> None:
    paths = collector.CollectorPaths.under(tmp_path)
    runner = ScriptedRunner()
    runner.on(["rsyslogd", "-N1"], "error during parsing", returncode=1)
    with pytest.raises(LogsError, match="rsyslogd rejects"):
        service.check(runner, paths)


def test_lookup_table_maps_jail_addresses_to_names() -> None:
    records = [
        JailRecord.from_json({"name": "web", "address": "203.0.113.2/24"}),
        JailRecord.from_json({"name": "db", "address": None}),
        JailRecord.from_json({"name": "old", "address": "203.0.113.9/24"}),
    ]
    table = collector.table_of(records, without="old")
    assert table == {"203.0.113.2": "web"}
    doc = json.loads(collector.render_table(table))
    assert doc == {
        "version": 1,
        "nomatch": "_unknown",
        "type": "string",
        "table": [{"index": "203.0.113.2", "value": "web"}],
    }


def test_argv_and_the_freebsd_rc_script(tmp_path: Path) -> None:
    paths = collector.CollectorPaths.under(tmp_path)
    assert collector.run_argv(paths) == [
        "rsyslogd",
        "-n",
        "-f",
        str(paths.conf),
        "-i",
        str(paths.pidfile),
    ]
    script = collector.freebsd_rc_script(paths)
    assert script.startswith("#!/bin/sh\n") and 'rcvar="rexcarcer_logs_enable"' in script
    assert f'command_args="-f {paths.conf} -i {paths.pidfile}"' in script


def test_proc_net_udp_parser_on_saved_output() -> None:
    v4 = procfs.parse_net_udp((DATA / "proc-net-udp.txt").read_text())
    assert v4 == {("203.0.113.1", 514)}
    v6 = procfs.parse_net_udp((DATA / "proc-net-udp6.txt").read_text())
    assert v6 == {("::1", 5514)}


@pytest.mark.parametrize("with_proc", [True, False])
def test_bound_sees_this_process_udp_sockets(
    with_proc: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Linux: /proc/PID/net (the process's own namespace); without procfs
    # (FreeBSD), psutil
    if not with_proc:
        monkeypatch.setattr(procfs, "PROC", tmp_path / "no-proc")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s4:
        s4.bind(("127.0.0.1", 0))
        port = s4.getsockname()[1]
        assert service.bound(os.getpid(), "127.0.0.1", port)
    assert not service.bound(os.getpid(), "127.0.0.1", port)


def test_collector_pid_needs_the_pidfile_a_live_process_and_rex_config(tmp_path: Path) -> None:
    paths = collector.CollectorPaths.under(tmp_path)
    assert service.collector_pid(paths) is None
    paths.dir.mkdir()
    paths.pidfile.write_text(f"{os.getpid()}\n")  # alive, but not rsyslogd with our config
    assert service.collector_pid(paths) is None
    assert service.reload(paths) is False


# -- the jail's side -------------------------------------------------------------------


def test_linux_rc_pre_starts_busybox_syslogd_towards_the_host() -> None:
    text = linux.rc_pre(HOST, 514)
    assert "busybox syslogd -R 203.0.113.1:514 -L" in text
    assert "[ ! -S /dev/log ]" in text
    assert "-R [fd00::1]:514" in linux.rc_pre(ipaddress.ip_address("fd00::1"), 514)
    assert RC_PRE in INIT  # the runtime runs what rex writes


@pytest.mark.parametrize(
    ("busybox", "said"),
    [
        ("echo 'syslogd: applet not found' >&2; exit 127", "syslogd: applet not found"),
        (None, "busybox: not found"),  # no busybox at all
    ],
)
def test_linux_rc_pre_without_a_busybox_syslogd_starts_the_jail_and_says_so(
    tmp_path: Path, busybox: str | None, said: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if busybox is not None:
        (bin_dir / "busybox").write_text(f"#!/bin/sh\n{busybox}\n")
        (bin_dir / "busybox").chmod(0o755)
    done = subprocess.run(["/bin/sh", "-c", linux.rc_pre(HOST, 514)], capture_output=True,
                          text=True, env={"PATH": str(bin_dir)}, timeout=10)  # fmt: skip
    assert done.returncode == 0, done.stderr  # /etc/rc runs next
    assert said in done.stderr
    assert "busybox syslogd did not start in this jail: its syslog is not forwarded" in done.stderr


def test_freebsd_forwarding_keeps_the_users_syslog_conf() -> None:
    assert bsd.syslog_d(HOST, 514).endswith("*.*\t@203.0.113.1:514\n")
    stock = "*.err;kern.warning\t/dev/console\ninclude\t\t\t/etc/syslog.d\n"
    assert bsd.syslog_conf_with_include(stock + "include /usr/local/etc/syslog.d\n") is None
    mine = "*.* /var/log/all.log"
    added = bsd.syslog_conf_with_include(mine)
    assert added is not None and added.startswith(mine + "\n")
    assert added.endswith("include /etc/syslog.d\n")
    assert bsd.syslog_conf_with_include(None) == (
        "# added by rex, for /etc/syslog.d/rexcarcer.conf (rex logs)\ninclude /etc/syslog.d\n"
    )


# -- the hook on the in-memory drivers ------------------------------------------------------


@pytest.fixture
def eng(tmp_path: Path) -> Engine:
    return fake_engine(tmp_path, [LogHook()])


def up(eng: Engine, tmp_path: Path, name: str) -> Path:
    jails.up(
        eng, Rexfile(base=Base("bb"), steps=(Run("true"),), path=tmp_path / f"{name}.rex"), name
    )
    return eng.host.storage.mountpoint(f"jails/{name}")


def table(eng: Engine) -> dict[str, str]:
    doc = json.loads(service.paths_for(eng.host.config).table.read_text())
    return {row["index"]: row["value"] for row in doc["table"]}


def test_hook_writes_forwarding_and_keeps_the_table(eng: Engine, tmp_path: Path) -> None:
    root = up(eng, tmp_path, "web")
    assert "syslogd -R 203.0.113.1:514" in (root / "etc/rexcarcer/rc.pre").read_text()
    up(eng, tmp_path, "db")
    assert table(eng) == {"203.0.113.2": "web", "203.0.113.3": "db"}
    jails.stop(eng, "web")
    assert table(eng) == {"203.0.113.2": "web", "203.0.113.3": "db"}  # the address stays
    jails.destroy(eng, "web")
    assert table(eng) == {"203.0.113.3": "db"}


def test_hook_on_freebsd_writes_syslog_d_and_the_include(eng: Engine, tmp_path: Path) -> None:
    host = eng.host
    host.platform = FakePlatform(host.runner, host.config, like=PlatformKind.FREEBSD)
    root = up(eng, tmp_path, "web")
    assert (root / "etc/syslog.d/rexcarcer.conf").read_text().endswith("@203.0.113.1:514\n")
    assert (root / "etc/syslog.conf").read_text().endswith("include /etc/syslog.d\n")
    jails.restart(eng, "web")
    assert (root / "etc/syslog.conf").read_text().count("include /etc/syslog.d") == 1
    assert not (root / "etc/rexcarcer/rc.pre").exists()


# -- reading ------------------------------------------------------------------------------


def test_tail_returns_the_last_lines_across_blocks(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    lines = [f"line {i} " + "x" * 100 + "\n" for i in range(3000)]  # > several 64 KiB blocks
    log.write_text("".join(lines))
    got, end = reader.tail(log, 5)
    assert got == lines[-5:] and end == log.stat().st_size
    assert reader.tail(log, None)[0] == lines
    assert reader.tail(log, 0)[0] == []
    (tmp_path / "b.log").write_text("one\ntwo")  # no final newline
    assert reader.tail(tmp_path / "b.log", 1)[0] == ["two"]


def test_follow_sees_appends_truncation_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("old\n")
    seen: list[str] = []
    done = threading.Event()
    t = threading.Thread(
        target=reader.follow, args=(log, 4, seen.append), kwargs={"stop": done.is_set, "poll": 0.01}
    )
    t.start()

    def wait(n: int) -> None:
        deadline = time.monotonic() + 5
        while len(seen) < n:
            assert time.monotonic() < deadline, seen
            time.sleep(0.01)

    try:
        with log.open("a") as f:
            f.write("one\ntw")
            f.flush()
            wait(1)
            f.write("o\n")
        wait(2)
        log.write_text("")  # `: > a.log`, then the collector writes again
        time.sleep(0.05)
        with log.open("a") as f:
            f.write("after truncate\n")
        wait(3)
        log.rename(tmp_path / "a.log.1")
        log.write_text("rotated\n")
        wait(4)
    finally:
        done.set()
        t.join()
    assert seen == ["one\n", "two\n", "after truncate\n", "rotated\n"]


# -- under `rex host serve` ----------------------------------------------------------------


def test_collector_without_rsyslogd_lets_dns_run_and_says_so(
    eng: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = eng.host
    monkeypatch.setattr(service, "available", lambda: False)
    c = service.Collector(host)
    c.begin()
    c.keep_alive()
    assert c.pid is None and not c.wanted
    assert host.progress.messages == [  # type: ignore[attr-defined]
        "rsyslogd not found: jail logs are not collected (install rsyslog)"
    ]


def test_collector_that_fails_is_retried_with_a_backoff(
    eng: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = eng.host
    monkeypatch.setattr(service, "available", lambda: True)
    runner = host.runner
    assert isinstance(runner, ScriptedRunner)
    runner.on(["rsyslogd", "-N1"], "rsyslogd: error during parsing", returncode=1)
    c = service.Collector(host)
    c.begin()
    c.keep_alive()  # too early: waits for the backoff
    assert [m.split(":")[0] for m in host.progress.messages] == [  # type: ignore[attr-defined]
        "the log collector failed to start (retrying in 1 s)"
    ]
    c.next_try = 0
    c.keep_alive()
    assert "retrying in 2 s" in host.progress.messages[-1]  # type: ignore[attr-defined]
    assert service.paths_for(host.config).conf.exists()  # written, then refused
