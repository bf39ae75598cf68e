"""The state store's key layout (DESIGN section 6). Every prefix is spelled here
once; on etcd all of them sit under ``/rexcarcer/v1/``.

::

    jails/<jail>           the jail record (model/jail.py)
    history/<jail>/<gen>   the record of a kept earlier generation of the jail
    ipam/<address>         {"jail", "host"}: an address claimed (ipam/)
    dns/<jail>             the records a jail publishes (dns/publish.py)
    names/<fqdn>           {"jail", "host"}: a HOSTNAME claimed
    pki/certs/<jail>       the jail's current certificate (pki/registry.py)
    pki/revoked/<serial>   a revoked certificate (a jail's, a host's, a jail CA)
    pki/hosts/<host>       the host's current host certificate (cluster/signer.py)
    pki/jail-cas/<host>    the host's jail CA certificate (public)
    pki/crls/<host>        the CRL of the host's jail CA, signed by it (pki/hook.py)
    pki/root-crl           the cluster CA's own CRL, signed on the CA host
    cluster/config         the cluster's settings (cluster/model.py)
    cluster/ca             the cluster CA's certificate; its key only with
                           ``--share-ca`` (cluster/cashare.py)
    cluster/tokens/<id>    a join token, hashed: expiry, one use (cluster/enroll.py)
    join/<id>              a join or renewal request; join/<id>/answer its answer
    hosts/<host>           a member host; hosts/<host>/alive its lease
    subnets/<net>_<len>    a host's jail subnet claimed
"""

from __future__ import annotations

JAILS = "jails/"
HISTORY = "history/"
IPAM = "ipam/"
DNS = "dns/"
NAMES = "names/"
PKI_CERTS = "pki/certs/"
PKI_REVOKED = "pki/revoked/"
CLUSTER_CONFIG = "cluster/config"
PKI_HOSTS = "pki/hosts/"
PKI_JAIL_CAS = "pki/jail-cas/"
PKI_CRLS = "pki/crls/"
PKI_ROOT_CRL = "pki/root-crl"
CLUSTER_CA = "cluster/ca"
CLUSTER_TOKENS = "cluster/tokens/"
JOIN = "join/"
HOSTS = "hosts/"
SUBNETS = "subnets/"


def jail_key(name: str) -> str:
    return JAILS + name


def history_key(name: str, generation: int) -> str:
    return f"{HISTORY}{name}/{generation:08d}"  # zero-padded: listed in order
