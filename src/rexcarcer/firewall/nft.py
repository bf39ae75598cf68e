"""Linux: a Ruleset as nftables JSON (libnftables-json(5)), in one table.

rex owns the table ``inet rexcarcer`` and nothing else. ``apply`` sends one
batch to ``nft -j -f -`` (nft(8): ``-f -`` reads stdin):

    add table inet rexcarcer      # so that the delete below cannot fail
    delete table inet rexcarcer   # drops every old chain and rule
    add table inet rexcarcer
    add chain ... / add rule ...  # the whole new content

nft sends a file as one netlink batch and the kernel commits it as one
transaction: if any command fails, nothing changes (checked on this machine:
a batch whose last rule names a missing chain exits 1 and leaves the old
table as it was). ``flush table`` was not used because it keeps the chains:
a chain rex no longer needs would stay, and re-adding a base chain with a
different priority fails ("Operation not supported"). No other table is
named in the batch, so no other table can change.

Chains (base chains have policy accept: rex adds drops and NAT, it never
decides the fate of traffic that is not its own):

    prerouting   nat, dstnat (-100)   DNAT of published ports arriving from outside
    output       nat, dstnat (-100)   the same for connections made by the host itself
    postrouting  nat, srcnat (100)    masquerade; hairpin for DNAT'ed connections
                                      from a jail or from the host
    input        filter, filter (0)   jails -> guard_in
    forward      filter, filter (0)   jails -> guard_out
    guard_in     (regular)            DNS/syslog accepted; control ports dropped
    guard_out    (regular)            other hosts' and etcd's addresses dropped

Priority numbers are those of nft(8) "Standard priority names" (dstnat -100,
filter 0, srcnat 100). NAT in an inet table needs Linux 5.2 (nft(8), NAT
STATEMENTS). Every rule carries a comment naming its jail or purpose, and
rules are built as typed JSON objects, never as nft rule text.

Every table's base chains on a hook see the packet: an ``accept`` in rex's
chains only ends rex's chain (the administrator's drops still apply), a
``drop`` anywhere is final. Seen on this machine (tests/integration/
test_firewall.py): with br_netfilter loaded (bridge-nf-call-iptables=1, per
network namespace) packets between two jails on rex0 also pass these hooks,
so the masquerade never touches traffic to the jail subnet; and nft lists a
rule without the ``meta nfproto`` that "ip daddr" implies, and a one-element
set as a plain value, which the reader accepts.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rexcarcer.errors import CommandFailed
from rexcarcer.firewall import FirewallError
from rexcarcer.firewall.rules import (
    HOST_SERVICES,
    Address,
    Guard,
    Masquerade,
    Network,
    PortForward,
    Ruleset,
)
from rexcarcer.rexfile.ast import Proto
from rexcarcer.run import Runner

log = logging.getLogger("rexcarcer.firewall")

Json = dict[str, Any]

FAMILY = "inet"
TABLE = "rexcarcer"


@dataclass(frozen=True, slots=True)
class ChainDef:
    name: str
    type: str | None = None  # None: a regular chain (a jump target)
    hook: str | None = None
    prio: int = 0


PREROUTING = ChainDef("prerouting", "nat", "prerouting", -100)
OUTPUT = ChainDef("output", "nat", "output", -100)
POSTROUTING = ChainDef("postrouting", "nat", "postrouting", 100)
INPUT = ChainDef("input", "filter", "input", 0)
FORWARD = ChainDef("forward", "filter", "forward", 0)
GUARD_IN = ChainDef("guard_in")
GUARD_OUT = ChainDef("guard_out")
CHAINS = (PREROUTING, OUTPUT, POSTROUTING, INPUT, FORWARD, GUARD_IN, GUARD_OUT)

SOURCES_TAG = "guard jail sources"  # the rules matching Guard.sources (read back by tag)

LOOPBACK = {4: ipaddress.ip_network("127.0.0.0/8"), 6: ipaddress.ip_network("::1/128")}

# -- expressions (libnftables-json(5), EXPRESSIONS and STATEMENTS) -------------


def _ipf(version: int) -> str:
    """The payload protocol of an address family: ``ip`` or ``ip6``."""
    return "ip" if version == 4 else "ip6"


def _nfproto(version: int) -> Json:
    # explicit: fib and dnat do not restrict the family by themselves, and
    # nft drops it again from listings where "ip daddr" already implies it
    return match({"meta": {"key": "nfproto"}}, "ipv4" if version == 4 else "ipv6")


def match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def meta(key: str) -> Json:
    return {"meta": {"key": key}}


def fib_type(flag: str) -> Json:
    """``fib daddr type`` / ``fib saddr type``: the address type the routing
    table gives ``flag``; ``local`` = one of this host's addresses."""
    return {"fib": {"result": "type", "flags": [flag]}}


