"""The local cloud's Marketplace: the read side of StratusLab's image metadata service.

Mounted by the front at ``/marketplace`` (no authentication); it serves the entries of a
:class:`~.catalogue.Catalogue` the way the 14.06 Marketplace does (spec §3.2, §3.3):

- ``GET /metadata``, ``/metadata/{a}``, ``/metadata/{a}/{b}``: a ``<metadata>`` list.
  Each path argument, and each of the query parameters ``identifier``, ``email``,
  ``created``, is classified *by its value* (as the server does): an e-mail filters on
  the endorser, an ISO ``YYYY-MM-DDTHH:MM:SSZ`` date on the endorsement time, anything
  else on the image identifier. Only the newest entry per (identifier, endorser) is
  listed, unless a date is part of the filter. ``status`` (default ``valid``) and
  ``location`` (default ``all``) narrow the list. A filter that matches nothing is a
  404 "no metadata matching query found".
- ``GET /metadata/{id}/{email}/{created}``: the stored document itself
  (``application/rdf+xml``), whatever its status; 404 "metadata entry not found.".
- ``GET /metadata/{email}?tag={tag}``: the endorser's newest entry carrying that tag
  (``dcterms:alternative``), as a bare document.

Content negotiation: XML unless ``application/json`` is preferred by the ``Accept``
header; no ``Accept`` header means XML (what the 14.06 driver relies on). JSON lists
are the DataTables object of the web page; errors are ``<error>`` XML or
``{"<code>" : "<message>"}`` JSON.

Choices where the spec is unconfirmed (§3.2, §7):

- An unfiltered list of an empty catalogue (or a ``status``/``location`` query with no
  match) is ``200`` with an empty ``<metadata></metadata>``: the server only raises its
  404 when an identifier/e-mail/date filter was given.
- ``text/html`` and other media types get XML (the emulator has no web pages).
- ``/metadata/{id}/{email}/{created}`` is always RDF/XML (the server can also give
  RDF/JSON, which no StratusLab client asks for).
- In JSON rows a missing value is the string ``"null"`` (the server's rendering of an
  unbound SPARQL variable); ``sEcho`` echoes the request's value (``0`` if absent) and
  the record counts are strings.
- Uploads (``POST /metadata``), ``/endorsers``, ``/query``... are not emulated (405/404).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote
from xml.sax.saxutils import escape

from .catalogue import Catalogue, CatalogueEntry, format_time
from .web import RESTLET_DESCRIPTIONS, Request, Response

__all__ = ["MarketplaceHandler", "XML_HEADER"]

# What the server writes before every document (and strips from each listed entry).
XML_HEADER = '<?xml version="1.0" encoding="UTF-8" standalone="no"?>'

NO_MATCH = "no metadata matching query found"
ENTRY_NOT_FOUND = "metadata entry not found."

# PatternUtils of the Marketplace: how path arguments and query values are classified.
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")

_XML_TYPE = "application/xml; charset=UTF-8"
_RDF_TYPE = "application/rdf+xml; charset=UTF-8"
_JSON_TYPE = "application/json; charset=UTF-8"


class _Failure(Exception):
    """An HTTP error answer, raised deep in the handler and shaped in one place."""

    def __init__(self, status: int, message: str, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    # The front gives a case-insensitive mapping; direct callers may pass a plain dict.
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _prefers_json(headers: Mapping[str, str]) -> bool:
    """Negotiate between the two representations we have, XML winning ties."""
    accept = _header(headers, "Accept")
    if not accept:
        return False
    best = {"xml": 0.0, "json": 0.0}
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        quality = 1.0
        for param in parts[1:]:
            if param.lower().startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        for kind, types in (("xml", ("application/xml", "text/xml", "application/*",
                                      "text/*", "*/*")),
                            ("json", ("application/json", "application/*", "*/*"))):
            if media in types:
                best[kind] = max(best[kind], quality)
    return best["json"] > best["xml"]


def _classify(value: str) -> Optional[str]:
    if not value or value == "null":
        return None
    if _EMAIL_RE.fullmatch(value):
        return "email"
    if _DATE_RE.fullmatch(value):
        return "created"
    return "identifier"


def _matches_location(entry: CatalogueEntry, access: str) -> bool:
    if access == "pdisk":
        return any(loc.startswith("pdisk") for loc in entry.locations)
    if access == "web":
        return not entry.locations or any(
            re.match(r"(https?|ftp)://", loc) for loc in entry.locations)
    return True


class MarketplaceHandler:
    """Answers ``/metadata...`` requests from a catalogue (configuration, not state:
    nothing is stored)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def handle(self, request: Request) -> Response:
        as_json = _prefers_json(request.headers)
        try:
            if request.method not in ("GET", "HEAD"):
                raise _Failure(405, RESTLET_DESCRIPTIONS[405], {"Allow": "GET, HEAD"})
            response = self._get(request, as_json)
        except _Failure as failure:
            response = self._error(failure, as_json)
        if request.method == "HEAD":
            response.body = b""
        return response

    # --- routing -------------------------------------------------------------------

    def _get(self, request: Request, as_json: bool) -> Response:
        path = request.path[:-1] if request.path.endswith("/") else request.path
        segments = path.split("/")
        # "/metadata[/a[/b[/c]]]" with an optional trailing slash, nothing else.
        if segments[:2] != ["", "metadata"] or "" in segments[2:]:
            raise _Failure(404, RESTLET_DESCRIPTIONS[404])
        segments = segments[1:]
        args = [unquote(s) for s in segments[1:]]
        query = {name: values[-1] for name, values in request.query.items() if values}
        if len(args) == 3:
            entry = self.catalogue.find(*args)
            return self._document(entry)
        if len(args) > 3:
            raise _Failure(404, RESTLET_DESCRIPTIONS[404])
        if len(args) == 1 and "tag" in query and _classify(args[0]) == "email":
            return self._document(self._tagged(args[0], query["tag"]))
        entries, total = self._select(args, query)
        if as_json:
            return self._json_list(entries, total, query.get("sEcho", "0"))
        return self._xml_list(entries)

    # --- selection (MDataResource + SparqlBuilder) ------------------------------------

    def _select(self, args: List[str], query: Mapping[str, str]
                ) -> Tuple[List[CatalogueEntry], int]:
        """The listed entries, and the total before identifier/e-mail/date/location filters."""
        values = list(args) + [query[k] for k in ("identifier", "email", "created") if k in query]
        has_filter = bool(args) or any(k in query for k in ("identifier", "email", "created"))
        classified = [(_classify(value), value) for value in values]
        filters = [(kind, value) for kind, value in classified if kind]
        by_date = any(kind == "created" for kind, _ in filters)
        now = datetime.now(timezone.utc)
        status = query.get("status", "valid")
        access = query.get("location", "all")

        def status_ok(entry: CatalogueEntry) -> bool:
            return status not in ("valid", "expired", "deprecated") or entry.status(now) == status

        latest = self.catalogue.latest()
        candidates = self.catalogue.entries() if by_date else latest
        selected = [e for e in candidates
                    if all(self._field(e, kind) == value for kind, value in filters)
                    and status_ok(e) and _matches_location(e, access)]
        if not selected and has_filter:
            raise _Failure(404, NO_MATCH)
        return selected, sum(1 for e in latest if status_ok(e))

    @staticmethod
    def _field(entry: CatalogueEntry, kind: str) -> str:
        if kind == "email":
            return entry.endorser_email
        if kind == "created":
            return format_time(entry.created)
        return entry.image_id

    def _tagged(self, email: str, tag: str) -> Optional[CatalogueEntry]:
        return next((e for e in self.catalogue.entries()
                     if e.endorser_email == email and e.tag == tag), None)

    # --- representations ---------------------------------------------------------------

    @staticmethod
    def _document(entry: Optional[CatalogueEntry]) -> Response:
        if entry is None:
            raise _Failure(404, ENTRY_NOT_FOUND)
        return Response(200, (XML_HEADER + entry.to_rdf_xml()).encode("utf-8"), _RDF_TYPE)

    @staticmethod
    def _xml_list(entries: List[CatalogueEntry]) -> Response:
        body = XML_HEADER + "<metadata>" + "".join(e.to_rdf_xml() for e in entries) + "</metadata>"
        return Response(200, body.encode("utf-8"), _XML_TYPE)

    @staticmethod
    def _json_list(entries: List[CatalogueEntry], total: int, echo: str) -> Response:
        def row(e: CatalogueEntry) -> List[str]:
            return ["", e.os or "null", e.os_version or "null", e.arch or "null",
                    e.endorser_email, e.kind or "null", format_time(e.created), e.image_id,
                    e.locations[0] if e.locations else "null", e.description, e.title or "null"]

        document = {
            "sEcho": echo if echo.isdigit() else "0",
            "iTotalRecords": str(total),
            "iTotalDisplayRecords": str(len(entries)),
            "rMsg": "",
            "aaData": [row(e) for e in entries],
        }
        return Response(200, json.dumps(document).encode("utf-8"), _JSON_TYPE)

    @staticmethod
    def _error(failure: _Failure, as_json: bool) -> Response:
        if as_json:
            body = '{"%d" : %s}' % (failure.status, json.dumps(failure.message))
            return Response(failure.status, body.encode("utf-8"), _JSON_TYPE, failure.headers)
        body = XML_HEADER + "<error>" + escape(failure.message) + "</error>"
        return Response(failure.status, body.encode("utf-8"), _XML_TYPE, failure.headers)
