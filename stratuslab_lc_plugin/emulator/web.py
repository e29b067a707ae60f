"""Request/Response values and error pages shared by the HTTPS front and every service.

The front (:mod:`.front`) does the HTTP work (TLS, authentication, body limits); the
service handlers (ONE, Marketplace, pdisk) only see these plain values, so they can be
written and tested without knowing anything about sockets. The error pages of the
servers a real site runs (nginx in front, Jetty web apps, Restlet applications) live
here too, because the front and the services both answer with them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Dict, Iterable, List, Optional, Protocol, Tuple, runtime_checkable

__all__ = ["Request", "Response", "Headers", "Handler", "InjectedErrorShaper", "jetty_error",
           "nginx_error", "reason", "RESTLET_DESCRIPTIONS"]

# Restlet's default status descriptions: the message of errors no resource produced
# itself (unknown path, wrong method). pdisk and the Marketplace are Restlet applications.
RESTLET_DESCRIPTIONS = {
    404: "The server has not found anything matching the request URI",
    405: "The method specified in the request is not allowed for the resource "
         "identified by the request URI",
    500: "The server encountered an unexpected condition which prevented it from "
         "fulfilling the request",
}


class Headers(Protocol):
    """Request headers as services read them: the front passes an ``http.client.HTTPMessage``
    (case-insensitive, not a Mapping), handlers called directly may get a plain dict."""

    def get(self, name: str, /) -> Optional[str]: ...

    def items(self) -> Iterable[Tuple[str, str]]: ...


@dataclass
class Request:
    """One HTTP request as a service handler sees it."""

    method: str                       # "GET", "POST", ...
    path: str                         # below the service mount: "/xmlrpc", "/disks/<uuid>/mounts/", "/metadata/<id>"
    query: Dict[str, List[str]]       # parsed query string
    headers: Headers                  # case-insensitive from the front (http.client.HTTPMessage)
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


@runtime_checkable
class InjectedErrorShaper(Protocol):
    """A service whose protocol has its own shape for an injected failure (ONE's triple)."""

    def injected_error(self, request: Request) -> Response: ...


def reason(status: int) -> str:
    """The standard reason phrase of an HTTP status."""
    return BaseHTTPRequestHandler.responses.get(status, ("Error",))[0]


def jetty_error(status: int, path: str, text: Optional[str] = None) -> Response:
    """An error page shaped like Jetty's (what the web apps of a real site answer)."""
    text = text or reason(status)
    body = ("<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html; "
            "charset=ISO-8859-1\"/>\n<title>Error %d %s</title>\n</head>\n<body>\n"
            "<h2>HTTP ERROR %d</h2>\n<p>Problem accessing %s. Reason:\n<pre>    %s</pre></p>\n"
            "<hr /><i><small>Powered by Jetty://</small></i>\n</body>\n</html>\n"
            % (status, html.escape(text), status, html.escape(path), html.escape(text)))
    return Response(status, body.encode("latin-1", "replace"),
                    "text/html;charset=ISO-8859-1")


def nginx_error(status: int) -> Response:
    """An error page shaped like nginx's (paths outside every web app, 413, 502, 503)."""
    title = "%d %s" % (status, reason(status))
    body = ("<html>\r\n<head><title>%s</title></head>\r\n<body bgcolor=\"white\">\r\n"
            "<center><h1>%s</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n"
            "</html>\r\n" % (title, title))
    return Response(status, body.encode("ascii"), "text/html")
