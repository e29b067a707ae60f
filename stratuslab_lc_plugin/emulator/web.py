"""Request/Response values shared by the HTTPS front and every emulated service.

The front (:mod:`.front`) does the HTTP work (TLS, authentication, body limits); the
service handlers (ONE, Marketplace, pdisk) only see these plain values, so they can be
written and tested without knowing anything about sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Protocol


@dataclass
class Request:
    """One HTTP request as a service handler sees it."""

    method: str                       # "GET", "POST", ...
    path: str                         # below the service mount: "/xmlrpc", "/disks/<uuid>/mounts/", "/metadata/<id>"
    query: Dict[str, List[str]]       # parsed query string
    headers: Mapping[str, str]        # case-insensitive (http.client.HTTPMessage)
    body: bytes
    user: Optional[str]               # authenticated user name (None where no auth, e.g. marketplace)
    form: Dict[str, str]              # parsed x-www-form-urlencoded body (last value wins), else {}


@dataclass
class Response:
    """What a handler answers; the front adds Content-Length and connection headers."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Dict[str, str] = field(default_factory=dict)


class Handler(Protocol):
    """A mounted service. It must answer protocol-shaped errors itself; the front turns
    any exception that escapes into a 500."""

    def handle(self, request: Request) -> Response: ...
