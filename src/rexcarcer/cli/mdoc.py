"""mdoc(7) from help text: escaping, inline markup, paragraphs. Pure.

The CLI's help strings are written for ``--help``; this module turns them into
lines of a FreeBSD-style manual page (style.mdoc(5)): one sentence per line,
`code` spans as ``Ql``, ``name(8)`` as ``Xr``, ``--option`` as ``Fl``, and
click's ``\\b`` (no rewrap) paragraphs as literal displays.
"""

from __future__ import annotations

import inspect
import re
import textwrap

# mdoc(7) "MACRO SYNTAX": a word on a macro line that names a callable macro
# is called, so literal words that look like one are escaped with \&.
_MACRO_LIKE = re.compile(r"[A-Z][a-z][a-z]?")
# mdoc(7) delimiters: alone as an argument they are punctuation, not text.
_DELIMS = frozenset(["(", "[", ".", ",", ":", ";", ")", "]", "?", "!", "|"])
_OPENING = "(["
_CLOSING = re.compile(r"[.,:;)\]?!]+(?=\s|$)")
_INLINE = re.compile(
    r"`(?P<code>[^`]+)`"
    r"|(?P<xr>\b[a-z][a-z0-9_.+-]*)\((?P<sec>[1-9])\)"
    r"|(?<![\w/.-])(?P<fl>--?[a-zA-Z][a-zA-Z0-9-]*)(?![\w/])"
    r"|\b(?P<fx>FreeBSD)\b"
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(`\"'])")


def text_line(text: str) -> str:
    """One line of text: backslashes escaped, no leading control character."""
    out = text.replace("\\", "\\e")
    return "\\&" + out if out.startswith((".", "'")) else out


def arg(word: str) -> str:
    """One argument of a macro line, shown literally."""
    out = word.replace("\\", "\\e").replace('"', "\\(dq")
    if _MACRO_LIKE.fullmatch(out) or out in _DELIMS:
        return "\\&" + out
    return out


def args(text: str) -> str:
    return " ".join(arg(w) for w in text.split())


def _sentences(text: str) -> list[str]:
    """A run of prose, one sentence per line (style.mdoc(5), mdoc(7)), long
    ones wrapped (mandoc -W style: lines over 80 bytes)."""
    text = " ".join(text.split())
    out: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        wrapped = textwrap.wrap(sentence, 72, break_long_words=False, break_on_hyphens=False)
        out += [text_line(line) for line in wrapped]
    return out


def _macro(m: re.Match[str]) -> str:
    if m.group("code") is not None:
        return "Ql " + args(m.group("code"))
    if m.group("fx") is not None:
        return "Fx"
    if m.group("xr") is not None:
        return f"Xr {arg(m.group('xr'))} {m.group('sec')}"
    return "Fl " + arg(m.group("fl")[1:])


def inline(text: str) -> list[str]:
    """Prose with inline markup as mdoc lines.

    Text glued to a macro stays glued: ``(`x`),`` puts the delimiters on the
    macro line (mdoc(7) "Delimiters"), ``word`x``` becomes ``.Pf word Ql x``,
    and ``x`s`` ends the macro line with ``Ns`` so that the next line follows
    without a space (outside the quotes, unlike ``.Ql x Ns s``)."""
    lines: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        before = text[pos : m.start()]
        name, _, margs = _macro(m).partition(" ")
        opening = len(before) - len(before.rstrip(_OPENING))
        if opening:
            margs = " ".join(before[-opening:]) + (" " + margs if margs else "")
            before = before[:-opening]
        if before and not before[-1].isspace():
            word = before.split()[-1]
            before = before[: -len(word)]
            name = f"Pf {arg(word)} {name}"
        lines += _sentences(before)
        lines.append(f".{name}" + (f" {margs}" if margs else ""))
        pos = m.end()
        tail = _CLOSING.match(text, pos)
        if tail is not None:
            lines[-1] += " " + " ".join(tail.group(0))
            pos = tail.end()
        elif pos < len(text) and not text[pos].isspace():
            lines[-1] += " Ns"
    return lines + _sentences(text[pos:])


def _literal(body: str) -> list[str]:
    lines = [text_line(line) for line in body.splitlines()]
    return [".Bd -literal -offset 2n", *lines, ".Ed"]


def _looks_like_code(body: str) -> bool:
    """A ``\\b`` paragraph of command lines or indented text stays literal;
    one kept unwrapped only for the terminal is prose here."""
    lines = body.splitlines()
    return any(line[:1].isspace() for line in lines) or lines[0].startswith(("rex ", "$ ", "# "))


def paragraphs(help_text: str) -> list[str]:
    """A whole help text: paragraphs separated by ``.Pp``; click's ``\\b``
    (no rewrap) paragraphs as literal displays, which make their own space
    (mandoc warns about a ``.Pp`` before ``.Bd``)."""
    out: list[str] = []
    text = inspect.cleandoc(help_text.split("\f", 1)[0])
    for para in re.split(r"\n\s*\n", text):
        if para.startswith("\b") and _looks_like_code(para[1:].strip("\n")):
            out += _literal(para[1:].strip("\n"))
        elif para.strip():
            out += ([".Pp"] if out else []) + inline(para.lstrip("\b"))
    return out
