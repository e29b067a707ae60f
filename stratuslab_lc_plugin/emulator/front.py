"""The HTTPS front of the local cloud, laid out like a StratusLab site behind nginx.

A real site has nginx on 443 proxying ``/one-proxy``, ``/pdisk`` and ``/marketplace`` to
Jetty web apps, each with a ``pswd`` (HTTP Basic) and a ``cert`` (TLS client
certificate) context. This module plays nginx and the Jetty security layer: TLS (1.2+),
HTTP/1.1 keep-alive, routing by path prefix, authentication with the realms of the
real sites, a request body limit, socket timeouts, a cap on connections and a deadline
for each request (:mod:`.connections`), and error pages. Services behind it
only see :class:`~.web.Request` values. Whatever a service raises becomes a 500; the
front itself never dies on a bad client and never logs credentials. It is also where
injected faults (:mod:`.faults`) happen, around the service's handler.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, parse_qsl

from .connections import (DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT, Connection,
                          ConnectionLimits)
from .faults import GARBLED_BODY, Fault, FaultSet
from .web import Handler, InjectedErrorShaper, Request, Response, jetty_error, nginx_error

__all__ = ["Mount", "Front", "make_server_context", "listen_address", "PASSWORD_REALM",
           "CERTIFICATE_REALM"]

log = logging.getLogger(__name__)

PASSWORD_REALM = "StratusLab Password Realm"
CERTIFICATE_REALM = "StratusLab Certificate Realm"
DEFAULT_MAX_BODY = 1 << 20
_LINGER_SECONDS = 2.0
_CURRENT = threading.local()  # .connection: the Connection a handler thread serves


@dataclass
class Mount:
    """A service under a path prefix. ``auth`` is ``"pswd"``, ``"cert"`` or None; a
    None ``handler`` stands for a service that is not installed (nginx answers 502)."""

    prefix: str
    handler: Optional[Handler]
    auth: Optional[str] = None
    max_body: Optional[int] = None
    service: Optional[str] = None   # "one", "pdisk" or "marketplace": what faults name


def listen_address(host: str, allow_non_loopback: bool = False) -> str:
    """The IPv4 address to listen on for ``host`` (an address, or ``localhost``).

    Raises ValueError for anything outside 127.0.0.0/8 unless ``allow_non_loopback``: a
    client of the local cloud can make its VMs run commands on this machine.
    """
    text = "127.0.0.1" if host == "localhost" else host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError("%r is not an IP address (nor localhost)" % (host,)) from None
    if address.version != 4:
        raise ValueError("%s is not an IPv4 address: the local cloud listens on IPv4" % host)
    if not address.is_loopback and not allow_non_loopback:
        raise ValueError("%s is not a loopback address (127.0.0.0/8); listening beyond this "
                         "machine must be asked for explicitly" % host)
    return str(address)


def make_server_context(cert_path: str, key_path: str, ca_path: str) -> ssl.SSLContext:
    """TLS 1.2+ server context; client certificates are requested, optional, and must
    chain to the cloud CA when present."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    ctx.load_verify_locations(ca_path)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def _basic_credentials(header: Optional[str]) -> Optional[Tuple[str, str]]:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


class _Drop(Exception):
    """An injected fault: close the connection without answering."""


