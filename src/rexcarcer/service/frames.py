"""Binary frames for a byte stream whose end and whose errors must be told apart
once the answer has begun (``rex cp`` out of a jail on another host: an error
half-way through a tar must not look like its end).

Each frame is a kind byte, a 4-byte big-endian length and that many bytes::

    D  data
    E  an error: JSON {"error", "hint", "exit_code"}; the last frame
    Z  the end (no payload); the last frame
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from typing import IO

from rexcarcer.cluster import AgentApiError, RemoteError

DATA, ERROR, END = b"D", b"E", b"Z"
_HEAD = struct.Struct(">cI")
MAX_FRAME = 4 << 20


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return _HEAD.pack(kind, len(payload)) + payload


def read(chunks: Iterable[bytes], out: IO[bytes], host: str) -> None:
    """Write the data frames of ``chunks`` to ``out`` until the end frame; raise
    an error frame as the remote error it is."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        while len(buf) >= _HEAD.size:
            kind, size = _HEAD.unpack_from(buf)
            if size > MAX_FRAME or kind not in (DATA, ERROR, END):
                raise AgentApiError(f"host {host}'s agent sent a malformed frame")
            if len(buf) < _HEAD.size + size:
                break
            payload, buf = buf[_HEAD.size : _HEAD.size + size], buf[_HEAD.size + size :]
            if kind == DATA:
                out.write(payload)
            elif kind == END:
                return
            else:
                _raise(host, payload)
    raise AgentApiError(f"host {host}'s agent ended the stream early",
                        hint="the copy is incomplete: copy again")  # fmt: skip


def _raise(host: str, payload: bytes) -> None:
    try:
        err = json.loads(payload)
        message, hint, code = str(err["error"]), err.get("hint"), int(err["exit_code"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AgentApiError(f"host {host}'s agent sent a malformed error frame") from exc
    raise RemoteError(host, message, hint=hint, exit_code=code)
