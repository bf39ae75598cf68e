"""Everything that differs between operating systems, one module per OS
(mkosi's one-module-per-distribution): ``freebsd``, ``linux``, and ``fake`` for
unit tests.

``kinds.py`` is deliberately small (the configuration imports it for the
defaults); an OS module is imported only when a host is wired
(``rexcarcer.wiring``, the one place that chooses). Nothing outside
``rexcarcer.platform`` branches on the operating system.
"""
