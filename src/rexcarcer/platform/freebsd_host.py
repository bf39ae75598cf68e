"""The FreeBSD host: what ``rex host setup`` runs and writes, what ``rex
doctor`` checks, and the jail's trust store. Pure builders and parsers; the
platform (freebsd.py) runs them through its runner.

Sources, all freebsd-src unless named: libexec/rc/network.subr (clone_up,
ifnet_rename), libexec/rc/rc.d/netif, libexec/rc/rc.subr, libexec/rc/rc.d/
local_unbound, usr.sbin/unbound/setup/local-unbound-setup.sh, usr.sbin/sysrc/
sysrc, sbin/ifconfig(8), usr.bin/rctl/rctl.c, sbin/pfctl(8), devfs(8).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from pathlib import Path

from rexcarcer.platform.base import (
    Address,
    HostCheck,
    HostFacts,
    PlatformConfig,
    SetupCommand,
    SetupFile,
    SetupInputs,
    SetupStep,
)

UNBOUND_CONF = Path("/var/unbound/unbound.conf")
UNBOUND_CONF_D = Path("/var/unbound/conf.d")
COLLECTOR_RC = Path("/usr/local/etc/rc.d/rexcarcer_logs")
AGENT_RC = Path("/usr/local/etc/rc.d/rexcarcer_agent")
SERVICES = ("local_unbound", "rexcarcer_logs", "rexcarcer_agent")
# local-unbound-setup.sh gen_unbound_conf: `if [ -d "${confdir}" ] ; then echo
# "include: ${confdir}/*.conf"` (l.273-274): only written if conf.d exists.
_INCLUDE = re.compile(r'^\s*include:\s*"?/var/unbound/conf\.d/\*\.conf"?\s*$', re.M)
_YES = ("YES", "TRUE", "ON", "1")  # rc.subr checkyesno, l.323-343


# -- facts ------------------------------------------------------------------------------


def parse_sysrc_all(text: str) -> tuple[tuple[str, str], ...]:
    """``sysrc -a`` ("Dump a list of all non-default configuration variables"):
    one ``name: value`` line each."""
    out = []
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            out.append((name, value))
    return tuple(out)


def parse_ifconfig_addresses(text: str) -> frozenset[str]:
    """The ``inet``/``inet6`` addresses of one interface in ``ifconfig IFACE``
    output (``inet 10.66.0.1 netmask 0xffffff00 ...``, ``inet6 ADDR prefixlen N``;
    a link-local carries ``%IFACE``, dropped)."""
    found = set()
    for m in re.finditer(r"^\s*inet6?\s+(\S+)", text, re.M):
        addr = m.group(1).split("%")[0]
        try:
            found.add(str(ipaddress.ip_address(addr)))
        except ValueError:
            continue
    return frozenset(found)


def probe_commands(config: PlatformConfig) -> list[list[str]]:
    """The read-only commands facts come from."""
    return [
        ["ifconfig", "-l"],
        ["ifconfig", config.interface],
        ["sysrc", "-a"],
        *(["service", name, "status"] for name in SERVICES),
    ]


def at(root: Path, path: Path) -> Path:
    """``path`` of the host whose / is ``root`` (``/`` but in tests)."""
    return root / path.relative_to("/")


def read_files(root: Path) -> list[Path]:
    paths = (UNBOUND_CONF, UNBOUND_CONF_D / "rexcarcer.conf", COLLECTOR_RC, AGENT_RC)
    return [at(root, p) for p in paths]


def fresh_facts() -> HostFacts:
    """bsdinstall's result: lo0 and one NIC, local_unbound neither enabled nor
    set up, no rex files."""
    return HostFacts(
        interfaces=frozenset({"lo0", "vtnet0"}),
        service_manager=True,
        tools=frozenset({"rsyslogd"}),  # the port's RUN_DEPENDS (sysutils/rsyslog8)
    )


# sysutils/rsyslog8 installs its daemon here (the rc.d script names it)
RSYSLOGD = Path("/usr/local/sbin/rsyslogd")


# -- the jail interface ---------------------------------------------------------------


def free_lo_unit(facts: HostFacts) -> str:
    """A loopback clone no one uses: not an interface now (``ifconfig -l``), not
    in ``cloned_interfaces`` and not renamed by an ``ifconfig_loN_name`` (Bastille
    takes lo1 for bastille0, research notes item 2)."""
    cloned = set(facts.rc("cloned_interfaces").split())
    named = {
        k.removeprefix("ifconfig_").removesuffix("_name")
        for k, _ in facts.rc_conf
        if k.startswith("ifconfig_lo") and k.endswith("_name")
    }
    taken = set(facts.interfaces) | cloned | named
    return next(f"lo{n}" for n in range(1, 1000) if f"lo{n}" not in taken)


def _family(address: Address) -> str:
    return "inet6" if address.version == 6 else "inet"


def interface_steps(config: PlatformConfig, facts: HostFacts) -> list[SetupStep]:
    """The jail interface (a loopback clone renamed REX_INTERFACE) with the host's
    jail-subnet address, now and at every boot.

    Now: one ifconfig creates and renames (ifconfig(8) ``create``: the new name
    is not printed "if the interface is renamed ... in the same ifconfig
    invocation"), a second adds the address. At boot: rc.d/netif's clone_up
    creates each ``cloned_interfaces`` entry (a cloner name and unit: there is
    no "rex" cloner), ifnet_rename applies ``ifconfig_loN_name``, and the
    address is then looked up under the new name (``ifconfig_rex0``,
    ``ifconfig_rex0_ipv6``). ``service netif cloneup`` would only create,
    not rename, so it is not used."""
    iface, addr = config.interface, config.host_address
    host_if = f"{addr}/{config.subnet.prefixlen}"
    family = _family(addr)
    steps: list[SetupStep] = []
    unit = free_lo_unit(facts)
    if iface not in facts.interfaces:
        steps.append(
            SetupCommand(
                ("ifconfig", unit, "create", "name", iface),
                f"create the jail interface {iface} (a clone of lo)",
            )
        )
        steps.append(
            SetupCommand(
                ("ifconfig", iface, family, host_if, "up"),
                f"give {iface} the host's jail-subnet address",
            )
        )
    elif str(addr) not in facts.addresses:
        steps.append(
            SetupCommand(
                ("ifconfig", iface, family, host_if, "alias"),
                f"add the host's jail-subnet address to {iface}",
            )
        )
    persisted = any(
        k.endswith("_name") and k.startswith("ifconfig_") and v == iface for k, v in facts.rc_conf
    )
    if not persisted:
        steps.append(
            SetupCommand(
                ("sysrc", f"cloned_interfaces+={unit}", f"ifconfig_{unit}_name={iface}"),
                f"create {iface} at boot (rc.d/netif clone_up, ifnet_rename)",
            )
        )
    var = f"ifconfig_{iface}" + ("_ipv6" if addr.version == 6 else "")
    wanted = f"{family} {host_if}"
    if facts.rc(var) != wanted:
        steps.append(SetupCommand(("sysrc", f"{var}={wanted}"), f"address {iface} at boot"))
    return steps


# -- local_unbound --------------------------------------------------------------------


def has_include(text: str | None) -> bool:
    return text is not None and bool(_INCLUDE.search(text))


def unbound_steps(inputs: SetupInputs, facts: HostFacts, root: Path) -> list[SetupStep]:
    """FreeBSD's base resolver with rex's conf.d files.

    The order matters: rc.subr runs every verb but rcvar/stop/delete/enable/
    describe/status only when the rcvar is YES, and otherwise prints "Cannot
    'setup' local_unbound. Set local_unbound_enable to YES in /etc/rc.conf or
    use 'onesetup' ..." and exits 0 (rc.subr l.1292-1310): so enable first.
    conf.d must exist before setup, or no include line is written
    (local-unbound-setup.sh l.273-274). unbound changes listeners only on a
    restart (unbound.conf(5) ``interface:``)."""
    steps: list[SetupStep] = [
        SetupFile(
            at(root, UNBOUND_CONF_D),
            None,
            "local-unbound-setup includes conf.d/*.conf only if the directory exists",
            0o755,
        )
    ]
    server_before = facts.file(inputs.unbound_server)
    server_now = next((f.content for f in inputs.unbound if f.path == inputs.unbound_server), None)
    steps += inputs.unbound
    if facts.rc("local_unbound_enable", "NO").upper() not in _YES:
        steps.append(
            SetupCommand(
                ("sysrc", "local_unbound_enable=YES"),
                "enable local_unbound (before setup: setup is a no-op "
                "while local_unbound_enable is NO)",
            )
        )
    set_up = not has_include(facts.file(at(root, UNBOUND_CONF)))
    if set_up:
        steps.append(
            SetupCommand(
                ("service", "local_unbound", "setup"),
                "generate /var/unbound/unbound.conf, which includes conf.d/*.conf. NOTE: "
                "local-unbound-setup also points this host's /etc/resolv.conf (and "
                "/etc/resolvconf.conf) at 127.0.0.1, keeping the old files in "
                "/var/backups/NAME.YYYYmmdd.HHMMSS; the upstream resolvers it found "
                "become its forwarders (/var/unbound/forward.conf)",
            )
        )
    steps.append(
        SetupCommand(
            ("service", "local_unbound", "configtest"),
            "check the configuration (local-unbound-checkconf)",
        )
    )
    if "local_unbound" not in facts.running:
        steps.append(SetupCommand(("service", "local_unbound", "start"), "start local_unbound"))
    elif set_up or server_before != server_now:
        steps.append(
            SetupCommand(
                ("service", "local_unbound", "restart"),
                "listen on the jail address (a reload keeps the old listeners)",
            )
        )
    return steps


# -- the log collector and the agent --------------------------------------------------


def collector_steps(inputs: SetupInputs, facts: HostFacts, root: Path) -> list[SetupStep]:
    """rsyslogd from sysutils/rsyslog8, beside the host's syslogd, with rex's
    configuration; it binds the host's address on the jail interface (no
    IP_FREEBIND on FreeBSD), so it starts after the interface exists."""
    if not inputs.collector or "rsyslogd" not in facts.tools:
        return []
    steps: list[SetupStep] = [*inputs.collector]
    steps.append(SetupCommand(inputs.collector_check, "check the collector's configuration"))
    steps.append(
        SetupFile(at(root, COLLECTOR_RC), inputs.collector_rc, "the collector's rc.d script", 0o755)
    )
    if facts.rc("rexcarcer_logs_enable", "NO").upper() not in _YES:
        steps.append(
            SetupCommand(
                ("sysrc", "rexcarcer_logs_enable=YES"), "start the jails' log collector at boot"
            )
        )
    steps.append(
        SetupCommand(("service", "rexcarcer_logs", "restart"), "(re)start the jails' log collector")
    )
    return steps


def agent_steps(facts: HostFacts, root: Path) -> list[SetupStep]:
    """The rex agent brings the jails up at boot (DESIGN section 4), through rex,
    so that its hooks run: jails are never put in jail_list. Its rc.d script
    comes with the port (sysutils/rexcarcer)."""
    if facts.file(at(root, AGENT_RC)) is None:
        return []
    steps: list[SetupStep] = []
    if facts.rc("rexcarcer_agent_enable", "NO").upper() not in _YES:
        steps.append(
            SetupCommand(
                ("sysrc", "rexcarcer_agent_enable=YES"),
                "start the rex agent at boot: it starts the jails",
            )
        )
    if "rexcarcer_agent" not in facts.running:
        steps.append(SetupCommand(("service", "rexcarcer_agent", "start"), "start the rex agent"))
    else:  # a new configuration: the jails keep running (rex-agent(8))
        steps.append(SetupCommand(("service", "rexcarcer_agent", "restart"),
                                  "restart the rex agent (the jails keep running)"))  # fmt: skip
    return steps


def setup_steps(
    config: PlatformConfig, inputs: SetupInputs, facts: HostFacts, root: Path = Path("/")
) -> list[SetupStep]:
    return [
        *interface_steps(config, facts),
        *unbound_steps(inputs, facts, root),
        *collector_steps(inputs, facts, root),
        *agent_steps(facts, root),
    ]


# -- the collector's socket ------------------------------------------------------------


def sockstat_argv(port: int) -> list[str]:
    """sockstat(1): -4 -6 both families, -P udp "Only show sockets of the
    specified protocols", -p "Only show Internet sockets if either the local or
    foreign port number is on the specified list". Neither -c nor -l: UDP
    sockets are neither connected nor listening in the TCP sense, and without
    both sockstat "will list both listening and connected sockets"."""
    return ["sockstat", "-4", "-6", "-P", "udp", "-p", str(int(port))]


def parse_sockstat(text: str) -> list[tuple[str, int, str]]:
    """(COMMAND, PID, LOCAL ADDRESS) of each socket line: sockstat(1) prints
    ``USER COMMAND PID FD PROTO LOCAL-ADDRESS FOREIGN-ADDRESS``."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[2].isdigit():
            out.append((fields[1], int(fields[2]), fields[5]))
    return out