def prefix(net: Network) -> Json:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def anon_set(items: Iterable[Any]) -> Json:
    return {"set": list(items)}


def ct_dnat() -> Json:
    """``ct status dnat``: the connection's destination was rewritten."""
    return match({"ct": {"key": "status"}}, "dnat", op="in")


def dnat(addr: Address, port: int) -> Json:
    # family is required for an address in an inet table (libnftables-json(5),
    # NETWORK ADDRESS TRANSLATION)
    return {"dnat": {"family": _ipf(addr.version), "addr": str(addr), "port": port}}


MASQUERADE: Json = {"masquerade": None}
DROP: Json = {"drop": None}
ACCEPT: Json = {"accept": None}


def jump(chain: ChainDef) -> Json:
    return {"jump": {"target": chain.name}}


# -- commands ----------------------------------------------------------------


def _table() -> Json:
    return {"table": {"family": FAMILY, "name": TABLE}}


def add_chain(chain: ChainDef) -> Json:
    body: Json = {"family": FAMILY, "table": TABLE, "name": chain.name}
    if chain.type is not None:
        body |= {"type": chain.type, "hook": chain.hook, "prio": chain.prio, "policy": "accept"}
    return {"add": {"chain": body}}


def add_rule(chain: ChainDef, comment: str, *expr: Json) -> Json:
    if len(comment) > 128:  # NFT_USERDATA_MAXLEN bounds comments; ours are short
        raise FirewallError(f"nft rule comment too long: {comment!r}")
    return {"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain.name,
                             "comment": comment, "expr": list(expr)}}}  # fmt: skip


def clear_batch() -> Json:
    """Delete the table, whether or not it exists."""
    return {"nftables": [{"add": _table()}, {"delete": _table()}]}


def batch(ruleset: Ruleset) -> Json:
    """The one transaction that makes ``inet rexcarcer`` hold exactly ``ruleset``."""
    rules = list(_rules(ruleset))
    used = {r["add"]["rule"]["chain"] for r in rules} | set(_jump_targets(rules))
    cmds: list[Json] = [{"add": _table()}, {"delete": _table()}, {"add": _table()}]
    cmds += [add_chain(c) for c in CHAINS if c.name in used]
    return {"nftables": cmds + rules}


def _jump_targets(rules: Iterable[Json]) -> Iterator[str]:
    for r in rules:
        for stmt in r["add"]["rule"]["expr"]:
            if "jump" in stmt:
                yield stmt["jump"]["target"]


def _rules(rs: Ruleset) -> Iterator[Json]:
    for f in rs.forwards:
        yield from _forward_rules(f, rs.jail_nets)
    if rs.masquerade is not None:
        yield _masquerade_rule(rs.masquerade)
    if rs.guard is not None:
        yield from _guard_rules(rs.guard)


def _forward_dst(f: PortForward, *, from_host: bool) -> list[Json]:
    v = f.jail_addr.version
    out = [_nfproto(v)]
    if f.host_addr is not None:
        out.append(match(payload(_ipf(v), "daddr"), str(f.host_addr)))
    else:
        # any of the host's own addresses, and only those: traffic routed
        # through the host to another machine's port keeps its destination
        out.append(match(fib_type("daddr"), "local"))
        if from_host:
            # 127.0.0.1:PORT stays the host's own (a DNAT'ed loopback source
            # is a martian once it leaves lo)
            out.append(match(payload(_ipf(v), "daddr"), prefix(LOOPBACK[v]), op="!="))
    out.append(match(payload(str(f.proto), "dport"), f.host_port))
    return out


