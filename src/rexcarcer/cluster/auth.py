"""Who may use the agents' API: the one place that decides (agent/remote.py asks
for every request, so that a change here, a revocation say, holds at once).

By the time ``authorize`` is asked, the TLS handshake has verified the client's
certificate against the cluster CA (``ssl.CERT_REQUIRED``, cluster/tls.py). That
proves only that the CA issued it, and the CA issues the jails' certificates
too (pki/issue.py): root inside a jail holds one. A certificate is a host's
when

- its serial is not revoked (``pki/revoked/<serial>``, pki/registry.py);
- a DNS name in its subjectAltName is ``<host>.host.<zone>`` for a host
  registered under ``hosts/<host>`` (``rex cluster join``);
- an IP address in its subjectAltName is that host's registered address.
  Addresses compare as ``ipaddress`` values (``::1`` is ``0:0:0:0:0:0:0:1``;
  an IPv4-mapped IPv6 address is its IPv4 address).

A jail's certificate names ``<jail>.jail.<zone>``, its own names and its own
address, and a jail's address is never a host's (DESIGN section 4), so it
names no host here.
"""

from __future__ import annotations

import ipaddress
import re

from cryptography import x509

from rexcarcer.cluster import model
from rexcarcer.pki import registry
from rexcarcer.state.base import Store

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# one DNS label, as cluster/model.py's check_host_name accepts it
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# a host's certificate names one host; more candidates than this is not one
MAX_CANDIDATES = 4


def authorize(cert_der: bytes | None, store: Store, zone: str) -> str | None:
    """The registered host a verified client certificate belongs to, or None."""
    if not cert_der:
        return None
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    hosts = candidates(san.get_values_for_type(x509.DNSName), zone)
    if not hosts or len(hosts) > MAX_CANDIDATES:
        return None
    ips = {_plain(ip) for ip in san.get_values_for_type(x509.IPAddress)
           if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)}  # fmt: skip
    if registry.is_revoked(store, cert.serial_number):
        return None
    for host in hosts:
        address = registered_address(store, host)
        if address is not None and address in ips:
            return host
    return None


def candidates(dns_names: list[str], zone: str) -> list[str]:
    """The host names ``<host>.host.<zone>`` among a certificate's DNS names."""
    suffix = f".host.{zone.strip('.').lower()}"
    out: list[str] = []
    for name in dns_names:
        name = name.rstrip(".").lower()
        host = name[: -len(suffix)] if name.endswith(suffix) else ""
        if _HOST.fullmatch(host) and host not in out:
            out.append(host)
    return out


def registered_address(store: Store, host: str) -> Address | None:
    entry = store.get(model.host_key(host))
    if entry is None:
        return None
    try:
        data = entry.json()
        return _plain(ipaddress.ip_address(str(data["address"])))
    except (ValueError, KeyError, TypeError):
        return None


def _plain(ip: Address) -> Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
