"""A FreeBSD 14 host, modelled for unit tests: a scripted runner that answers
the commands rex runs the way the FreeBSD sources say they behave.

Nothing here runs FreeBSD; each rule is what a source file says, cited beside
it (``src@C path:L`` as in the project's research notes: freebsd/freebsd-src,
the stored commit, the line). The host's files (``/var/unbound``,
``/usr/local/etc/rc.d``, ``/etc/resolv.conf``) live under ``fs``, the platform's
``fs_root``; jail roots are wherever the storage mounted them. What the model
does not know fails the test (``strict``): rex may not run a command the
model has no rule for.

Rules (each one is tested against rex in tests/unit/test_freebsd_model.py):
- ``jail -c`` fails, and creates nothing, when the interface of an ``ip4.addr``
  does not exist;
- ``service X setup`` (every verb but status/enabled/...) is a no-op that
  exits 0 while X's rcvar is not YES; ``onesetup`` forces it;
- ``local-unbound-setup`` writes the conf.d include only if conf.d exists,
  and points /etc/resolv.conf at 127.0.0.1;
- pkg(7) refuses to bootstrap without a tty unless ASSUME_ALWAYS_YES is set;
  ``pkg install`` without ``-y``/ASSUME_ALWAYS_YES installs nothing;
- ``route add`` of an IPv6 network needs ``-inet6``/``-6``;
- there is no /proc (the unit tests point rex's procfs reader at nothing);
- pfctl fails while pf is not loaded (``service pf start`` with pf_enable=YES
  loads it and /etc/pf.conf); anchors load and flush only then.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rexcarcer.dns.unbound import FakeUnbound
from rexcarcer.run import Completed, ScriptedRunner

# rc.subr: the rcvar of each service the model knows
RCVARS = {
    "local_unbound": "local_unbound_enable",
    "rexcarcer_logs": "rexcarcer_logs_enable",
    "rexcarcer_agent": "rexcarcer_agent_enable",
    "pf": "pf_enable",
    "ntpd": "ntpd_enable",
}
# rc.subr l.1292-1310: these verbs run whatever the rcvar says
NO_RCVAR_CHECK = ("rcvar", "stop", "delete", "enable", "describe", "status", "enabled")
# usr.sbin/pkg/pkg.c non_interactive_message
PKG_NO_TTY = (
    "The package management tool is not yet installed on your system.\n"
    "Please set ASSUME_ALWAYS_YES=yes environment variable to be able to bootstrap "
    "in non-interactive (stdin not being a tty)\n"
)


def _done(args: tuple[str, ...], code: int = 0, out: str = "", err: str = "") -> Completed:
    return Completed(args, code, out, err)


def _yes(value: str | None) -> bool:
    # rc.subr checkyesno l.323-343
    return (value or "").upper() in ("YES", "TRUE", "ON", "1")


@dataclass
class Jail:
    jid: int
    name: str
    path: Path
    aliases: list[tuple[str, str]]  # (interface, address)
    daemons: dict[str, dict[str, str]] = field(default_factory=dict)  # started by /etc/rc


def parse_conf(text: str) -> tuple[str, dict[str, str], set[str]]:
    """jail.conf(5) as rex writes it: the jail's name, its parameters, its flags."""
    name = re.search(r'^"([^"]+)" \{', text, re.M)
    assert name is not None, text
    params = {
        m[1]: bytes(m[2], "utf-8").decode("unicode_escape")
        for m in re.finditer(r'^\t(\S+) = "((?:[^"\\]|\\.)*)";$', text, re.M)
    }
    flags = set(re.findall(r"^\t([a-z_.]+);$", text, re.M))
    return name[1], params, flags