def listener(text: str, address: str, port: int) -> int | None:
    """The PID of the rsyslogd bound to ``address:port`` in sockstat's output."""
    for command, pid, local in parse_sockstat(text):
        host, _, at_port = local.rpartition(":")
        if command == "rsyslogd" and host.strip("[]") == address and at_port == str(port):
            return pid
    return None


# -- rex doctor -----------------------------------------------------------------------


def doctor_commands(config: PlatformConfig) -> dict[str, list[str]]:
    return {
        "interface": ["ifconfig", config.interface],
        "devfs": ["devfs", "rule", "-s", "4", "show"],
        "local_unbound": ["service", "local_unbound", "status"],
        "unbound_enabled": ["service", "local_unbound", "enabled"],
        "pf_nat": ["pfctl", "-s", "nat"],
        "pf_rules": ["pfctl", "-s", "rules"],
        "racct": ["sysctl", "-n", "kern.racct.enable"],
        # ntptime(8) (base, contrib/ntp/util/ntptime.c): prints the kernel's
        # clock state as "ntp_gettime() returns code %d (%s)"
        "time": ["ntptime"],
    }


def check_interface(config: PlatformConfig, ok: bool, text: str) -> HostCheck:
    iface, addr = config.interface, str(config.host_address)
    if not ok:
        return HostCheck(
            "jail interface",
            False,
            f"{iface} does not exist: jail(8) cannot add "
            "a jail's alias to it; run `rex host setup`",
        )
    if addr not in parse_ifconfig_addresses(text):
        return HostCheck(
            "jail interface", False, f"{iface} lacks the host address {addr}; run `rex host setup`"
        )
    return HostCheck("jail interface", True, f"{iface} has {addr}")