def _forward_rules(f: PortForward, jail_nets: Sequence[Network]) -> Iterator[Json]:
    tag = f"publish {f.jail} {f.label}"
    yield add_rule(PREROUTING, tag, *_forward_dst(f, from_host=False),
                   dnat(f.jail_addr, f.jail_port))  # fmt: skip
    yield add_rule(OUTPUT, f"{tag} from the host", *_forward_dst(f, from_host=True),
                   dnat(f.jail_addr, f.jail_port))  # fmt: skip
    # After DNAT the jail would answer a client on its own subnet (or the host)
    # directly, from its own address, and the client drops the reply: rewrite
    # the source of those connections to the host's address ("hairpin").
    v = f.jail_addr.version
    to_jail = [_nfproto(v), match(payload(_ipf(v), "daddr"), str(f.jail_addr)),
               match(payload(str(f.proto), "dport"), f.jail_port), ct_dnat()]  # fmt: skip
    nets = [prefix(n) for n in jail_nets if n.version == v]
    if nets:
        yield add_rule(POSTROUTING, f"hairpin {f.jail} {f.label} from jails", *to_jail,
                       match(payload(_ipf(v), "saddr"), anon_set(nets)), MASQUERADE)  # fmt: skip
    yield add_rule(POSTROUTING, f"hairpin {f.jail} {f.label} from the host", *to_jail,
                   match(fib_type("saddr"), "local"), MASQUERADE)  # fmt: skip


def _masquerade_rule(m: Masquerade) -> Json:
    v = m.subnet.version
    keep = [prefix(n) for n in (m.subnet, *m.keep)]
    expr = [_nfproto(v), match(payload(_ipf(v), "saddr"), prefix(m.subnet)),
            match(payload(_ipf(v), "daddr"), anon_set(keep), op="!=")]  # fmt: skip
    if m.out_iface is not None:
        expr.append(match(meta("oifname"), m.out_iface))
    return add_rule(POSTROUTING, f"masquerade {m.subnet}", *expr, MASQUERADE)


def _guard_rules(g: Guard) -> Iterator[Json]:
    # A jail can forge its source address but not the interface its packets
    # arrive on: match either. The host's own address is in the subnet too,
    # and its connections to itself arrive on lo, where no jail's can: those
    # are not the guard's business. Only connections a jail opens ("ct
    # direction original"): its replies to a cluster host using a published
    # port, or to the host's own health checks, pass.
    v = g.subnet.version
    opened = match({"ct": {"key": "direction"}}, "original")
    on_bridge = [match(meta("iifname"), g.bridge)]
    from_subnet = [match(payload(_ipf(v), "saddr"), prefix(g.subnet)),
                   match(meta("iifname"), "lo", op="!=")]  # fmt: skip
    from_jails = [(f"guard jails on {g.bridge}", on_bridge),
                  (f"guard jail subnet {g.subnet}", from_subnet)]  # fmt: skip
    for version in (4, 6):
        nets = [prefix(n) for n in g.sources if n.version == version]
        if nets:
            from_sources = [match(payload(_ipf(version), "saddr"), anon_set(nets)),
                            match(meta("iifname"), "lo", op="!=")]  # fmt: skip
            from_jails.append((f"{SOURCES_TAG} ipv{version}", from_sources))
    for tag, conds in from_jails:
        yield add_rule(INPUT, tag, *conds, opened, jump(GUARD_IN))
    if g.addresses:
        for tag, conds in from_jails:
            yield add_rule(FORWARD, tag, *conds, opened, jump(GUARD_OUT))
    for proto, port in HOST_SERVICES:
        name = "DNS" if port == 53 else "syslog"
        yield add_rule(GUARD_IN, f"guard open {name} {proto}/{port} to the host",
                       match(payload(str(proto), "dport"), port), ACCEPT)  # fmt: skip
    for proto in Proto:
        ports = g.ports_of(proto)
        if ports:
            yield add_rule(GUARD_IN, f"guard closed {proto} control ports of the host",
                           match(payload(str(proto), "dport"), anon_set(ports)), DROP)  # fmt: skip
    if g.addresses:
        yield add_rule(GUARD_IN, "guard closed cluster addresses", jump(GUARD_OUT))
    for version in (4, 6):
        addrs = [str(a) for a in g.addresses_of(version)]
        if addrs:
            to_addrs = match(payload(_ipf(version), "daddr"), anon_set(addrs))
            tag = f"guard closed cluster addresses ipv{version}"
            yield add_rule(GUARD_OUT, tag, to_addrs, DROP)


# -- argv ----------------------------------------------------------------------


def apply_argv() -> list[str]:
    return ["nft", "-j", "-f", "-"]


def list_argv() -> list[str]:
    return ["nft", "-j", "list", "table", FAMILY, TABLE]


