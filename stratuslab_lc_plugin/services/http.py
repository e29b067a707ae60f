"""What the driver's connections put under Libcloud's HTTP layer, so a server cannot hold or fool them.

Libcloud's ``LibcloudConnection`` is a ``requests`` session. Left as it is, a hostile or
broken server could follow it wherever it likes and keep it as long as it likes: requests
follows redirects (re-sending the body, credentials in its headers, to another host or
from HTTPS down to HTTP) and reads a redirect's whole body outside any size limit; its
timeout applies to each socket read, so a server that drips header lines holds a call
forever. :func:`harden` mounts on a connection's session:

- a response hook that refuses every 3xx answer before its body is read
  (:class:`Redirected`);
- adapters whose sockets are shut down when the call's deadline passes while the request
  is being connected or waits for its status line and headers
  (:data:`~stratuslab_lc_plugin.services.deadline.WATCH`);

and :func:`read_body` reads answers in pieces, at most ``limit`` bytes after decompression
(a gzip bomb is cut short too) and not past the deadline. :func:`redacting` swaps Libcloud's
debug logger (``LIBCLOUD_DEBUG``) for one that leaves credentials out and reads the body it
logs under the same limit.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional
from urllib.parse import urlsplit, urlunsplit

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.connectionpool

from stratuslab_lc_plugin.services import deadline

__all__ = [
    "BoundedAdapter",
    "DeadlinePassed",
    "MAX_RESPONSE_BYTES",
    "Redirected",
    "TooLarge",
    "harden",
    "read_body",
    "redacting",
]

#: The largest answer read from any service. The biggest legitimate one is a VM pool:
#: about 3 KiB per VM, so 64 MiB is some 20,000 VMs; a Marketplace catalogue of a few
#: hundred entries is well under 1 MiB. Larger answers are refused.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

_CHUNK = 64 * 1024


class Redirected(Exception):
    """A service answered with a redirect; ``status`` and ``target`` (no query, no user info)."""

    def __init__(self, status: int, target: Optional[str]) -> None:
        super().__init__(status, target)
        self.status = status
        self.target = target


class TooLarge(Exception):
    """An answer is longer than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class DeadlinePassed(Exception):
    """The call's deadline passed while a request was connecting or waiting for its headers."""


# -- sockets bounded by the deadline ------------------------------------------------------


class _DeadlineBound:
    """Connects and reads status line and headers under :data:`deadline.WATCH`."""

    def connect(self) -> None:
        self._bounded(super().connect)  # type: ignore[misc]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        return self._bounded(super().getresponse, *args, **kwargs)  # type: ignore[misc]

    def _bounded(self, step: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with deadline.WATCH.watching(self) as watch:
            try:
                result = step(*args, **kwargs)
            except Exception:
                if watch.fired:
                    raise DeadlinePassed() from None
                raise
        # A socket shut down between two header lines reads as the end of the headers:
        # what was read is not an answer.
        if watch.fired:
            raise DeadlinePassed()
        return result


class _HTTPConnection(_DeadlineBound, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineBound, urllib3.connection.HTTPSConnection):
    pass


class _HTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}
_STOCK_POOL_CLASSES = (urllib3.connectionpool.HTTPConnectionPool, urllib3.connectionpool.HTTPSConnectionPool)


def _bound(manager: Any) -> Any:
    # Only urllib3's own pool classes are replaced: a SOCKS proxy manager brings its own.
    current = getattr(manager, "pool_classes_by_scheme", None)
    if isinstance(current, dict) and all(current.get(s) in _STOCK_POOL_CLASSES for s in _POOL_CLASSES):
        manager.pool_classes_by_scheme = dict(_POOL_CLASSES)
    return manager


class BoundedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections (direct or through a proxy) obey the deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _bound(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return _bound(super().proxy_manager_for(proxy, **proxy_kwargs))


# -- no redirects -------------------------------------------------------------------------


def _refuse_redirect(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    if 300 <= response.status_code < 400:
        target = _safe_url(response.headers.get("Location"))
        response.close()  # its body is never read
        raise Redirected(response.status_code, target)
    return response


def _safe_url(url: Optional[str]) -> Optional[str]:
    """``url`` without user info, query and fragment, which may hold secrets."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "(an unreadable address)"
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (":%d" % port if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) or "(an unreadable address)"


def harden(session: Optional[requests.Session]) -> None:
    """Mount the bounded adapters and the redirect refusal on ``session`` (idempotent)."""
    if session is None:
        return
    if not isinstance(session.get_adapter("https://"), BoundedAdapter):
        for prefix in ("https://", "http://"):
            session.mount(prefix, BoundedAdapter())
    hooks = session.hooks.setdefault("response", [])
    if _refuse_redirect not in hooks:
        hooks.append(_refuse_redirect)
    session.max_redirects = 0  # should a redirect ever get past the hook


# -- bodies -------------------------------------------------------------------------------


def read_body(response: requests.Response, limit: int) -> bytes:
    """The decoded body of ``response``, at most ``limit`` bytes, read before the deadline.

    Raises :class:`TooLarge`, or requests' ``ReadTimeout`` once the deadline passed. The
    body is kept on the response too, as if requests had read it.
    """
    if response._content_consumed:  # type: ignore[attr-defined]
        body = response.content or b""
        if len(body) > limit:
            raise TooLarge(limit)
        return body
    length = (response.headers.get("Content-Length") or "").strip()
    if length.isdigit() and int(length) > limit:
        response.close()
        raise TooLarge(limit)
    end = deadline.current()
    chunks, total = [], 0
    try:
        for chunk in _chunks(response):
            total += len(chunk)
            if total > limit:
                raise TooLarge(limit)
            if end is not None and time.monotonic() > end:
                raise requests.exceptions.ReadTimeout("the answer took longer than the timeout")
            chunks.append(chunk)
    except BaseException:
        response.close()  # a half-read answer must not go back to the keep-alive pool
        raise
    body = b"".join(chunks)
    response._content = body
    response._content_consumed = True  # type: ignore[attr-defined]
    return body


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The decoded body, as it arrives.

    requests' ``iter_content(n)`` blocks until ``n`` bytes came (urllib3 ``read(n)``), so a
    server dripping bytes would never reach the deadline check; urllib3 2's ``read1`` returns
    what one socket read gave. Its errors are mapped as requests maps them.
    """
    raw = response.raw
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # urllib3 1.x
        yield from response.iter_content(_CHUNK)
        return
    from urllib3 import exceptions as urllib3_errors

    while True:
        try:
            data = read1(_CHUNK, decode_content=True)
        except urllib3_errors.ReadTimeoutError as exc:
            raise requests.exceptions.ReadTimeout(exc) from None
        except urllib3_errors.DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(exc) from None
        except urllib3_errors.SSLError as exc:
            raise requests.exceptions.SSLError(exc) from None
        except (urllib3_errors.ProtocolError, OSError) as exc:
            raise requests.exceptions.ChunkedEncodingError(exc) from None
        if not data:
            return
        yield data


# -- Libcloud's debug log, without credentials ------------------------------------------

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_REDACTING: Dict[type, type] = {}
_REDACTING_LOCK = threading.Lock()


def redacting(conn_class: type, limit: int = MAX_RESPONSE_BYTES) -> type:
    """``conn_class``, or when it is Libcloud's debug ``LoggingConnection``, a subclass of it
    that leaves credentials (headers, a proxy password) out of its log and reads the body
    it logs under ``limit`` and the deadline.

    ``libcloud.utils.loggingconnection`` is only imported once debugging put it in use:
    in Libcloud before 3.5 it imports ``pipes``, which Python 3.13 removed.
    """
    from libcloud.common.base import LibcloudConnection

    if conn_class is LibcloudConnection or getattr(conn_class, "_redacts", False):
        return conn_class
    from libcloud.utils.loggingconnection import LoggingConnection

    if not issubclass(conn_class, LoggingConnection):
        return conn_class
    with _REDACTING_LOCK:
        if conn_class not in _REDACTING:
            _REDACTING[conn_class] = _redacting_subclass(conn_class, limit)
        return _REDACTING[conn_class]


def _redacting_subclass(conn_class: type, limit: int) -> type:
    log_curl: Callable[..., str] = conn_class._log_curl  # type: ignore[attr-defined]
    get_response: Callable[..., Any] = conn_class.getresponse  # type: ignore[attr-defined]

    class RedactingLoggingConnection(conn_class):
        _redacts = True

        def _log_curl(self, method: str, url: str, body: Any, headers: Optional[dict]) -> str:
            shown = {
                name: ("<redacted>" if name.lower() in _SECRET_HEADERS else value)
                for name, value in (headers or {}).items()
            }
            line = log_curl(self, method, url, body, shown)
            proxy_password = getattr(self, "proxy_password", None)
            return line.replace(proxy_password, "<redacted>") if proxy_password else line

        def getresponse(self) -> Any:
            # The logger reads the whole body; read it first, under the limit.
            if self.response is not None:
                read_body(self.response, limit)
            return get_response(self)

    return RedactingLoggingConnection