def check_devfs(ok: bool, text: str) -> HostCheck:
    # jail(8) mounts /dev with `mount -t devfs -oruleset=4` (command.c
    # l.497-507); the kernel knows ruleset 4 only if rc.d/devfs loaded it
    if ok and text.strip():
        return HostCheck("devfs", True, "ruleset 4 (devfsrules_jail) is loaded")
    return HostCheck(
        "devfs",
        False,
        "devfs ruleset 4 is not loaded: jails get no /dev; run `service devfs restart`",
    )


def check_unbound(running: bool, enabled: bool) -> HostCheck:
    if running and enabled:
        return HostCheck("local_unbound", True, "enabled and running")
    what = "running" if running else "not running"
    return HostCheck(
        "local_unbound",
        False,
        f"{what}, {'enabled' if enabled else 'not enabled'}"
        " (local_unbound_enable): run `rex host setup`",
    )


def check_racct(ok: bool, text: str) -> HostCheck:
    # usr.bin/rctl/rctl.c enosys(): "RACCT/RCTL present, but disabled; enable
    # using kern.racct.enable=1 tunable" -- a boot-time tunable
    if ok and text.strip() == "1":
        return HostCheck("racct", True, "kern.racct.enable=1: LIMIT works")
    return HostCheck(
        "racct",
        False,
        "kern.racct.enable is not 1: LIMIT cannot work; add "
        'kern.racct.enable="1" to /boot/loader.conf and reboot',
    )


