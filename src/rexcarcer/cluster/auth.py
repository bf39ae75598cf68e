"""Who is calling the agents' API: the one decision the API server asks for.

The TLS handshake has already checked the client's chain against the cluster's
root. That is not enough: a jail's certificate chains to the same root (through
its host's jail CA) and a jail chooses its own HOSTNAME. So a caller is a host
only when its certificate is a *host* certificate (pki/roles.py ``host_of``):

- signed by the cluster CA's own key, checked here with that CA's public key
  from the cluster's record (``cluster/ca``); a jail certificate is signed by a
  jail CA, and no jail CA can sign a CA below it (pathLenConstraint 0);
- carrying the host-role certificate policy (``roles.HOST_POLICY``);
- naming exactly ``<host>.host.<zone>`` and one address, where ``<host>`` is a
  registered host (``hosts/<host>``) and the address is its registered one;
- not revoked (``pki/revoked/<serial>``): ``rex cluster leave`` and a renewal
  record that, and the next request is refused.

Anything else, including any error reading the store or the certificate, is
"not a host": the server answers 403.
"""

from __future__ import annotations

import logging

from rexcarcer.cluster import model
from rexcarcer.errors import RexError
from rexcarcer.state.base import Store

log = logging.getLogger("rexcarcer.agent")


def authorize(cert_der: bytes | None, store: Store, zone: str) -> str | None:
    """The registered host a verified client certificate belongs to, or None."""
    if not cert_der:
        return None
    import datetime as dt
    import ipaddress

    from cryptography import x509

    from rexcarcer.cluster import cashare
    from rexcarcer.pki import registry, roles

    try:
        record = cashare.shared(store)
        if record is None:
            return None
        issuer = cashare.issuer_cert(record)
        cert = x509.load_der_x509_certificate(cert_der)
        found = roles.host_of(cert, issuer, zone, dt.datetime.now(dt.UTC))
        if found is None:
            return None
        host, address = found
        entry = store.get(model.host_key(host))
        if entry is None or ipaddress.ip_address(str(entry.json().get("address"))) != address:
            return None
        if registry.is_revoked(store, cert.serial_number):
            log.warning("API: refused the revoked certificate %x of %s", cert.serial_number, host)
            return None
    except (RexError, ValueError) as exc:
        log.warning("API: cannot check a client certificate: %s", exc)
        return None
    return host
