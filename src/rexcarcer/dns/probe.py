"""One DNS query over UDP, without dnspython (which costs ~100 ms to import).

rex asks unbound for its sentinel record before each change (about 0.3 ms);
only the question and the answer count matter (RFC 1035 section 4.1).
"""

from __future__ import annotations

import os
import socket
import struct
import time

from rexcarcer.dns import DnsError

QTYPE = {"A": 1, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33}
_RD = 0x0100  # recursion desired
_QR = 0x8000  # this is a response


def build_query(qid: int, name: str, rtype: str) -> bytes:
    labels = [label.encode("ascii") for label in name.rstrip(".").split(".")]
    if any(not 0 < len(label) < 64 for label in labels):
        raise DnsError(f"cannot query malformed name {name!r}")
    qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    return struct.pack("!6H", qid, _RD, 1, 0, 0, 0) + qname + struct.pack("!2H", QTYPE[rtype], 1)


def parse_reply(packet: bytes, qid: int) -> tuple[int, int] | None:
    """(rcode, answer count) of a reply to query ``qid``; None for anything else."""
    if len(packet) < 12:
        return None
    rid, flags, _, ancount, _, _ = struct.unpack("!6H", packet[:12])
    if rid != qid or not flags & _QR:
        return None
    return flags & 0xF, ancount


def query(
    server: str, port: int, name: str, rtype: str, *, timeout: float = 1.0
) -> tuple[int, int]:
    """Ask ``server`` once; (rcode, answer count). ``OSError``/``TimeoutError`` pass up."""
    qid = int.from_bytes(os.urandom(2), "big")
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((server, port))
        sock.send(build_query(qid, name, rtype))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer from {server}:{port} within {timeout} s")
            sock.settimeout(left)
            reply = parse_reply(sock.recv(4096), qid)
            if reply is not None:
                return reply
