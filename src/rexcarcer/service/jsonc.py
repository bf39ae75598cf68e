"""JSON for the agent socket's lines through CPython's C half of the json module.

``json`` imports ``json.decoder``, which imports ``re``: together more than
the rest of the thin client's imports (cli/thin.py), paid by every ``rex up``,
``rex ls`` and ``rex plan`` that an agent serves. ``_json`` is what ``json``
itself calls for the same work (``json.scanner.c_make_scanner`` and
``json.encoder.c_make_encoder``, with the arguments ``json.loads`` and
``json.dumps(obj, separators=(",", ":"))`` give them), so the text is the same
byte for byte. An interpreter whose ``_json`` takes other arguments, or has
none, gets ``json`` itself.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing imports re; mypy knows this name
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_WS = " \t\n\r"  # JSON's whitespace (RFC 8259 section 2)
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Context:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    array_hook = None  # read by Python 3.15's scanner
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_CONSTANTS.__getitem__)


def _default(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _make() -> tuple[Callable[[str, int], tuple[Any, int]] | None, Callable[..., Any] | None]:
    try:
        import _json

        scan = _json.make_scanner(_Context())  # type: ignore[arg-type]
        enc = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ":", ",",
                                 False, False, True)  # fmt: skip
        if scan('{"a":[1]}', 0) != ({"a": [1]}, 9) or "".join(enc({"a": ["é"]}, 0)) != (
            '{"a":["\\u00e9"]}'
        ):
            return None, None
    except (ImportError, AttributeError, TypeError, StopIteration):
        return None, None
    return scan, enc


_SCAN, _ENCODE = _make()


def loads(text: str) -> Any:
    """``json.loads(text)``; a ValueError for what is not one JSON value."""
    if _SCAN is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WS))
    try:
        obj, end = _SCAN(text, start)
    except StopIteration as exc:
        raise ValueError(f"not JSON at character {exc.value}") from None
    if text[end:].strip(_WS):
        raise ValueError(f"extra data after the JSON value at character {end}")
    return obj


def dumps(obj: Any) -> str:
    """``json.dumps(obj, separators=(",", ":"))``."""
    if _ENCODE is None:
        import json

        return json.dumps(obj, separators=(",", ":"))
    return "".join(_ENCODE(obj, 0))