class FreeBSDHost(ScriptedRunner):
    """The scripted runner of one modelled FreeBSD host."""

    def __init__(self, fs: Path, *, nic: str = "vtnet0", nic_address: str = "203.0.113.2") -> None:
        super().__init__(strict=True)
        self.fs = fs
        self.interfaces: dict[str, list[str]] = {"lo0": ["127.0.0.1", "::1"], nic: [nic_address]}
        self.rc: dict[str, str] = {}
        self.running: set[str] = set()
        self.jails: dict[str, Jail] = {}
        self.listeners: dict[tuple[str, int], tuple[str, int]] = {}  # (addr, port) -> (cmd, pid)
        self.routes: dict[str, str] = {}
        self.dns = FakeUnbound()
        self.dns.up = False  # local_unbound is not running on a fresh host
        self.pids = 700
        self.rctl_rules: set[str] = set()
        self.racct = "0"  # GENERIC: RACCT compiled in, disabled (rctl.c enosys())
        # bsdinstall leaves ntpd off (/etc/defaults/rc.conf ntpd_enable="NO"): the
        # kernel clock stays unsynchronised (STA_UNSYNC) until something sets it
        self.clock_synced = False
        self.pf_loaded = False  # GENERIC has no pf: pf.ko loads with `service pf start`
        self.pf_main: list[str] = []  # the main ruleset's anchor hooks, as pfctl prints them
        self.anchors: dict[str, str] = {}  # anchor path -> the rules loaded into it
        (fs / "etc").mkdir(parents=True, exist_ok=True)
        (fs / "etc" / "resolv.conf").write_text("nameserver 192.0.2.53\n")
        # bsdinstall writes no /var/unbound/conf.d; the port installs rsyslogd
        (fs / "var" / "unbound").mkdir(parents=True, exist_ok=True)
        (fs / "usr" / "local" / "sbin").mkdir(parents=True, exist_ok=True)
        (fs / "usr" / "local" / "sbin" / "rsyslogd").write_text("#!/bin/sh\n")
        (fs / "etc" / "freebsd-update.conf").write_text(
            "KeyPrint 800651ef4b4c71c27e60786d7b487188970f4b4169cc055784e21eb71d410cc5\n"
            "ServerName update.FreeBSD.org\nComponents src world kernel\n"
        )

    def at(self, path: str) -> Path:
        return self.fs / path.lstrip("/")

    def _answer(self, args: tuple[str, ...]) -> Completed:
        handler: Callable[[tuple[str, ...]], Completed] | None = getattr(
            self, "_" + args[0].replace("-", "_"), None
        )
        if handler is None:
            raise AssertionError(f"the FreeBSD model has no rule for: {shlex.join(args)}")
        return handler(args)

    def _pid(self) -> int:
        self.pids += 1
        return self.pids

    # -- ifconfig(8) ----------------------------------------------------------------------

    def _ifconfig(self, args: tuple[str, ...]) -> Completed:
        if args[1:] == ("-l",):
            return _done(args, 0, " ".join(self.interfaces) + "\n")
        if args[1:] == ("-a",):
            listing = [self._ifconfig((args[0], n)).stdout for n in self.interfaces]
            return _done(args, 0, "".join(listing))
        name = args[1]
        if len(args) == 5 and args[2] == "create" and args[3] == "name":
            # a cloner name + unit (lo1): create, then rename in one call; ifconfig(8)
            # create: nothing printed "if the interface is renamed"
            if not re.fullmatch(r"lo[0-9]+", name) or name in self.interfaces:
                return _done(args, 1, err=f"ifconfig: SIOCIFCREATE2 ({name}): File exists\n")
            if args[4] in self.interfaces:
                return _done(args, 1, err="ifconfig: ioctl SIOCSIFNAME (set name): File exists\n")
            self.interfaces[args[4]] = []
            return _done(args)
        if name not in self.interfaces:
            # sbin/ifconfig/ifconfig.c: errx(1, "interface %s does not exist", ifname)
            return _done(args, 1, err=f"ifconfig: interface {name} does not exist\n")
        if len(args) == 2:
            lines = [f"{name}: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> metric 0 mtu 16384"]
            for a in self.interfaces[name]:
                fam = "inet6" if ":" in a else "inet"
                tail = "prefixlen 128" if fam == "inet6" else "netmask 0xffffffff"
                lines.append(f"\t{fam} {a} {tail}")
            return _done(args, 0, "\n".join(lines) + "\n")
        family, addr, verb = args[2], args[3].split("/")[0], args[4] if len(args) > 4 else ""
        assert family in ("inet", "inet6"), args
        if verb == "-alias":
            self.interfaces[name].remove(addr)
        elif addr not in self.interfaces[name]:
            self.interfaces[name].append(addr)
        return _done(args)

    # -- sysrc(8) -------------------------------------------------------------------------

    def _sysrc(self, args: tuple[str, ...]) -> Completed:
        if args[1:] == ("-a",):
            return _done(args, 0, "".join(f"{k}: {v}\n" for k, v in sorted(self.rc.items())))
        if args[1] == "-n":
            return _done(args, 0 if args[2] in self.rc else 1, self.rc.get(args[2], "") + "\n")
        out = []
        for item in args[1:]:
            m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(\+?)=(.*)", item, re.S)
            assert m is not None, item
            key, append, value = m.groups()
            old = self.rc.get(key, "")
            if append:  # sysrc(8) APPENDING VALUES: with a space, no duplicate
                words = old.split()
                value = " ".join([*words, value] if value not in words else words)
            self.rc[key] = value
            out.append(f"{key}: {old} -> {value}")
        return _done(args, 0, "\n".join(out) + "\n")

    # -- service(8) and rc.subr(8) --------------------------------------------------------

    def _service(self, args: tuple[str, ...]) -> Completed:
        name, verb = args[1], args[2]
        local = self.at(f"/usr/local/etc/rc.d/{name}")
        if name not in ("local_unbound", "pf", "ntpd") and not local.exists():  # base: /etc/rc.d
            return _done(
                args,
                1,
                err=f"{name} does not exist in /etc/rc.d or the local "
                "startup directories (/usr/local/etc/rc.d), or is not executable\n",
            )
        rcvar = RCVARS.get(name, f"{name}_enable")
        forced = verb.startswith("one")  # rc.subr l.1112-1117: one* sets the rcvar
        verb = verb.removeprefix("one")
        enabled = forced or _yes(self.rc.get(rcvar))
        if verb == "status":
            if name in self.running:
                return _done(args, 0, f"{name} is running as pid 42.\n")
            return _done(args, 1, f"{name} is not running.\n")
        if verb == "enabled":  # rc.subr l.1182-1185
            return _done(args, 0 if _yes(self.rc.get(rcvar)) else 1)
        if verb not in NO_RCVAR_CHECK and not enabled:
            # rc.subr l.1301-1308: says so and returns 0 without doing anything
            return _done(
                args,
                0,
                f"Cannot '{verb}' {name}. Set {rcvar} to YES in /etc/rc.conf "
                f"or use 'one{verb}' instead of '{verb}'.\n",
            )
        handler = getattr(self, f"_{name}_{verb}", None)
        if handler is None:
            raise AssertionError(f"the FreeBSD model has no rule for: {shlex.join(args)}")
        result: Completed = handler(args)
        return result

    def _local_unbound_setup(self, args: tuple[str, ...]) -> Completed:
        # local-unbound-setup.sh: unbound.conf with an include line only when
        # conf.d exists (l.273-274); control.conf; then, even with -n, it points
        # /etc/resolv.conf at 127.0.0.1 (l.172), keeping the old one in /var/backups
        work = self.at("/var/unbound")
        lines = [
            "# This file was generated by local-unbound-setup.",
            "server:",
            "        username: unbound",
            "        directory: /var/unbound",
            "        chroot: /var/unbound",
            "include: /var/unbound/control.conf",
        ]
        if (work / "conf.d").is_dir():
            lines.append("include: /var/unbound/conf.d/*.conf")
        (work / "unbound.conf").write_text("\n".join(lines) + "\n")
        (work / "control.conf").write_text("remote-control:\n    control-enable: yes\n")
        resolv = self.at("/etc/resolv.conf")
        backups = self.at("/var/backups")
        backups.mkdir(parents=True, exist_ok=True)
        (backups / "resolv.conf.20260101.000000").write_text(resolv.read_text())
        resolv.write_text("# Generated by resolvconf\nnameserver 127.0.0.1\n")
        return _done(args, 0, "Extracting forwarders from /etc/resolv.conf.\n")

    def _local_unbound_configtest(self, args: tuple[str, ...]) -> Completed:
        # rc.d/local_unbound l.59: local-unbound-checkconf /var/unbound/unbound.conf
        conf = self.at("/var/unbound/unbound.conf")
        if not conf.exists():
            return _done(args, 1, err=f"[1] unbound-checkconf: could not open {conf}\n")
        for inc in sorted((conf.parent / "conf.d").glob("*.conf")):
            text = inc.read_text()
            if text.strip() and "server:" not in text and "local-data" not in text:
                return _done(args, 1, err=f"{inc}: syntax error\n")
        return _done(args, 0, "unbound-checkconf: no errors in /var/unbound/unbound.conf\n")

    def _local_unbound_start(self, args: tuple[str, ...]) -> Completed:
        # rc.d/local_unbound l.88-93: prestart runs setup when unbound.conf is missing
        if not self.at("/var/unbound/unbound.conf").exists():
            self._local_unbound_setup(args)
        self.running.add("local_unbound")
        self.dns.up = True
        return _done(args, 0, "Starting local_unbound.\n")

    def _local_unbound_restart(self, args: tuple[str, ...]) -> Completed:
        return self._local_unbound_start(args)

    def _rexcarcer_logs_restart(self, args: tuple[str, ...]) -> Completed:
        """rsyslogd (sysutils/rsyslog8) started by rex's rc.d script: it binds the
        imudp address of its configuration if an interface has it (no
        IP_FREEBIND on FreeBSD), else it runs without that input."""
        script = self.at("/usr/local/etc/rc.d/rexcarcer_logs").read_text()
        conf = Path(re.search(r'command_args="-f (\S+) ', script)[1])  # type: ignore[index]
        m = re.search(r'input\(type="imudp" address="([^"]+)" port="(\d+)"', conf.read_text())
        assert m is not None
        self.running.add("rexcarcer_logs")
        self.listeners = {k: v for k, v in self.listeners.items() if v[0] != "rsyslogd"}
        if any(m[1] in addrs for addrs in self.interfaces.values()):
            self.listeners[(m[1], int(m[2]))] = ("rsyslogd", self._pid())
        return _done(args, 0, "Starting rexcarcer_logs.\n")

    def _rexcarcer_agent_start(self, args: tuple[str, ...]) -> Completed:
        self.running.add("rexcarcer_agent")
        return _done(args, 0, "Starting rexcarcer_agent.\n")

    # -- jail(8), jls(8), jexec(8) --------------------------------------------------------

    def _jail(self, args: tuple[str, ...]) -> Completed:
        if args[1] == "-R":
            jail = self.jails.pop(args[2], None)
            if jail is None:
                return _done(args, 1, err=f'jail: "{args[2]}" not found\n')
            self._unalias(jail)
            return _done(args)
        assert args[1] == "-f" and args[3] in ("-c", "-r"), args
        name, params, flags = parse_conf(Path(args[2]).read_text())
        assert name == args[4]
        if args[3] == "-r":
            jail = self.jails.pop(name, None)
            if jail is None:  # jail.c: jail_quoted_warnx(j, "not found")
                return _done(args, 1, err=f'jail: "{name}" not found\n')
            self._unalias(jail)
            return _done(args, 0, f"{name}: removed\n")
        if name in self.jails:
            return _done(args, 1, err=f'jail: "{name}" already exists\n')
        aliases = []
        for key in ("ip4.addr", "ip6.addr"):
            if key not in params:
                continue
            iface, _, addr = params[key].partition("|")
            fam = "inet" if key == "ip4.addr" else "inet6"
            if iface not in self.interfaces:
                # command.c l.325-376 runs ifconfig first (jail.c startcommands), and
                # l.188-193 + jail.c l.367-369: "...: failed", exit 1, no jail
                return _done(
                    args,
                    1,
                    err=f"ifconfig: interface {iface} does not exist\n"
                    f"jail: {name}: /sbin/ifconfig {iface} {fam} {addr} alias: failed\n",
                )
            aliases.append((iface, addr.split("/")[0]))
        assert "mount.devfs" in flags and params.get("devfs_ruleset") == "4"
        jail = Jail(len(self.jails) + 1, name, Path(params["path"]), aliases)
        for iface, addr in aliases:
            self.interfaces[iface].append(addr)
        self.jails[name] = jail
        if "exec.start" in params:
            self._rc(jail, params["exec.start"])
        return _done(args, 0, f"{name}: created\n")

    def _unalias(self, jail: Jail) -> None:
        for iface, addr in jail.aliases:
            self.interfaces[iface].remove(addr)

    def _rc(self, jail: Jail, exec_start: str) -> None:
        """/etc/rc in the jail: rc.subr loads /etc/rc.conf.d/NAME (l.1978-1993) and
        starts each enabled service whose rc.d script exists, in the environment
        exec.start gives it (exec.clean keeps none of rex's, command.c l.696-718)."""
        env: dict[str, str] = {}
        if ". /etc/rexcarcer/env" in exec_start:
            for line in (jail.path / "etc/rexcarcer/env").read_text().splitlines():
                key, _, value = line.partition("=")
                env[key] = shlex.split(value)[0] if value else ""
        conf_d = jail.path / "etc" / "rc.conf.d"
        for conf in sorted(conf_d.iterdir()) if conf_d.is_dir() else []:
            values = {
                k: shlex.split(v)[0] if v else ""
                for k, _, v in (
                    ln.partition("=")
                    for ln in conf.read_text().splitlines()
                    if ln and not ln.startswith("#")
                )
            }
            name = conf.name
            script = [jail.path / d / name for d in ("etc/rc.d", "usr/local/etc/rc.d")]
            if _yes(values.get(f"{name}_enable")) and any(p.exists() for p in script):
                jail.daemons[name] = {**env, **{k: v for k, v in values.items()}}

    def _jls(self, args: tuple[str, ...]) -> Completed:
        rows = [
            {"jid": str(j.jid), "name": j.name, "path": str(j.path)} for j in self.jails.values()
        ]
        doc = {"__version": "2", "jail-information": {"jail": rows}}
        return _done(args, 0, json.dumps(doc))

    def _jexec(self, args: tuple[str, ...]) -> Completed:
        assert args[1] == "-l", args
        jail = self.jails.get(args[2])
        if jail is None:
            return _done(args, 1, err=f'jexec: jail "{args[2]}" not found\n')
        rest = list(args[3:])
        assert rest[:2] == ["/usr/bin/env", "-i"], args
        env = {}
        rest = rest[2:]
        while rest and "=" in rest[0]:
            key, _, value = rest.pop(0).partition("=")
            env[key] = value
        # jexec(8) execvp()s the command: its status is the command's
        assert rest[:2] == ["/bin/sh", "-c"], args
        return self._sh(args, jail, rest[2], env)

    def _sh(self, args: tuple[str, ...], jail: Jail, line: str, env: dict[str, str]) -> Completed:
        words = shlex.split(line)
        # bin/sh/var.c: PATH defaults to _PATH_DEFPATH "/usr/bin:/bin" (paths.h)
        path = env.get("PATH", "/usr/bin:/bin").split(":")
        found = next((d for d in path if (jail.path / d.lstrip("/") / words[0]).exists()), None)
        if found is None:
            return _done(args, 127, f"/bin/sh: {words[0]}: not found\n")
        if words[0] == "true":
            return _done(args)
        assert words[0] == "pkg", f"the FreeBSD model runs only pkg in a jail, not {line!r}"
        return self._pkg(args, jail, words[1:], env)

    def _pkg(
        self, args: tuple[str, ...], jail: Jail, words: list[str], env: dict[str, str]
    ) -> Completed:
        yes = _yes(env.get("ASSUME_ALWAYS_YES")) or env.get("ASSUME_ALWAYS_YES") == "yes"
        real = jail.path / "usr/local/sbin/pkg"
        if not real.exists():
            # usr.sbin/pkg/pkg.c main(): config_bool(ASSUME_ALWAYS_YES); without it
            # and without a tty on stdin (rex's steps read /dev/null): exit 1
            if not yes:
                return _done(args, 1, PKG_NO_TTY)
            if not jail.aliases:
                return _done(args, 1, "pkg: Error fetching pkg: No address record\n")
            real.parent.mkdir(parents=True, exist_ok=True)
            real.write_text("#!/bin/sh\n")
        assert words[0] == "install", words
        names = [w for w in words[1:] if not w.startswith("-")]
        if not (yes or "-y" in words):
            # pkg src/utils.c vquery_yesno: "Assume EOF as false"
            return _done(args, 1, "Proceed with this action? [y/N]: \n")
        if not jail.aliases:
            return _done(args, 1, "pkg: No address record\n")
        for pkg in names:
            (jail.path / "usr/local/sbin").mkdir(parents=True, exist_ok=True)
            (jail.path / "usr/local/sbin" / pkg).write_text("#!/bin/sh\n")
            rc_d = jail.path / "usr/local/etc/rc.d"
            rc_d.mkdir(parents=True, exist_ok=True)
            (rc_d / pkg).write_text(f"#!/bin/sh\n# PROVIDE: {pkg}\n")
        return _done(args, 0, "".join(f"Installing {p}...\n" for p in names))

    # -- the rest -------------------------------------------------------------------------

    def _openssl(self, args: tuple[str, ...]) -> Completed:
        """The host's own openssl (the same tool on FreeBSD and here)."""
        data = self.inputs[-1]
        stdin = data.encode() if isinstance(data, str) else data
        done = subprocess.run(list(args), input=stdin, capture_output=True, check=False)
        return _done(args, done.returncode, done.stdout.decode(), done.stderr.decode())

    def _rsyslogd(self, args: tuple[str, ...]) -> Completed:
        assert args[1] == "-N1"
        return _done(args, 0 if Path(args[3]).exists() else 1)

    def _sockstat(self, args: tuple[str, ...]) -> Completed:
        port = int(args[args.index("-p") + 1])
        lines = ["USER     COMMAND    PID   FD  PROTO  LOCAL ADDRESS         FOREIGN ADDRESS"]
        for (addr, at), (cmd, pid) in sorted(self.listeners.items()):
            if at == port:
                proto = "udp6" if ":" in addr else "udp4"
                lines.append(f"root     {cmd:10} {pid:<5} 6   {proto}   {addr}:{at:<10} *:*")
        return _done(args, 0, "\n".join(lines) + "\n")

    def _route(self, args: tuple[str, ...]) -> Completed:
        verb = args[2]
        family = next((a for a in args if a in ("-inet", "-inet6", "-4", "-6")), None)
        net = args[args.index("-net") + 1]
        if ipaddress.ip_network(net).version == 6 and family not in ("-inet6", "-6"):
            # sbin/route/route.c getaddr(): af == 0 -> AF_INET: the v6 net is a bad address
            return _done(args, 1, err=f"route: bad address: {net.split('/')[0]}\n")
        if verb == "delete":
            self.routes.pop(net, None)
        else:
            self.routes[net] = args[-1]
        return _done(args, 0, f"{verb} net {net}: gateway {args[-1]}\n")

    def _devfs(self, args: tuple[str, ...]) -> Completed:
        # rc.d/devfs loads /etc/defaults/devfs.rules: ruleset 4 is devfsrules_jail
        return _done(args, 0, "100 include 1\n200 include 2\n300 include 3\n400 path fd unhide\n")

    def _sysctl(self, args: tuple[str, ...]) -> Completed:
        assert args[-1] == "kern.racct.enable"
        return _done(args, 0, self.racct + "\n")

    def _ntpq(self, args: tuple[str, ...]) -> Completed:
        # ntpq(8) -c rv: the system variables; without a running ntpd the query
        # times out ("ntpq: read: Connection refused" on the loopback socket)
        if "ntpd" not in self.running:
            return _done(args, 1, err="localhost: timed out, nothing received\n")
        leap, peer = ("00", "12345") if self.clock_synced else ("11", "0")
        return _done(
            args,
            0,
            f"associd=0 status=0615 leap_none, sync_ntp, 1 event, clock_sync,\n"
            f"leap={leap}, stratum=2, refid=192.0.2.1, offset=0.250, peer={peer}\n",
        )

    def _chronyc(self, args: tuple[str, ...]) -> Completed:
        # not in the base system (net/chrony is a port): run.py's answer to a
        # program that is not installed
        from rexcarcer.errors import NotSupported

        raise NotSupported(f"{args[0]} is not installed")

    def _ntpd_status(self, args: tuple[str, ...]) -> Completed:
        return _done(args, 0 if "ntpd" in self.running else 1)

    def _ntpd_start(self, args: tuple[str, ...]) -> Completed:
        self.running.add("ntpd")  # rc.d/ntpd
        return _done(args, 0, "Starting ntpd.\n")

    def _rctl(self, args: tuple[str, ...]) -> Completed:
        # usr.bin/rctl/rctl.c enosys(): with RACCT compiled in but
        # kern.racct.enable=0 every rctl call fails with this message
        if self.racct != "1":
            return _done(args, 1, err="rctl: RACCT/RCTL present, but disabled; enable using "
                         "kern.racct.enable=1 tunable\n")  # fmt: skip
        verb, subject = args[1], args[2]
        jail = subject.split(":")[1]
        if verb == "-u":  # rctl.c print_usage: one resource=amount per line
            if jail not in self.jails:
                return _done(args, 1, err=f"rctl: failed to get resource utilization for "
                             f"'{subject}': No such process\n")  # fmt: skip
            return _done(args, 0, "cputime=0\nmemoryuse=1048576\nmaxproc=3\nopenfiles=12\n")
        if verb == "-a":
            self.rctl_rules.add(subject)
        elif verb == "-r":
            self.rctl_rules = {r for r in self.rctl_rules if not r.startswith(subject)}
        return _done(args, 0)

    def _mount(self, args: tuple[str, ...]) -> Completed:
        # mount(8) -p: the mounted file systems in fstab(5) form; the model
        # mounts nothing inside jails
        assert args[1:] == ("-p",), args
        return _done(args, 0, "/dev/gpt/rootfs\t/\tufs\trw\t1 1\ndevfs\t/dev\tdevfs\trw\t0 0\n")

    def _ntptime(self, args: tuple[str, ...]) -> Completed:
        # contrib/ntp/util/ntptime.c: printf("ntp_gettime() returns code %d (%s)\n",
        # status, timex_state(status)); sys/sys/timex.h TIME_OK 0, TIME_ERROR 5
        code, state = (0, "OK") if self.clock_synced else (5, "ERROR")
        return _done(args, 0, f"ntp_gettime() returns code {code} ({state})\n  time ...\n")

    def _pf_start(self, args: tuple[str, ...]) -> Completed:
        # rc.d/pf: kldload pf, pfctl -e, pfctl -f /etc/pf.conf; the model keeps
        # the anchor hooks of pf.conf as pfctl -s prints them (print_rule())
        conf = self.at("/etc/pf.conf")
        self.pf_loaded = True
        self.pf_main = [
            line.strip()
            for line in (conf.read_text() if conf.exists() else "").splitlines()
            if re.fullmatch(r'(nat-anchor|rdr-anchor|anchor) "[^"]+"', line.strip())
        ]
        return _done(args, 0, "Enabling pf.\n")

    def _pfctl(self, args: tuple[str, ...]) -> Completed:
        if not self.pf_loaded:
            # sbin/pfctl/pfctl.c main(): dev = open(pf_device, mode); if (dev == -1)
            # err(1, "%s", pf_device): /dev/pf exists only once pf.ko is loaded
            return _done(args, 1, err="pfctl: /dev/pf: No such file or directory\n")
        rest = list(args[1:])
        anchor = rest[rest.index("-a") + 1] if "-a" in rest else None
        if "-f" in rest:  # pfctl -a ANCHOR -f -: the anchor's rules, replaced whole
            assert anchor is not None and rest[rest.index("-f") + 1] == "-", args
            loaded = self.inputs[-1]  # what rex piped in (ScriptedRunner.run records it)
            self.anchors[anchor] = loaded.decode() if isinstance(loaded, bytes) else loaded or ""
            return _done(args)
        if "-F" in rest:
            assert anchor is not None, args
            self.anchors.pop(anchor, None)
            return _done(args)
        what = rest[rest.index("-s") + 1]
        if what == "Anchors":  # pfctl_show_anchors(): one "  PATH" line per child
            below = sorted(a for a in self.anchors if anchor and a.startswith(anchor + "/"))
            return _done(args, 0, "".join(f"  {a}\n" for a in below))
        if anchor is not None:
            return _done(args, 0, self.anchors.get(anchor, ""))
        kinds = ("nat-anchor", "rdr-anchor") if what == "nat" else ("anchor",)
        lines = [f"{h} all" if h.startswith("anchor") else h for h in self.pf_main
                 if h.split()[0] in kinds]  # fmt: skip
        return _done(args, 0, "".join(f"{line}\n" for line in lines))

    def _env(self, args: tuple[str, ...]) -> Completed:
        """``env PAGER=cat freebsd-update -b ROOT ... fetch|install`` (rex base update):
        the model's update is one patch level."""
        assert args[1:3] == ("PAGER=cat", "freebsd-update"), args
        root = Path(args[args.index("-b") + 1])
        assert "--not-running-from-cron" in args and "--currently-running" in args
        if args[-1] == "install":
            version = root / "bin" / "freebsd-version"
            text = version.read_text()
            m = re.search(r'USERLAND_VERSION="([^"]+?)(?:-p(\d+))?"', text)
            assert m is not None
            new = f"{m[1]}-p{int(m[2] or 0) + 1}"
            version.write_text(text.replace(m[0], f'USERLAND_VERSION="{new}"'))
            return _done(args, 0, "Installing updates... done.\n")
        return _done(args, 0, "Fetching metadata index... done.\n")

    def _umount(self, args: tuple[str, ...]) -> Completed:
        return _done(args)


def freebsd_base(root: Path, version: str = "14.1-RELEASE-p5") -> None:
    """The files of a FreeBSD base.txz the model looks at."""
    for d in ("bin", "etc/rc.d", "usr/sbin", "usr/bin", "var/run", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "bin" / "sh").write_text("#!\n")
    (root / "usr/sbin/pkg").write_text("#!\n")  # pkg(7), the bootstrap stub
    (root / "usr/bin/true").write_text("#!\n")
    (root / "bin" / "freebsd-version").write_text(
        "#!/bin/sh\n# bin/freebsd-version/freebsd-version.sh.in l.31\n"
        f'USERLAND_VERSION="{version}"\n'
    )
    # the stock syslog.conf ends with its include lines
    (root / "etc" / "syslog.conf").write_text(
        "*.err;kern.warning;auth.notice;mail.crit\t\t/dev/console\n"
        "include\t\t\t\t\t\t/etc/syslog.d\ninclude\t\t\t\t\t\t/usr/local/etc/syslog.d\n"
    )
