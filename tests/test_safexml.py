"""services.safexml: expat vets the prolog, ElementTree's C parser reads the document.

The Marketplace's answers go through it (over real sockets in test_hostile.py); here each
refusal is checked on its own, and the trees are compared with defusedxml's, which the
Marketplace used before.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from defusedxml import ElementTree as DefusedElementTree
from defusedxml.common import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

from stratuslab_lc_plugin.services import safexml

# The shared real samples, beside the checkout (as test_emulator_marketplace.py finds them).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "marketplace"  # see its README


@pytest.mark.parametrize("document, refusal", [
    (b'<!DOCTYPE m [<!ENTITY a "x">]><m>&a;</m>', EntitiesForbidden),
    (b'<!DOCTYPE m [<!ENTITY % p "<!ENTITY a \'x\'>"> %p;]><m>&a;</m>', EntitiesForbidden),
    (b'<!DOCTYPE m [<!ENTITY e SYSTEM "file:///etc/passwd">]><m>&e;</m>', EntitiesForbidden),
    (b'<!DOCTYPE m [<!NOTATION n SYSTEM "x"><!ENTITY u SYSTEM "y" NDATA n>]><m/>', EntitiesForbidden),
    (b'<?xml version="1.0"?><!-- first --><?pi?><!DOCTYPE m [<!ENTITY a "x">]><m/>', EntitiesForbidden),
])
def test_entity_declarations_are_refused_before_anything_is_expanded(document, refusal):
    with pytest.raises(refusal):
        safexml.fromstring(document)


def test_a_dtd_without_entities_is_read_unless_forbidden():
    document = b'<!DOCTYPE m [<!ELEMENT m ANY>]><m>text</m>'
    assert safexml.fromstring(document).text == "text"
    with pytest.raises(DTDForbidden):
        safexml.fromstring(document, forbid_dtd=True)


def test_external_references_are_refused():
    with pytest.raises((ExternalReferenceForbidden, EntitiesForbidden)):
        safexml.fromstring(b'<!DOCTYPE m SYSTEM "http://127.0.0.1:9/x.dtd" [<!ENTITY e SYSTEM "y">]><m>&e;</m>')


def test_markup_lookalikes_after_the_root_are_only_text():
    root = safexml.fromstring(b"<m><![CDATA[<!DOCTYPE x [<!ENTITY a 'b'>]>]]></m>")
    assert root.text == "<!DOCTYPE x [<!ENTITY a 'b'>]>"


def test_undeclared_entities_and_garbage_are_parse_errors():
    with pytest.raises(Exception) as caught:
        safexml.fromstring(b"<m>&nope;</m>")
    assert "undefined entity" in str(caught.value)
    for garbage in (b"", b"not xml", b"<m>"):
        with pytest.raises(Exception):
            safexml.fromstring(garbage)


def _shape(element):
    return (element.tag, sorted(element.attrib.items()), (element.text or "").strip(),
            [_shape(child) for child in element])


@pytest.mark.parametrize("name", ["valid-single-entry.xml", "valid-multiple-entries.xml", "valid.xml",
                                  "valid-two-locations.xml", "valid-indate-deprecated-signature.xml"])
def test_trees_are_those_defusedxml_gives(name):
    data = (FIXTURES / name).read_bytes()
    assert _shape(safexml.fromstring(data)) == _shape(DefusedElementTree.fromstring(data))
