"""The typed records rex keeps, and where it keeps them.

::

    keys.py   the store's key layout: every prefix, spelled once
    jail.py   the jail record (``jails/<name>``), versioned, with its migration,
              and ``JailInfo``, what ``rex ls`` shows of a jail
    base.py   a local base (``bases/<name>@<version>``) as the engine sees it
    plan.py   an action of ``rex plan``

Pure: no I/O. Drivers, features and the engine exchange these instead of
dictionaries, so a field is spelled in one place and cannot be dropped on the way.
"""
