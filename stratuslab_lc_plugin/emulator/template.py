"""The OpenNebula 3.2 template language, as ``one.vm.allocate`` parses it.

A real site rejects or mangles some templates in ways a driver author must see locally,
so this mirrors ONE 3.2's flex lexer (``template_parser.l``) and bison grammar
(``template_syntax.y``) rule by rule rather than "parsing something similar":

- an empty template, or one of blanks and comments only, is valid (no attribute);
- attribute names (``[A-Za-z0-9_]+``) are upper-cased, values keep their case; a
  top-level name not starting with a letter, or starting with ``XML`` as written, gets a
  ``ONE_`` prefix (``Attribute.h``: names must be XML element names);
- a value is a double-quoted string of at least one character (newlines and ``\\"``
  allowed) or a bare token without blanks, ``=``, ``#``, ``,``, ``[``, ``]``; the lexer
  takes the longest match, so ``""`` is the two-character bare value ``""``;
- vectors ``NAME = [ A = x, B = y ]``; ``,`` and ``]`` may be surrounded by newlines;
  a repeated sub-attribute keeps its first value (ONE stores them in a ``std::map``);
- ``#`` comments up to the end of a line; characters no rule matches are skipped
  (flex's default rule), which is what makes some odd templates parse anyway;
- errors read like bison's: ``syntax error, unexpected X, expecting Y at line L,
  columns A:B`` (columns count bytes from the start of the text, like ONE's lexer). Bison
  detects an error after its default reductions, so where a template could end (at the
  start, after a whole attribute) the only token expected is ``$end``.

ONE 3.2 has no XML templates (they came with 3.4): text starting with ``<`` goes through
the same rules and fails like any other syntax error.
"""

from __future__ import annotations

import re
from typing import List, Tuple, Union

Vector = List[Tuple[str, str]]
Attribute = Tuple[str, Union[str, Vector]]

__all__ = ["TemplateError", "parse", "Attribute", "Vector"]


class TemplateError(ValueError):
    """A template ONE would refuse; ``str(err)`` is ONE's detail text (after ``Parse error: ``)."""


# Lexer rules, in the order of template_parser.l (order breaks ties between equally
# long matches, as in flex).
_INITIAL = [
    (None, re.compile(rb"[ \t]*#[^\n]*\n")),
    (None, re.compile(rb"[ \t\n]+")),
    ("VARIABLE", re.compile(rb"[A-Za-z0-9_]+")),
    ("EQUAL", re.compile(rb"[ \t]*=[ \t]*")),
    ("EQUAL_EMPTY", re.compile(rb"[ \t]*=[ \t]*\n")),
    ("COMMA", re.compile(rb"[ \t\n]*,[ \t\n]*")),
    ("CBRACKET", re.compile(rb"[ \t\n]*\][ \t\n]*")),
]
_VALUE = [
    ("OBRACKET", re.compile(rb"[ \t]*\[[ \t\n]*")),
    ("QSTRING", re.compile(rb'"(?:\\"|[^"])+"')),
    ("STRING", re.compile(rb"[^=# \t\n,\[\]]+")),
]

# Bison symbol numbers decide the order of the "expecting" list.
_ORDER = ["$end", "EQUAL", "COMMA", "OBRACKET", "CBRACKET", "EQUAL_EMPTY", "STRING", "VARIABLE"]


def _tokens(data: bytes):
    """Yield (kind, text, line, first_col, last_col) like ONE's lexer, ending with $end."""
    # Like bison's yylloc, the location persists between tokens: $end reports the last
    # matched text (skipped blanks included), and columns never reset on newlines.
    pos, line, first, col, value_state = 0, 1, 1, 1, False
    end = len(data)
    while pos < end:
        best_kind, best_len = None, 0
        for kind, rx in (_VALUE if value_state else _INITIAL):
            m = rx.match(data, pos)
            if m and m.end() - pos > best_len:
                best_kind, best_len = kind, m.end() - pos
        if best_len == 0:  # flex default rule: echo (skip) one character
            best_kind, best_len = None, 1
        text = data[pos:pos + best_len]
        pos += best_len
        line += text.count(b"\n")
        first, col = col, col + best_len
        if best_kind is None:
            continue
        if best_kind == "EQUAL":
            value_state = True
        elif best_kind in ("OBRACKET", "QSTRING", "STRING"):
            value_state = False
        if best_kind == "QSTRING":
            best_kind, text = "STRING", text[1:-1]
        yield best_kind, text, line, first, col
    yield "$end", b"", line, first, col


def _value(raw: bytes) -> str:
    return raw.replace(b'\\"', b'"').decode("utf-8", "surrogateescape")


def _name(raw: bytes) -> str:
    return raw.decode("ascii").upper()


def _attribute_name(raw: bytes) -> str:
    """``Attribute::Attribute``: upper case, and ``ONE_`` before a name that would not be
    an XML element name (the test is on the name as written)."""
    written = raw.decode("ascii")
    name = written.upper()
    if not written[:1].isalpha() or written.startswith("XML"):
        name = "ONE_" + name
    return name


def _error(kind: str, expected: List[str], line: int, first: int, last: int) -> TemplateError:
    msg = "syntax error, unexpected " + kind
    if expected:
        msg += ", expecting " + " or ".join(sorted(expected, key=_ORDER.index))
    return TemplateError("%s at line %d, columns %d:%d" % (msg, line, first, last))


def parse(text: str) -> List[Attribute]:
    """Parse a template into ``[(NAME, value)]`` in submission order.

    A vector value is a list of ``(SUB, value)`` pairs in submission order, without
    repeated names (the first occurrence wins). Raises :class:`TemplateError`.
    """
    data = text.encode("utf-8", "surrogateescape")
    attrs: List[Attribute] = []
    state, name, sub = "template", "", ""
    vector: Vector = []
    for kind, raw, line, first, last in _tokens(data):
        if state == "template":
            if kind == "VARIABLE":
                name, state = _attribute_name(raw), "name"
                continue
            if kind == "$end":
                return attrs
            expected = ["$end"]  # after bison's default reduction to template_file
        elif state == "name":
            if kind == "EQUAL":
                state = "equal"
                continue
            if kind == "EQUAL_EMPTY":
                attrs.append((name, ""))
                state = "template"
                continue
            expected = ["EQUAL", "EQUAL_EMPTY"]
        elif state == "equal":
            if kind == "STRING":
                attrs.append((name, _value(raw)))
                state = "template"
                continue
            if kind == "OBRACKET":
                vector, state = [], "sub"
                continue
            expected = ["OBRACKET", "STRING"]
        elif state == "sub":
            if kind == "VARIABLE":
                sub, state = _name(raw), "sub_name"
                continue
            expected = ["VARIABLE"]
        elif state == "sub_name":
            if kind == "EQUAL":
                state = "sub_equal"
                continue
            expected = ["EQUAL"]
        elif state == "sub_equal":
            if kind == "STRING":
                if all(existing != sub for existing, _ in vector):
                    vector.append((sub, _value(raw)))
                state = "array"
                continue
            expected = ["STRING"]
        else:  # "array": after at least one SUB = value
            if kind == "COMMA":
                state = "sub"
                continue
            if kind == "CBRACKET":
                attrs.append((name, vector))
                state = "template"
                continue
            expected = ["COMMA", "CBRACKET"]
        raise _error(kind, expected, line, first, last)
    raise AssertionError("unreachable: the token stream always ends with $end")
