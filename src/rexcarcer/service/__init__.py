"""The jail service: one API, three doors (DESIGN section 6).

::

    api.py      the ``JailService`` Protocol and what it returns
    local.py    in this process, on this host's engine
    routed.py   in a cluster: here, or through the owning host's agent (the one
                place that decides)
    remote.py   another host's agent, over mutual TLS
    socket.py   this host's agent, over its UNIX socket (wire.py: the framing)
    connect.py  which door the CLI uses: the local agent when it answers, else
                in process

The CLI and both agent servers call these methods; no verb is dispatched by
string. Every door raises the same ``RexError`` (with its exit code) for the
same failure, so a command prints the same and exits the same whichever door
served it.
"""
