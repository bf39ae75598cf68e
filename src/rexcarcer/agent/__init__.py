"""``rex agent``: the per-host daemon.

::

    daemon.py    runs it: the local socket, then the cluster member (when the host
                 has joined one) or the single-host supervisor loop
    local.py     the UNIX socket through which this host's ``rex`` commands reach
                 the jail service (peer credentials checked)
    remote.py    the mutual-TLS API through which other hosts reach it
    cluster.py   lease, watch, DNS of the whole cluster, routes, SkyDNS
    jailsync.py  this host's jails kept in their desired state
"""