class _BadRequest(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _RequestHandler(BaseHTTPRequestHandler):
    """One connection; BaseHTTPRequestHandler loops over its keep-alive requests."""

    protocol_version = "HTTP/1.1"
    # Answer unparsable request lines with a status line too (the base class would
    # answer them HTTP/0.9-style, with a bare body).
    default_request_version = "HTTP/1.1"
    server: "_Server"
    _linger = False
    # BaseHTTPRequestHandler's private buffer of the answer's head (send_header fills it,
    # flush_headers writes it); _send appends the body to it.
    _headers_buffer: List[bytes]

    def setup(self) -> None:
        # Each front has its own timeout: set on the socket here, not through the handler
        # class's shared ``timeout`` (which StreamRequestHandler.setup would apply).
        self.request.settimeout(self.server.front.timeout)
        self._bounds: Connection = _CURRENT.connection
        super().setup()

    def handle_one_request(self) -> None:
        self.server.front.limits.waiting(self._bounds)
        super().handle_one_request()

    def parse_request(self) -> bool:
        # Called once the request line has arrived: from now on the connection is busy.
        self.server.front.limits.reading(self._bounds)
        return super().parse_request()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._linger:
                self._drain()

    def _drain(self) -> None:
        """Read and drop what the client still sends after an early answer (413...),
        for a bounded time, so closing does not reset the connection before the client
        read the answer (nginx's lingering close)."""
        deadline = time.monotonic() + _LINGER_SECONDS
        try:
            self.connection.settimeout(0.25)
            while time.monotonic() < deadline and self.connection.recv(65536):
                pass
        except (OSError, ValueError):
            pass

    def version_string(self) -> str:
        return "nginx"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base class name
        # Only the request line and status reach the log; never headers or bodies.
        log.debug("%s %s", self.client_address[0], format % args)

    def _dispatch(self) -> None:
        try:
            response, close = self._serve()
        except (ConnectionError, socket.timeout, ssl.SSLError):
            self.close_connection = True
            return
        except _Drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(response, close)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _dispatch

    def _send(self, response: Response, close: bool = False) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            # Headers and body in one write: two small writes meet Nagle's algorithm and
            # the peer's delayed ACK, which costs 40 ms per request.
            self._headers_buffer.append(b"\r\n")
            if self.command != "HEAD" and response.body:
                self._headers_buffer.append(response.body)
            self.flush_headers()
        except (ConnectionError, socket.timeout, ssl.SSLError, OSError):
            self.close_connection = True

    # -- the request pipeline ------------------------------------------------------------

    def _serve(self) -> Tuple[Response, bool]:
        front = self.server.front
        target = self.path.split("#", 1)[0]
        if target.startswith(("http://", "https://")):  # absolute-form request target
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path, _, query = target.partition("?")
        if not path.startswith("/") or any(seg in (".", "..") for seg in path.split("/")):
            return nginx_error(400), True
        if self._bounds.overflow:  # admitted beyond the cap only to hear this
            self._linger = True
            return nginx_error(503), True
        mount = front.find_mount(path)
        limit = front.max_body if mount is None or mount.max_body is None else mount.max_body
        try:
            body = self._read_body(limit)
        except _BadRequest as bad:
            self._linger = True
            return bad.response, True
        front.limits.read(self._bounds)
        if mount is None:
            return nginx_error(404), False
        handler = mount.handler
        if handler is None:
            return nginx_error(502), False
        user = self._authenticate(mount)
        if user is None:
            realm = PASSWORD_REALM if mount.auth == "pswd" else CERTIFICATE_REALM
            response = jetty_error(401, path, "Unauthorized")
            response.headers["WWW-Authenticate"] = 'Basic realm="%s"' % realm
            return response, False
        content_type = self.headers.get("Content-Type", "")
        form: Dict[str, str] = {}
        if content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        request = Request(
            method=self.command,
            path=path[len(mount.prefix):] or "/",
            query=parse_qs(query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            user=user or None,
            form=form,
        )
        fault = front.faults.take(mount.service, request.method, request.path, body)
        if fault is not None:
            return self._faulty(fault, mount.prefix, handler, request, path), False
        return self._handle(mount.prefix, handler, request, path), False

    @staticmethod
    def _handle(prefix: str, handler: Handler, request: Request, path: str) -> Response:
        try:
            response = handler.handle(request)
            if not isinstance(response, Response):
                raise TypeError("handler returned %r" % type(response).__name__)
        except Exception:
            log.exception("handler for %s failed", prefix)
            return jetty_error(500, path)
        return response

    def _faulty(self, fault: Fault, prefix: str, handler: Handler, request: Request,
                path: str) -> Response:
        """Serve ``request`` the way ``fault`` says (see :mod:`.faults`)."""
        log.info("injected fault %s on %s %s (hit %d)", fault.spec, request.method, path, fault.hits)
        kind = fault.kind
        if kind == "drop-before":
            raise _Drop()
        if kind == "delay":
            if not self.server.front.pause(fault.seconds):
                raise _Drop()  # the cloud is stopping
            return self._handle(prefix, handler, request, path)
        if kind == "http-500":
            return jetty_error(500, path)
        if kind in ("http-502", "http-503"):
            return nginx_error(int(kind[-3:]))
        if kind == "one-error":
            # Fault.parse allows this kind on ONE targets only: the ONE handler shapes it.
            if isinstance(handler, InjectedErrorShaper):
                return handler.injected_error(request)
            log.error("fault %s: the service at %s has no error of its own to inject; "
                      "answering 500", fault.spec, prefix)
            return jetty_error(500, path)
        response = self._handle(prefix, handler, request, path)
        if kind == "drop-after":
            raise _Drop()
        # malformed: the work is done, the answer is garbled on its way back
        return Response(response.status, GARBLED_BODY, response.content_type, dict(response.headers))

    def _read_body(self, limit: int) -> bytes:
        encoding = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in encoding:
            return self._read_chunked(limit)
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header.strip())
        except ValueError:
            raise _BadRequest(nginx_error(400)) from None
        if length < 0:
            raise _BadRequest(nginx_error(400))
        if length > limit:
            raise _BadRequest(nginx_error(413))
        body = self.rfile.read(length)
        if len(body) != length:
            raise ConnectionError("body shorter than Content-Length")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        chunks: List[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1026)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(nginx_error(400)) from None
            if size < 0:
                raise _BadRequest(nginx_error(400))
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > limit:
                raise _BadRequest(nginx_error(413))
            data = self.rfile.read(size)
            if len(data) != size:
                raise ConnectionError("truncated chunk")
            chunks.append(data)
            self.rfile.readline(3)

    def _authenticate(self, mount: Mount) -> Optional[str]:
        """The user name; "" for open mounts; None when authentication failed."""
        if mount.auth is None:
            return ""
        if mount.auth == "pswd":
            credentials = _basic_credentials(self.headers.get("Authorization"))
            if credentials and self.server.front.check_password(*credentials):
                return credentials[0]
            return None
        try:
            cert = self.connection.getpeercert()
        except (ValueError, AttributeError):
            cert = None
        for rdn in (cert or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName" and value:
                    return value
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address, front: "Front") -> None:
        self.front = front
        super().__init__(address, _RequestHandler)

    def process_request(self, request, client_address) -> None:
        connection = self.front.limits.admit(request)
        if connection is None:  # beyond the cap and the 503 answers: close at once
            self.shutdown_request(request)
            return
        thread = threading.Thread(target=self._connection_thread,
                                  args=(request, client_address, connection), daemon=True)
        thread.start()

    def _connection_thread(self, request, client_address, connection: Connection) -> None:
        # The TLS handshake runs here, in the connection's own thread, so a slow or
        # silent client never blocks the accept loop. The socket is closed only after
        # the limits released it (see connections.py).
        conn = None
        try:
            request.settimeout(self.front.timeout)
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = self.front.ssl_context.wrap_socket(request, server_side=True,
                                                      do_handshake_on_connect=False)
            conn.do_handshake()
            _CURRENT.connection = connection
            _RequestHandler(conn, client_address, self)
        except (ConnectionError, socket.timeout, ssl.SSLError, OSError):
            pass
        except Exception:
            log.exception("connection handler failed")
        finally:
            _CURRENT.connection = None
            self.front.limits.release(connection)
            if conn is not None:
                _close_tls(conn)
            else:
                self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        log.debug("error while serving %s", client_address[0], exc_info=True)


class Front:
    """The HTTPS server: ``Front(...).start()``, then ``.port``; ``.stop()`` closes
    the listening socket and every open connection."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext,
                 mounts: List[Mount], check_password: Callable[[str, str], bool],
                 max_body: int = DEFAULT_MAX_BODY, timeout: float = 30.0,
                 faults: Optional[FaultSet] = None, allow_non_loopback: bool = False,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.ssl_context = ssl_context
        self.faults = faults if faults is not None else FaultSet()
        self._stopping = threading.Event()
        self.mounts = sorted(mounts, key=lambda m: len(m.prefix), reverse=True)
        self.check_password = check_password
        self.max_body = max_body
        self.timeout = timeout
        self.limits = ConnectionLimits(max_connections, request_timeout)
        self._server = _Server((listen_address(host, allow_non_loopback), port), self)
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def find_mount(self, path: str) -> Optional[Mount]:
        for mount in self.mounts:
            if path == mount.prefix or path.startswith(mount.prefix + "/"):
                return mount
        return None

    def pause(self, seconds: float) -> bool:
        """Sleep for an injected delay; False when the front stops meanwhile."""
        return not self._stopping.wait(seconds)

    def start(self) -> "Front":
        self.limits.start()
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="stratuslab-front", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self.limits.stop()  # shuts every open connection down


def _close_tls(conn: ssl.SSLSocket) -> None:
    """Send TLS close_notify before closing, as nginx does.

    Clients that read an HTTP/1.0 answer until the end of the stream (the 14.06 client's
    ``urllib.urlretrieve``) treat a close without close_notify as a truncation attack
    under OpenSSL 3.
    """
    try:
        conn.settimeout(0.5)
        conn.unwrap().close()
    except (OSError, ValueError):
        try:
            conn.close()
        except OSError:
            pass