# -- reading back ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    """What ``nft -j list table inet rexcarcer`` shows: the ruleset it encodes
    and, per chain, the comments of its rules in order (the same rules can
    only be there when both match what ``batch`` would write)."""

    ruleset: Ruleset
    comments: tuple[tuple[str, tuple[str, ...]], ...]


def comments_of(nft: Json) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Per chain (sorted by name), the comments of its rules, from a batch or a listing."""
    chains: dict[str, list[str]] = {}
    for obj in nft.get("nftables", []):
        body = obj.get("add", obj)
        if "chain" in body:
            chains.setdefault(body["chain"]["name"], [])
        elif "rule" in body:
            rule = body["rule"]
            chains.setdefault(rule["chain"], []).append(str(rule.get("comment", "")))
    return tuple(sorted((k, tuple(v)) for k, v in chains.items()))


def parse_listing(text: str) -> Listing:
    """Parse ``nft -j list table inet rexcarcer`` output. Anything this module
    would not have written raises FirewallError (``apply`` then rewrites it)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FirewallError(f"nft printed something that is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("nftables"), list):
        raise FirewallError("nft -j list printed no nftables array")
    try:
        rules: dict[str, list[Json]] = {}
        for obj in data["nftables"]:
            if isinstance(obj, dict) and "rule" in obj:
                rules.setdefault(str(obj["rule"].get("chain")), []).append(obj["rule"])
        forwards = tuple(_read_forward(r) for r in rules.get(PREROUTING.name, []))
        masq = [m for r in rules.get(POSTROUTING.name, [])
                if (m := _read_masquerade(r)) is not None]  # fmt: skip
        if len(masq) > 1:
            raise FirewallError("table inet rexcarcer holds more than one masquerade rule")
        ruleset = Ruleset(forwards, masq[0] if masq else None, _read_guard(rules))
        return Listing(ruleset, comments_of(data))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        # a shape this module never writes (the ipaddress errors are ValueErrors)
        raise FirewallError(
            f"table inet rexcarcer holds rules rex did not write: {exc!r}",
            hint="rex rewrites the whole table on the next apply",
        ) from exc


def _rhs_items(right: Any) -> list[Any]:
    """A match's right side as a list: nft lists a one-element set as a scalar."""
    if isinstance(right, dict) and "set" in right:
        items = right["set"]
        return list(items) if isinstance(items, list) else [items]
    return [right]


def _net(item: Any) -> Network:
    if isinstance(item, dict) and "prefix" in item:
        p = item["prefix"]
        return ipaddress.ip_network(f"{p['addr']}/{p['len']}")
    return ipaddress.ip_network(str(item))


def _matches(rule: Json) -> Iterator[tuple[Json, str, Any]]:
    for stmt in rule.get("expr", []):
        if "match" in stmt:
            m = stmt["match"]
            yield m["left"], m["op"], m["right"]


def _stmt(rule: Json, key: str) -> Any:
    for stmt in rule.get("expr", []):
        if key in stmt:
            return stmt[key]
    return None


def _unexpected(rule: Json, why: str) -> FirewallError:
    return FirewallError(
        f"table inet rexcarcer holds a rule rex did not write (chain {rule.get('chain')}, "
        f"comment {rule.get('comment')!r}): {why}",
        hint="rex rewrites the whole table on the next apply",
    )


_PUBLISH = re.compile(r"publish (\S+) ")


def _read_forward(rule: Json) -> PortForward:
    found = _PUBLISH.match(str(rule.get("comment", "")))
    nat = _stmt(rule, "dnat")
    if found is None or not isinstance(nat, dict):
        raise _unexpected(rule, "not a published port")
    host_addr: Address | None = None
    proto: Proto | None = None
    host_port: Any = None
    for left, op, right in _matches(rule):
        p = left.get("payload", {})
        if op == "==" and p.get("field") == "daddr":
            host_addr = ipaddress.ip_address(right)
        elif op == "==" and p.get("field") == "dport" and p.get("protocol") in ("tcp", "udp"):
            proto, host_port = Proto(p["protocol"]), right
    if proto is None or not isinstance(host_port, int):
        raise _unexpected(rule, "no tcp/udp port")
    try:
        return PortForward(found.group(1), proto, host_port, ipaddress.ip_address(nat["addr"]),
                           nat["port"], host_addr)  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise _unexpected(rule, str(exc)) from exc


def _read_masquerade(rule: Json) -> Masquerade | None:
    if not str(rule.get("comment", "")).startswith("masquerade "):
        return None
    subnet: Network | None = None
    keep: list[Network] = []
    out_iface = None
    for left, op, right in _matches(rule):
        field = left.get("payload", {}).get("field")
        if field == "saddr" and op == "==":
            subnet = _net(right)
        elif field == "daddr" and op == "!=":
            keep = [_net(i) for i in _rhs_items(right)]
        elif left.get("meta", {}).get("key") == "oifname":
            out_iface = str(right)
    if subnet is None:
        raise _unexpected(rule, "no source subnet")
    return Masquerade(subnet, out_iface, tuple(n for n in keep if n != subnet))