# sys/sys/timex.h, the kernel clock states: TIME_OK 0 ... TIME_WAIT 4, and
# "#define TIME_ERROR 5 /* clock not synchronized */" (STA_UNSYNC is set)
TIME_ERROR = 5
_NTP_STATE = re.compile(r"ntp_gettime\(\) returns code (\d+)")


def check_time(ok: bool, text: str) -> HostCheck:
    """Certificates (the cluster's, a jail's identity) are checked against the
    clock: a host whose kernel clock no NTP daemon disciplines says so."""
    m = _NTP_STATE.search(text) if ok else None
    hint = "enable ntpd: sysrc ntpd_enable=YES ntpd_sync_on_start=YES; service ntpd start"
    if m is None:
        return HostCheck("clock sync", False, f"cannot read the clock state (ntptime): {hint}")
    if int(m[1]) == TIME_ERROR:
        return HostCheck("clock sync", False, f"the clock is not synchronised (TIME_ERROR): {hint}")
    return HostCheck("clock sync", True, "the kernel clock is synchronised (ntptime)")


def check_pf(missing: Iterable[str] | None) -> HostCheck:
    if missing is None:
        return HostCheck("pf", False, "pf is not running (pfctl failed): PUBLISH needs it")
    absent = list(missing)
    if absent:
        return HostCheck("pf", False, "/etc/pf.conf lacks: " + "; ".join(absent))
    return HostCheck("pf", True, "the rexcarcer/* anchors are hooked in")


