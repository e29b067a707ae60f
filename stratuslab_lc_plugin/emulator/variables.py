"""ONE 3.2's template variables (``$NAME``, ``$NIC[IP]``...), as allocate expands them.

``VirtualMachine::parse_context`` joins the CONTEXT vector into one string (``KEY=VALUE``
pairs in name order, separated by ``" @^_^@ "``), runs it through the variable lexer and
grammar (``vm_var_parser.l``, ``vm_var_syntax.y``), and splits the result back into a
vector; ``parse_requirements`` does the same to ``REQUIREMENTS``. This module mirrors that
lexer and grammar rule by rule:

- text outside variables is copied; ``$`` starts a variable: ``$VAR``, ``$VAR[ATTR]`` or
  ``$VAR[ATTR, NAME=VALUE]`` (``VALUE`` quoted, or letters and digits); names are
  upper-cased, values are not;
- the character right after a variable ends it and is copied (a ``$`` there starts the
  next variable at once); a ``$`` that starts no variable, even at the end of the text, is
  a syntax error, and then the whole allocation fails without a reason;
- ``$UID`` is the owner's id, ``$TEMPLATE`` the base64 of the VM's document so far,
  ``$NETWORK[ATTR, NETWORK|NETWORK_ID="..."]`` an attribute of the template of a network of
  one of the VM's NICs, ``$USER[ATTR]`` one of the owner's template, ``$IMAGE[...]`` one of
  an image of the repository; any other name reads the VM's template (the first attribute
  of that name; with ``[ATTR, NAME=VALUE]`` the first vector whose ``NAME`` is ``VALUE``).

What the lookups find is the caller's business (:class:`Resolver`).
"""

from __future__ import annotations

import re
from typing import Iterator, List, Optional, Protocol, Tuple

__all__ = ["VariableError", "Resolver", "expand", "marshall", "unmarshall", "SEPARATOR"]

SEPARATOR = " @^_^@ "  # what parse_context joins and splits the CONTEXT vector with


class VariableError(ValueError):
    """The text has a ``$`` the grammar rejects (ONE logs it and gives no reason)."""


class Resolver(Protocol):
    def single(self, name: str) -> str:
        """``$NAME``."""

    def vector(self, name: str, attribute: str, key: str, value: str) -> str:
        """``$NAME[ATTRIBUTE]`` (``key`` empty) or ``$NAME[ATTRIBUTE, KEY="VALUE"]``."""


# vm_var_parser.l, state by state; in each, the longest match wins, then the first rule.
_VAR_RULES = [
    ("EQUAL", re.compile(r"[ \t]*=[ \t]*")),
    ("COMMA", re.compile(r"[ \t]*,[ \t]*")),
    ("OBRACKET", re.compile(r"\[[ \t]*")),
    ("CBRACKET", re.compile(r"[ \t]*\]")),
    ("VARIABLE", re.compile(r"[A-Za-z0-9_]+")),
    ("EOA_DOLLAR", re.compile(r"\$")),
    ("EOA", re.compile(r"[^\n]")),
]
_VALUE_RULES = [
    ("STRING", re.compile(r'"[^"]*"')),
    ("STRING", re.compile(r"[A-Za-z0-9]+")),
]
_RSTRING = re.compile(r"[^$]+")

Token = Tuple[str, str]


def _tokens(text: str) -> Iterator[Token]:
    pos, state, end = 0, "INITIAL", len(text)
    while True:
        if pos >= end:
            if state == "VAR":
                yield "EOA", ""  # <VAR><<EOF>>
            yield "$end", ""
            return
        if state == "INITIAL":
            if text[pos] == "$":
                pos, state = pos + 1, "VAR"
                continue
            match = _RSTRING.match(text, pos)
            assert match is not None  # text[pos] is not "$", so [^$]+ matches
            pos = match.end()
            yield "RSTRING", match.group()
            continue
        rules = _VAR_RULES if state == "VAR" else _VALUE_RULES
        best: Optional[Tuple[str, re.Match]] = None
        for kind, rule in rules:
            match = rule.match(text, pos)
            if match and (best is None or match.end() > best[1].end()):
                best = (kind, match)
        if best is None:  # flex's default rule: the character is echoed, i.e. dropped
            pos += 1
            continue
        kind, match = best
        pos = match.end()
        if state == "VALUE":
            state = "VAR"
            value = match.group()
            yield "STRING", value[1:-1] if value.startswith('"') else value
        elif kind == "EQUAL":
            state = "VALUE"
            yield kind, ""
        elif kind == "EOA_DOLLAR":
            yield "EOA", ""  # ends this variable; the next one starts at once
        elif kind == "EOA":
            state = "INITIAL"
            yield "EOA", match.group()
        else:
            yield kind, match.group()


def expand(text: str, resolver: Resolver) -> str:
    """The text with its variables replaced; VariableError on a syntax error."""
    tokens = list(_tokens(text))
    out: List[str] = []
    index = 0

    def take(*kinds: str) -> str:
        nonlocal index
        kind, value = tokens[index]
        if kind not in kinds:
            raise VariableError("syntax error, unexpected %s" % kind)
        index += 1
        return value

    while True:
        kind, value = tokens[index]
        if kind == "$end" and out:
            return "".join(out)
        if kind == "RSTRING":
            out.append(value)
            index += 1
            continue
        name = take("VARIABLE").upper()  # $end in an empty text is an error too
        if tokens[index][0] == "EOA":
            out.append(resolver.single(name) + take("EOA"))
            continue
        take("OBRACKET")
        attribute = take("VARIABLE").upper()
        key = wanted = ""
        if tokens[index][0] == "COMMA":
            take("COMMA")
            key = take("VARIABLE").upper()
            take("EQUAL")
            wanted = take("STRING")
        take("CBRACKET")
        out.append(resolver.vector(name, attribute, key, wanted) + take("EOA"))


def marshall(vector: List[Tuple[str, str]]) -> str:
    """``VectorAttribute::marshall``: ``KEY=VALUE`` in name order (a ``std::map``)."""
    return SEPARATOR.join("%s=%s" % item for item in sorted(vector))


def unmarshall(text: str) -> List[Tuple[str, str]]:
    """``VectorAttribute::unmarshall``: pieces without ``=`` are dropped, the first of
    repeated names is kept."""
    result: dict = {}
    for piece in text.split(SEPARATOR):
        name, sep, value = piece.partition("=")
        if sep:
            result.setdefault(name, value)
    return list(result.items())
