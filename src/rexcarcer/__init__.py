"""RexCarcer: a FreeBSD jail manager and cluster manager."""

__version__ = "0.1.0"