# -- the jail's trust store -----------------------------------------------------------

# certctl.sh: TRUSTPATH includes ${LOCALBASE}/share/certs, rehashed into
# CERTDESTDIR /etc/ssl/certs
TRUST_SOURCE = "/usr/local/share/certs/rexcarcer-cluster.crt"


def text_form_argv() -> list[str]:
    """The certificate with its text dump in front: certctl.sh's do_scan takes
    a file only if it has a text header (12.2-14.x: `grep -c '^Certificate:$'`,
    other versions count BEGIN CERTIFICATE lines); this form satisfies both."""
    return ["openssl", "x509", "-text"]


# -- rex base update: freebsd-update(8) on a clone of the base ------------------------

UPDATE_CONF = Path("/etc/freebsd-update.conf")
NOTHING_TO_INSTALL = "No updates are available to install."


def update_conf(host_conf: str) -> str:
    """The host's freebsd-update.conf (its KeyPrint, ServerName) with ``Components
    world`` only: a base has no kernel or src (research notes item 14)."""
    lines = [ln for ln in host_conf.splitlines() if not ln.strip().startswith("Components")]
    return (
        "# generated by rex from /etc/freebsd-update.conf\n"
        + "\n".join([*lines, "Components world"])
        + "\n"
    )


def update_argvs(root: Path, workdir: Path, conf: Path, current: str) -> list[list[str]]:
    """freebsd-update(8) on a tree that is not running: ``-b basedir`` "Operate on
    a system mounted at basedir", ``--currently-running`` because it would
    otherwise take the host kernel's release (uname -r), and
    ``--not-running-from-cron`` because "fetch should not be run
    non-interactively" without it; PAGER=cat so no file list waits for a tty.
    fetch and install run apart: an install with nothing fetched exits 1 in
    some versions (install_check_params: "No updates are available to
    install.")."""
    common = [
        "env",
        "PAGER=cat",
        "freebsd-update",
        "-b",
        str(root),
        "-d",
        str(workdir),
        "-f",
        str(conf),
        "--currently-running",
        current,
        "--not-running-from-cron",
    ]
    return [[*common, "fetch"], [*common, "install"]]
