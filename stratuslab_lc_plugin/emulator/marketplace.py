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

- ``GET /tag/{email}/{tag}``: the same as ``/metadata/{email}?tag={tag}``.
- Any path no route of the real Marketplace matches is its home page, a 200 (a page that
  sends browsers to ``metadata``); ``//`` in a path is ``/`` first, as its filter does.

Lists: XML unless ``application/json`` is preferred by the ``Accept`` header; no
``Accept`` header means XML (the application's default type, what the 14.06 driver relies
on). A list that matches nothing is a 404 "no metadata matching query found", also for an
empty catalogue or a ``status`` with no entry: the server's query then yields one row of
nulls, which it refuses (``MDataResourceBase.getMetadata``). JSON lists are the DataTables
object of the web page: ``sEcho`` an integer (an unparsable one is a 500), the counts
numbers, ``rMsg`` the server's constant "no metadata matching query found", and a list
that matches nothing is a 200 with empty ``aaData`` and counts of 0.

Errors take the form of the *first* entry of ``Accept`` (``MarketPlaceStatusService``):
``<error>`` XML for ``text/xml``, ``application/xml`` and ``application/rdf+xml``,
``{"<code>" : "<message>"}`` for ``application/json``, the HTML status page otherwise,
also without an ``Accept`` header (Restlet then reads ``*/*``).

Choices where the real server differs or is unknown:

- ``text/html`` lists get XML (the emulator has no web pages, the home page aside);
- ``/metadata/{id}/{email}/{created}`` is always RDF/XML (the server can also give
  RDF/JSON, which no StratusLab client asks for);
- in JSON rows a missing value is the string ``"null"`` (the server's rendering of an
  unbound SPARQL variable);
- uploads (``POST /metadata``), ``/endorsers``, ``/query``, ``/upload``, ``/sync``,
  ``/action/``, and the style sheets and scripts are not emulated (405, 404).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote
from xml.sax.saxutils import escape

from .catalogue import Catalogue, CatalogueEntry, format_time
from .web import RESTLET_DESCRIPTIONS, Headers, Request, Response, reason

__all__ = ["MarketplaceHandler", "XML_HEADER"]

# What the server writes before every document (and strips from each listed entry).
XML_HEADER = '<?xml version="1.0" encoding="UTF-8" standalone="no"?>'

NO_MATCH = "no metadata matching query found"
ENTRY_NOT_FOUND = "metadata entry not found."

# PatternUtils of the Marketplace: how path arguments and query values are classified.
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")

_XML_TYPE = "application/xml; charset=UTF-8"
_HTML_TYPE = "text/html; charset=UTF-8"
_XML_ERROR_TYPES = ("text/xml", "application/xml", "application/rdf+xml")
_JAVA_INT = re.compile(r"[+-]?[0-9]+")
_HOME = ('<html>\n  <head> \n    <base href="%s"> \n'
         '    <meta http-equiv="REFRESH" content="0;url=metadata">\n  </head>\n</html>\n')
_STATUS_PAGE = ('<html>\n<head>\n  <meta http-equiv="CONTENT-TYPE" CONTENT="text/html; '
                'charset=utf-8">\n  <title>%(title)s</title>\n</head>\n<body>\n<div class="Page">'
                '\n<div class="breadcrumbs">\n    <a href="metadata">Home</a> | <a href="endorsers">'
                'Endorsers</a> | <a href="upload">Upload</a>\n</div>\n<div class="Content">\n\n'
                '<h1>%(title)s</h1>\n\n<table border=0>\n  <tr>\n  <td>%(description)s</td>\n  '
                '</tr>\n</table>\n\n</div>\n</div>\n\n</body>\n</html>\n')
_RDF_TYPE = "application/rdf+xml; charset=UTF-8"
_JSON_TYPE = "application/json; charset=UTF-8"


class _Failure(Exception):
    """An HTTP error answer, raised deep in the handler and shaped in one place."""

    def __init__(self, status: int, message: str, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _header(headers: Headers, name: str) -> Optional[str]:
    # The front gives a case-insensitive mapping; direct callers may pass a plain dict.
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _prefers_json(headers: Headers) -> bool:
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


def _not_emulated(segments: List[str]) -> bool:
    """Whether a route of the real Marketplace that the emulator does not serve matches
    (exact templates; ``/action/`` and the directories match by prefix)."""
    first, count = segments[0], len(segments)
    if first == "endorsers":
        return count <= 2 or (count == 3 and segments[2] == "tags")
    if first in ("query", "upload", "sync"):
        return count == 1
    return first in ("action", "css", "js", "img") and count >= 2


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
        try:
            response = self._route(request)
        except _Failure as failure:
            response = self._error(failure, request.headers)
        if request.method == "HEAD":
            response.body = b""
        return response

    # --- routing -------------------------------------------------------------------

    def _route(self, request: Request) -> Response:
        path = request.path.replace("//", "/")  # the application's DoubleSlashFilter
        path = path[:-1] if path.endswith("/") and path != "/" else path
        segments = path.split("/")[1:] or [""]
        if segments[0] == "metadata" and len(segments) <= 4:
            resource = self._metadata
        elif segments[0] == "tag" and len(segments) == 3:
            resource = self._tag
        elif _not_emulated(segments):
            raise _Failure(404, RESTLET_DESCRIPTIONS[404])
        else:
            resource = self._home
        if request.method not in ("GET", "HEAD"):
            raise _Failure(405, RESTLET_DESCRIPTIONS[405], {"Allow": "GET, HEAD"})
        args = [unquote(s) for s in segments[1:]]
        query = {name: values[-1] for name, values in request.query.items() if values}
        return resource(request, args, query)

    def _home(self, request: Request, args: List[str], query: Mapping[str, str]) -> Response:
        base = "https://%s/marketplace/" % (_header(request.headers, "Host") or "localhost")
        return Response(200, (_HOME % base).encode("utf-8"), _HTML_TYPE)

    def _tag(self, request: Request, args: List[str], query: Mapping[str, str]) -> Response:
        return self._document(self._tagged(args[0], args[1]))

    def _metadata(self, request: Request, args: List[str], query: Mapping[str, str]) -> Response:
        if len(args) == 3:
            return self._document(self.catalogue.find(*args))
        if len(args) == 1 and "tag" in query and _classify(args[0]) == "email":
            return self._document(self._tagged(args[0], query["tag"]))
        if _prefers_json(request.headers):
            echo = query.get("sEcho", "0")
            if not (_JAVA_INT.fullmatch(echo) and -2 ** 31 <= int(echo) < 2 ** 31):
                raise _Failure(500, RESTLET_DESCRIPTIONS[500])  # Integer.parseInt, uncaught
            try:
                entries, total = self._select(args, query)
            except _Failure:  # toJSON catches the 404: an empty table
                entries, total = [], 0
            return self._json_list(entries, total, int(echo))
        return self._xml_list(self._select(args, query)[0])

    # --- selection (MDataResource + SparqlBuilder) ------------------------------------

    def _select(self, args: List[str], query: Mapping[str, str]
                ) -> Tuple[List[CatalogueEntry], int]:
        """The listed entries, and the total before identifier/e-mail/date/location filters."""
        values = list(args) + [query[k] for k in ("identifier", "email", "created") if k in query]
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
        if not selected:  # with a filter, or a row of nulls from the server's query
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
    def _json_list(entries: List[CatalogueEntry], total: int, echo: int) -> Response:
        def row(e: CatalogueEntry) -> List[str]:
            return ["", e.os or "null", e.os_version or "null", e.arch or "null",
                    e.endorser_email, e.kind or "null", format_time(e.created), e.image_id,
                    e.locations[0] if e.locations else "null", e.description, e.title or "null"]

        document = {
            "sEcho": echo,
            "iTotalRecords": total,
            "iTotalDisplayRecords": len(entries),
            "rMsg": NO_MATCH,  # MDataResource.toJSON's message, whatever the result
            "aaData": [row(e) for e in entries],
        }
        return Response(200, json.dumps(document).encode("utf-8"), _JSON_TYPE)

    @staticmethod
    def _error(failure: _Failure, headers: Headers) -> Response:
        """``MarketPlaceStatusService``: the form of the first accepted media type."""
        first = (_header(headers, "Accept") or "*/*").split(",", 1)[0]
        media, _, parameters = first.strip().lower().partition(";")
        if any(not p.strip().startswith("q=") for p in parameters.split(";") if p.strip()):
            media = ""  # Restlet compares media types with their parameters
        media = media.strip()
        if media in _XML_ERROR_TYPES:
            body = XML_HEADER + "<error>" + escape(failure.message) + "</error>"
            return Response(failure.status, body.encode("utf-8"), _XML_TYPE, failure.headers)
        if media == "application/json":
            body = '{"%d" : %s}' % (failure.status, json.dumps(failure.message))
            return Response(failure.status, body.encode("utf-8"), _JSON_TYPE, failure.headers)
        page = _STATUS_PAGE % {"title": escape(reason(failure.status)),
                               "description": escape(failure.message)}
        return Response(failure.status, page.encode("utf-8"), _HTML_TYPE, failure.headers)
