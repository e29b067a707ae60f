"""The StratusLab Marketplace: image metadata as RDF/XML (spec §3).

The list (``GET /metadata``) is a ``<metadata>`` element wrapping ``rdf:RDF`` entries;
one image is ``GET /metadata/<id>``. Both are parsed by :mod:`~stratuslab_lc_plugin.services.safexml`,
so entity declarations and external entities are refused, into plain :class:`ImageRecord`
objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from xml.etree import ElementTree
from xml.parsers import expat

from defusedxml.common import DefusedXmlException

from stratuslab_lc_plugin.errors import NotFoundError, ServiceError
from stratuslab_lc_plugin.services import safexml
from stratuslab_lc_plugin.services.connection import StratusLabConnection

__all__ = ["MarketplaceClient", "ImageRecord", "newest", "parse_metadata", "IMAGE_ID"]

#: Marketplace image identifier: base-64 SHA-1, 27 characters (spec §3.5).
IMAGE_ID = re.compile(r"[A-Za-z0-9_-]{27}")

RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
DC = "{http://purl.org/dc/terms/}"
SLTERMS = "{http://mp.stratuslab.eu/slterms#}"
SLREQ = "{http://mp.stratuslab.eu/slreq#}"


@dataclass
class ImageRecord:
    """One Marketplace entry, as the driver needs it."""

    id: str
    title: str
    description: str
    os: str
    os_version: str
    os_arch: str
    version: str
    format: str
    disks_bus: str
    kind: str
    endorser_email: Optional[str]
    created: Optional[str]
    valid: Optional[str]
    deprecated: Optional[str]
    bytes: Optional[int]
    compression: str
    locations: list[str] = field(default_factory=list)
    inbound_ports: list[int] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.title or self.description


class MarketplaceClient:
    """The Marketplace reads the driver makes, on one location's Marketplace connection."""

    def __init__(self, connection: StratusLabConnection) -> None:
        self.connection = connection

    def list_images(self) -> list[ImageRecord]:
        """Every valid entry (the server's default ``status=valid``), newest per endorser."""
        return self._get("list_images", "metadata")

    def get_image(self, image_id: str) -> ImageRecord:
        if not IMAGE_ID.fullmatch(image_id):
            raise ValueError("%r is not a Marketplace image id (27 characters A-Z a-z 0-9 - _)" % (image_id,))
        records = self._get("get_image", "metadata/" + image_id)
        matching = [r for r in records if r.id == image_id]
        if not matching:
            raise NotFoundError(
                "%s: image %s is not in the Marketplace at %s"
                % (self.connection.location_id, image_id, self.connection.service_url),
                location=self.connection.location_id, operation="get_image", http_code=200,
                driver=self.connection.driver,
            )
        return newest(matching)

    def _get(self, operation: str, action: str) -> list[ImageRecord]:
        location = self.connection.location_id
        response = self.connection.send(
            operation, action, headers={"Accept": "application/xml"}, idempotent=True
        )
        if response.status == 404:
            if action == "metadata":
                return []  # an empty catalogue
            raise NotFoundError(
                "%s: image %s is not in the Marketplace at %s (or not valid any more)"
                % (location, action.rsplit("/", 1)[-1], self.connection.service_url),
                location=location, operation=operation, code=404, http_code=404,
                remote_message=_error_text(response.raw_body), driver=self.connection.driver,
            )
        if response.status != 200:
            remote = _error_text(response.raw_body)
            raise ServiceError(
                "%s: Marketplace answered %s with HTTP %d%s"
                % (location, operation, response.status, ": " + remote if remote else ""),
                location=location, operation=operation, code=response.status, remote_message=remote,
                http_code=response.status, driver=self.connection.driver,
            )
        try:
            return parse_metadata(response.raw_body)
        except (ElementTree.ParseError, expat.ExpatError, DefusedXmlException, ValueError) as exc:
            raise self.connection.protocol_error(
                operation, "with a document that is not valid metadata: %s" % exc, response.status
            ) from None


def newest(records: list[ImageRecord]) -> ImageRecord:
    """Of several endorsements of one image (by several endorsers), the newest."""
    return max(records, key=lambda r: r.created or "")


def parse_metadata(body: bytes) -> list[ImageRecord]:
    """Parse a ``<metadata>`` list or a bare ``rdf:RDF`` entry."""
    root = safexml.fromstring(body)
    documents = [root] if root.tag == RDF + "RDF" else root.findall(RDF + "RDF")
    records = []
    for document in documents:
        description = document.find(RDF + "Description")
        if description is not None:
            records.append(_record(description))
    return records


def _record(d) -> ImageRecord:
    def text(tag: str) -> str:
        return (d.findtext(tag) or "").strip()

    identifier = text(DC + "identifier")
    if not identifier:
        raise ValueError("an entry has no dcterms:identifier")
    endorsement = d.find(SLREQ + "endorsement")
    email = created = None
    if endorsement is not None:
        email = (endorsement.findtext(".//" + SLREQ + "email") or "").strip() or None
        created = (endorsement.findtext(DC + "created") or "").strip() or None
    checksums = {}
    for checksum in d.findall(SLREQ + "checksum"):
        algorithm = (checksum.findtext(SLREQ + "algorithm") or "").strip()
        value = (checksum.findtext(SLREQ + "value") or "").strip()
        if algorithm and value:
            checksums[algorithm] = value
    deprecated = d.find(SLTERMS + "deprecated")
    return ImageRecord(
        id=identifier,
        title=text(DC + "title"),
        description=text(DC + "description"),
        os=text(SLTERMS + "os"),
        os_version=text(SLTERMS + "os-version"),
        os_arch=text(SLTERMS + "os-arch"),
        version=text(SLTERMS + "version"),
        format=text(DC + "format"),
        disks_bus=text(SLTERMS + "disks-bus") or "ide",
        kind=text(SLTERMS + "kind"),
        endorser_email=email,
        created=created or text(DC + "created") or None,
        valid=text(DC + "valid") or None,
        deprecated=(deprecated.text or "").strip() if deprecated is not None else None,
        bytes=_int(text(SLREQ + "bytes")),
        compression=text(DC + "compression"),
        locations=[(e.text or "").strip() for e in d.findall(SLTERMS + "location") if (e.text or "").strip()],
        inbound_ports=[p for p in (_int((e.text or "").strip()) for e in d.findall(SLTERMS + "inbound-port")) if p],
        checksums=checksums,
    )


def _int(value: str) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _error_text(body: bytes) -> str:
    """The message of a Marketplace ``<error>`` document, or a short prefix of the body."""
    try:
        root = safexml.fromstring(body)
        if root.tag == "error":
            return (root.text or "").strip()
    except Exception:  # noqa: BLE001 - not XML: fall back to the text
        pass
    return body[:200].decode("utf-8", "replace").strip()
