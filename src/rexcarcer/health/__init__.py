"""Health checks and restart policies (``HEALTHCHECK``, ``RESTART``, ``DEPENDS``;
docs/agent.md). The host agent carries them out (agent/supervise.py); this
package holds what it is made of:

- hook.py: the ``JailHook`` that writes ``health/<jail>`` at every start (the
  boot and the time, health ``starting``) and removes it at stop;
- probe.py: the probes (CMD through the runtime's exec in the jail; TCP and
  HTTP from the host to the jail's address, stdlib only, with a timeout);
- monitor.py: when each jail is probed and what a run of results means
  (healthy, unhealthy after RETRIES failures in a row), pure;
- policy.py: whether a jail that stopped on its own is started again, when,
  and which jails wait for which, pure.
"""
