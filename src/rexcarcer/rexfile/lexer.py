"""Split ``.rex`` text into logical lines and words, keeping physical positions.

A logical line is one instruction: physical lines joined where one ends in
``\\`` (the backslash and the newline are removed, as sh(1) does), with whole
comment lines and blank lines dropped. Every character of a logical line keeps
the ``Pos`` (physical line, column) it came from, so an error in the third
physical line of a continued instruction points there, not at its first line.

How the rest of a line is split depends on the instruction, so the lexer
offers three readings and the parser picks one:

- :meth:`Line.words`: whitespace-separated words, no quoting (BASE, IP, ...);
- :meth:`Line.rest`: the raw remainder, verbatim (PROVISION RUN, ENV);
- :meth:`Line.shell_words`: sh-like words with ``"..."``, ``'...'`` and
  ``\\`` escapes (PROVISION COPY, whose paths may contain spaces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rexcarcer.errors import RexfileError
from rexcarcer.rexfile.ast import Pos

# Only space and tab separate words: other Unicode spaces are kept inside
# words, where validation then names them (repr shows '\xa0').
BLANKS = " \t"
# A trailing backslash continues the line. Whitespace after it is invisible in
# an editor, so it is tolerated rather than silently ending the line.
_CONTINUATION = re.compile(r"\\[ \t]*\Z")


def fail(file: str, pos: Pos, message: str, hint: str | None = None) -> RexfileError:
    """The error for ``message`` at ``pos`` of ``file``."""
    return RexfileError(message, file=file, line=pos.line, col=pos.col, hint=hint)


@dataclass(frozen=True, slots=True)
class Token:
    """A word (or raw remainder) of a logical line and where it starts."""

    text: str
    pos: Pos
    start: int  # index into Line.text of the first character
    end: int  # index just past the last character


@dataclass(frozen=True, slots=True)
class Line:
    """One logical line; ``positions`` has one entry per character of ``text``
    plus one for the place just past its end (where "missing ..." points)."""

    text: str
    positions: tuple[Pos, ...]
    file: str = field(default="<input>", compare=False)

    def pos(self, index: int) -> Pos:
        return self.positions[min(index, len(self.text))]

    @property
    def end(self) -> Pos:
        return self.positions[len(self.text)]

    def error(self, at: int | Token, message: str, hint: str | None = None) -> RexfileError:
        pos = at.pos if isinstance(at, Token) else self.pos(at)
        return fail(self.file, pos, message, hint)

    def _skip_blanks(self, index: int) -> int:
        while index < len(self.text) and self.text[index] in BLANKS:
            index += 1
        return index

    def words(self, start: int = 0) -> list[Token]:
        """Whitespace-separated words from ``start``, without any quoting."""
        out: list[Token] = []
        word = self.next_word(start)
        while word is not None:
            out.append(word)
            word = self.next_word(word.end)
        return out

    def next_word(self, start: int) -> Token | None:
        """The first whitespace-separated word from ``start``, if any."""
        i = self._skip_blanks(start)
        if i >= len(self.text):
            return None
        j = i
        while j < len(self.text) and self.text[j] not in BLANKS:
            j += 1
        return Token(self.text[i:j], self.pos(i), i, j)

    def rest(self, start: int) -> Token | None:
        """The raw text from ``start`` on, leading blanks skipped; None if empty."""
        i = self._skip_blanks(start)
        if i >= len(self.text):
            return None
        return Token(self.text[i:], self.pos(i), i, len(self.text))

    def shell_words(self, start: int) -> list[Token]:
        """Words from ``start`` with sh-like quoting.

        ``'...'`` is literal; in ``"..."`` a backslash escapes only ``"`` and
        ``\\``; outside quotes a backslash escapes any character. Quoted and
        unquoted parts next to each other form one word, as in sh(1).
        """
        out: list[Token] = []
        i = self._skip_blanks(start)
        while i < len(self.text):
            word, j = self._shell_word(i)
            out.append(Token(word, self.pos(i), i, j))
            i = self._skip_blanks(j)
        return out

    def _shell_word(self, i: int) -> tuple[str, int]:
        text = self.text
        parts: list[str] = []
        while i < len(text) and text[i] not in BLANKS:
            ch = text[i]
            if ch in "'\"":
                part, i = self._quoted(i)
                parts.append(part)
            elif ch == "\\" and i + 1 < len(text):
                parts.append(text[i + 1])
                i += 2
            else:
                parts.append(ch)
                i += 1
        return "".join(parts), i

    def _quoted(self, open_at: int) -> tuple[str, int]:
        """The inside of the quote opening at ``open_at``, and the index past it."""
        text, quote = self.text, self.text[open_at]
        parts: list[str] = []
        i = open_at + 1
        while i < len(text):
            ch = text[i]
            if ch == quote:
                return "".join(parts), i + 1
            if quote == '"' and ch == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
                ch = text[i + 1]
                i += 1
            parts.append(ch)
            i += 1
        raise self.error(
            open_at,
            f"unterminated {quote} quote",
            hint=f"close it with a matching {quote}, or escape it as \\{quote}",
        )


def _check_nul(text: str, file: str) -> None:
    at = text.find("\0")
    if at >= 0:
        line_start = text.rfind("\n", 0, at) + 1
        pos = Pos(text.count("\n", 0, at) + 1, at - line_start + 1)
        raise fail(file, pos, "NUL character in the file", hint="a .rex file is text: remove it")


class _Joiner:
    """Accumulates the physical pieces of one logical line."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.chars: list[str] = []
        self.positions: list[Pos] = []
        self.backslash: Pos | None = None  # set while the line is being continued

    def add(self, lineno: int, piece: str) -> None:
        self.chars.extend(piece)
        self.positions.extend(Pos(lineno, col) for col in range(1, len(piece) + 1))

    def finish(self, lineno: int, piece: str) -> Line | None:
        """Close the line with its last physical piece; None if it is all blanks."""
        self.add(lineno, piece)
        text = "".join(self.chars).rstrip(BLANKS)
        positions = self.positions[: len(text)]
        if text:
            last = positions[-1]
            positions.append(Pos(last.line, last.col + 1))
        self.chars, self.positions, self.backslash = [], [], None
        return Line(text, tuple(positions), self.file) if text else None


def logical_lines(text: str, *, file: str = "<input>") -> list[Line]:
    """The instructions of ``text``, one :class:`Line` each, in order."""
    _check_nul(text, file)
    text = text.removeprefix("\ufeff")  # a UTF-8 BOM some editors write
    out: list[Line] = []
    joiner = _Joiner(file)
    for lineno, raw in enumerate(text.split("\n"), 1):
        physical = raw.removesuffix("\r")
        stripped = physical.lstrip(BLANKS)
        # A comment is a whole line; inside a continued instruction it is
        # dropped and the instruction goes on (as in a Dockerfile).
        if stripped.startswith("#"):
            continue
        if not stripped:
            if joiner.backslash is not None:
                raise fail(
                    file,
                    joiner.backslash,
                    "the line ends with '\\' but the next line is blank",
                    hint="remove the trailing '\\', or the blank line",
                )
            continue
        cont = _CONTINUATION.search(physical)
        if cont is not None:
            joiner.add(lineno, physical[: cont.start()])
            joiner.backslash = Pos(lineno, cont.start() + 1)
            continue
        line = joiner.finish(lineno, physical)
        if line is not None:
            out.append(line)
    if joiner.backslash is not None:
        raise fail(
            file,
            joiner.backslash,
            "the file ends with '\\': the line continues into nothing",
            hint="remove the trailing '\\'",
        )
    return out
