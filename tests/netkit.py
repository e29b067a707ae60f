"""Real network peers for the transport tests: a scriptable HTTPS server that records what it
was sent, and an HTTP proxy that tunnels CONNECT and counts what it saw.

Every one of them listens on 127.0.0.1 and a free port, runs on daemon threads, and stops
when closed (they are context managers).
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import threading
import xmlrpc.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        hostile = self.server.hostile
        key = hostile.key(self.command, self.path, body)
        with hostile.lock:
            hostile.seen.append((key, self.command, self.path, dict(self.headers)))
        missing = (404, {}, b"no answer set for %s" % key.encode())
        status, headers, payload = hostile.answers.get(key, missing)
        try:
            if callable(payload):
                payload(self, status, headers)
                return
            self.send_response(status)
            for name, value in {"Content-Type": "text/plain", "Content-Length": str(len(payload)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (ConnectionError, ssl.SSLError, OSError):
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = _answer


class Hostile:
    """An HTTPS (or plain HTTP) server; ``answers`` maps a request key to (status, headers, body or writer).

    It presents the local cloud's server certificate, so the driver verifies TLS for real.
    ``seen`` lists ``(key, method, path, headers)`` of every request.
    """

    def __init__(self, cloud, tls: bool = True) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        if tls:
            cert, key = cloud.ca.server_pair()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.hostile = self
        self.answers: Dict[str, tuple] = {}
        self.seen: List[tuple] = []
        self.lock = threading.Lock()
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @staticmethod
    def key(method: str, path: str, body: bytes) -> str:
        """``one.vmpool.info`` (XML-RPC method), ``marketplace``, or ``pdisk GET`` / ``pdisk POST``..."""
        if "/one-proxy/" in path:
            match = re.search(rb"<methodName>([^<]+)</methodName>", body)
            return match.group(1).decode() if match else "one"
        if path.startswith("/pdisk/"):
            return "pdisk " + method
        return "marketplace"

    def set(self, key: str, body, status: int = 200, **headers) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.answers[key] = (status, {k.replace("_", "-"): v for k, v in headers.items()}, body)

    def rpc(self, method: str, value) -> None:
        self.set(method, xmlrpc.client.dumps((value,), methodresponse=True), Content_Type="text/xml")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Hostile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pump(source: socket.socket, sink: socket.socket, record: Optional[Callable[[bytes], None]]) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            if record is not None:
                record(data)
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Listener:
    """Accepts connections on 127.0.0.1 and hands each to ``serve`` on its own thread."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if ready:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        self._stopped.set()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ConnectProxy(_Listener):
    """An HTTP proxy that tunnels ``CONNECT host:port`` and records each tunnel's target.

    With ``credentials`` ("user:password"), a CONNECT without that Proxy-Authorization is
    answered 407.
    """

    def __init__(self, credentials: Optional[str] = None) -> None:
        self.tunnels: List[Tuple[str, int]] = []
        self.refused = 0
        self._credentials = credentials
        self._lock = threading.Lock()
        super().__init__()
        self.url = "http://127.0.0.1:%d" % self.port

    def serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    conn.close()
                    return
                head += data
        except OSError:
            conn.close()
            return
        request_line, *header_lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip()
                   for line in header_lines if ":" in line}
        if method != "CONNECT":
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            conn.close()
            return
        if self._credentials is not None:
            import base64

            expected = "Basic " + base64.b64encode(self._credentials.encode()).decode()
            if headers.get("proxy-authorization") != expected:
                with self._lock:
                    self.refused += 1
                conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                conn.close()
                return
        host, port = target.rsplit(":", 1)
        try:
            upstream = socket.create_connection((host, int(port)), timeout=30)
        except OSError:
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            conn.close()
            return
        with self._lock:
            self.tunnels.append((host, int(port)))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        threading.Thread(target=_pump, args=(upstream, conn, None), daemon=True).start()
        _pump(conn, upstream, None)
