"""XML documents from the services, parsed by ElementTree's C parser after expat vetted the prolog.

Entity declarations (billion laughs, external entities) can only stand in a document type
declaration, and that can only stand in the prolog, before the root element. So expat
reads the prolog first, with handlers that refuse what must be refused and that stop it
at the root's start tag; the whole document is then parsed at C speed by
``xml.etree.ElementTree``, on the same expat. defusedxml's parser does the same checks with
a handler in Python for every element, which made a Marketplace catalogue twice as long to
read.
"""

from __future__ import annotations

from typing import Optional
from xml.etree import ElementTree
from xml.parsers import expat

from defusedxml.common import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

__all__ = ["fromstring", "refuse_dtd"]


def refuse_dtd(name: str, system_id: Optional[str] = None, public_id: Optional[str] = None, *_: object) -> None:
    """An expat handler that refuses a document type declaration as expat meets it."""
    raise DTDForbidden(name, system_id, public_id)


def _refuse_entity(name: str, is_parameter_entity: bool, value: Optional[str], base: Optional[str],
                   system_id: Optional[str], public_id: Optional[str], notation_name: Optional[str]) -> None:
    raise EntitiesForbidden(name, value, base, system_id, public_id, notation_name)


def _refuse_unparsed_entity(name: str, base: Optional[str], system_id: Optional[str], public_id: Optional[str],
                            notation_name: Optional[str]) -> None:
    raise EntitiesForbidden(name, None, base, system_id, public_id, notation_name)


def _refuse_external(context: str, base: Optional[str], system_id: Optional[str],
                     public_id: Optional[str]) -> int:
    raise ExternalReferenceForbidden(context, base, system_id, public_id)


class _RootReached(Exception):
    pass


def _root_reached(*_: object) -> None:
    raise _RootReached


def fromstring(data: bytes, forbid_dtd: bool = False) -> ElementTree.Element:
    """The root element of ``data``, refusing entity declarations and external references
    (and any DTD when ``forbid_dtd``) with defusedxml's exceptions.

    Raises ``xml.etree.ElementTree.ParseError`` or ``xml.parsers.expat.ExpatError`` for a
    document that is not well-formed.
    """
    prolog = expat.ParserCreate()
    prolog.EntityDeclHandler = _refuse_entity
    prolog.UnparsedEntityDeclHandler = _refuse_unparsed_entity
    prolog.ExternalEntityRefHandler = _refuse_external
    if forbid_dtd:
        prolog.StartDoctypeDeclHandler = refuse_dtd
    prolog.StartElementHandler = _root_reached
    try:
        prolog.Parse(data, True)
    except _RootReached:
        pass
    return ElementTree.fromstring(data)