def _read_guard(rules: dict[str, list[Json]]) -> Guard | None:
    bridge: str | None = None
    subnet: Network | None = None
    sources: list[Network] = []
    for rule in rules.get(INPUT.name, []):
        of_sources = str(rule.get("comment", "")).startswith(SOURCES_TAG)
        for left, op, right in _matches(rule):
            if left.get("meta", {}).get("key") == "iifname" and op == "==":
                bridge = str(right)
            elif left.get("payload", {}).get("field") == "saddr" and of_sources:
                sources += [_net(x) for x in _rhs_items(right)]
            elif left.get("payload", {}).get("field") == "saddr":
                subnet = _net(right)
    if bridge is None and subnet is None:
        return None
    if bridge is None or subnet is None:
        raise FirewallError("table inet rexcarcer holds half a guard (bridge or subnet missing)")
    ports: list[tuple[Proto, int]] = []
    for rule in rules.get(GUARD_IN.name, []):
        if not any("drop" in stmt for stmt in rule.get("expr", [])):
            continue  # the DNS/syslog accepts and the jump to guard_out
        for left, _op, right in _matches(rule):
            p = left.get("payload", {})
            if p.get("field") == "dport":
                ports += [(Proto(p["protocol"]), int(x)) for x in _rhs_items(right)]
    addrs = [ipaddress.ip_address(str(x)) for rule in rules.get(GUARD_OUT.name, [])
             for left, _op, right in _matches(rule)
             if left.get("payload", {}).get("field") == "daddr"
             for x in _rhs_items(right)]  # fmt: skip
    return Guard(subnet, bridge, tuple(ports), tuple(addrs), tuple(sources))


# -- the driver ------------------------------------------------------------------


class NftFirewall:
    """The ``Firewall`` of a Linux host, through ``nft`` and the runner.

    ``argv_prefix`` runs nft elsewhere, e.g. ``["ip", "netns", "exec", NS]``
    (tests run the "host" in a network namespace of their own)."""

    def __init__(self, runner: Runner, *, argv_prefix: Sequence[str] = ()) -> None:
        self.runner = runner
        self.argv_prefix = list(argv_prefix)

    def _nft(self, argv: list[str], *, input: str | None = None) -> str:
        try:
            return self.runner.run([*self.argv_prefix, *argv], input=input).stdout
        except CommandFailed as exc:
            raise FirewallError(
                f"nft refused the rexcarcer table: {exc.stderr or exc.message}",
                hint="NAT in an inet table needs Linux 5.2 and nf_tables; "
                "`nft -j list table inet rexcarcer` shows what is loaded",
            ) from exc

    def listing(self) -> Listing | None:
        """What the kernel holds now; None when the table does not exist."""
        done = self.runner.run([*self.argv_prefix, *list_argv()], check=False)
        if not done.ok:
            if "No such file or directory" in done.stderr:
                return None
            raise FirewallError(f"nft -j list table inet rexcarcer failed: {done.stderr.strip()}")
        return parse_listing(done.stdout)

    def current(self) -> Ruleset:
        found = self.listing()
        return found.ruleset if found is not None else Ruleset()

    def _holds(self, ruleset: Ruleset, wanted: Json) -> bool:
        try:
            found = self.listing()
        except FirewallError as exc:  # something rex did not write: replace it
            log.warning("firewall: %s", exc.message)
            found = None
        if found is None:
            return ruleset.empty
        return found.ruleset == ruleset and found.comments == comments_of(wanted)

    def apply_commands(self, ruleset: Ruleset) -> list[list[str]]:
        return [] if self._holds(ruleset, batch(ruleset)) else [[*self.argv_prefix, *apply_argv()]]

    def apply(self, ruleset: Ruleset) -> bool:
        """Make the table hold ``ruleset``; False when it already did."""
        wanted = batch(ruleset)
        if self._holds(ruleset, wanted):
            return False
        self._nft(apply_argv(), input=json.dumps(wanted))
        log.info("firewall: table inet rexcarcer loaded (%d forwards)", len(ruleset.forwards))
        return True

    def missing_hooks(self) -> list[str]:
        # a table's base chains hook themselves into netfilter: nothing to add
        return []

    def clear(self) -> None:
        self._nft(apply_argv(), input=json.dumps(clear_batch()))
