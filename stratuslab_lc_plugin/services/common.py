"""One HTTPS connection to one service of one location, on Libcloud's Connection classes.

The three StratusLab services (OpenNebula behind the one-proxy, pdisk, Marketplace) share
their transport needs, so they share this class: the location's CA bundle and
``verify_ssl`` flag, HTTP Basic credentials sent in a header (never in the URL), a TLS
client certificate for ``/cert/`` sites, a bounded timeout, retries of idempotent calls on
transient failures only, answers of bounded size, and errors that name the location and
the operation.

The timeout bounds a whole call, retries included. requests applies its timeout to each
socket operation (connect, each read), so each attempt gets the time left as its socket
timeout, and the body is read in chunks with the deadline checked between them: a server
that sends one byte a second cannot hold a call much past its timeout. A driver method
that makes several calls (create_node: image, allocate, lookup of a lost answer, VM)
runs them under :func:`shared_deadline`, so it too ends within one timeout.

With ``LIBCLOUD_DEBUG`` set, Libcloud logs every request as a curl command line, headers
included; these connections then log through a subclass of it (:func:`redacting`) that
replaces the ``Authorization`` header's value.

A Libcloud ``Connection`` keeps per-request state on the instance, so one instance must not
serve two threads at once; the driver keeps one per thread, location and service
(see :mod:`stratuslab_lc_plugin.services`).
"""

from __future__ import annotations

import base64
import random
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Mapping, Optional

import requests
from libcloud.common.base import Connection, ConnectionUserAndKey, LibcloudConnection, Response

from stratuslab_lc_plugin.errors import AuthenticationError, ProtocolError, ServiceUnavailableError

__all__ = [
    "RetryPolicy",
    "RawResponse",
    "ServiceConnection",
    "redacting",
    "shared_deadline",
    "TRANSIENT_STATUSES",
    "MAX_RESPONSE_BYTES",
]

#: Answers of a proxy or an overloaded server: the request may not have been processed.
TRANSIENT_STATUSES = frozenset({502, 503, 504})

#: The largest answer read from any service. The biggest legitimate one is a VM pool:
#: about 3 KiB per VM, so 64 MiB is some 20,000 VMs; a Marketplace catalogue of a few
#: hundred entries is well under 1 MiB. Larger answers are refused (ProtocolError).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

_CHUNK = 64 * 1024

#: Transport failures after which an idempotent request may safely be sent again.
#: ``requests.exceptions.SSLError`` is a ConnectionError but a certificate problem does
#: not go away by retrying, so it is excluded explicitly in :func:`_is_transient`.
_TRANSIENT_EXCEPTIONS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    socket.timeout,
    ConnectionError,
)


_THREAD = threading.local()


@contextmanager
def shared_deadline(seconds: float) -> Iterator[None]:
    """Make every service call of this thread inside the block end within ``seconds`` in all.

    Each call still has its own timeout; the earlier of the two deadlines applies. A call
    started after the shared deadline fails at once, without sending anything. Nested
    blocks keep the outermost deadline.
    """
    outer = getattr(_THREAD, "deadline", None)
    if outer is None:
        _THREAD.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        if outer is None:
            _THREAD.deadline = None


class RetryPolicy:
    """How often and how patiently idempotent calls are retried.

    ``retries`` extra attempts at most, exponential backoff starting at ``backoff`` seconds
    with full jitter, and never past the call's overall ``timeout``.
    """

    def __init__(self, retries: int = 2, backoff: float = 0.2, max_backoff: float = 5.0) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0, got %r" % (retries,))
        if backoff < 0:
            raise ValueError("backoff must be >= 0, got %r" % (backoff,))
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.backoff * (2**attempt)))


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class RawResponse(Response):
    """A response that keeps the body as bytes and leaves status handling to the service.

    requests decodes ``text`` with a guessed charset, which garbles UTF-8 bodies sent
    without a charset parameter; every service here parses ``raw_body`` instead. The
    body is read in chunks, at most the connection's ``max_response_bytes`` (after
    content decoding, so a gzip bomb is cut short too) and not past its deadline.
    """

    def __init__(self, response, connection) -> None:
        self.raw_body: bytes = _read_body(response, connection)
        super().__init__(response, connection)

    def success(self) -> bool:
        # Every status reaches the service, which knows what its protocol means by it.
        return True

    def parse_body(self) -> bytes:
        return self.raw_body


def _read_body(response, connection) -> bytes:
    limit = getattr(connection, "max_response_bytes", MAX_RESPONSE_BYTES)
    deadline = getattr(connection, "deadline", None)
    length = (response.headers.get("Content-Length") or "").strip()
    if length.isdigit() and int(length) > limit:
        response.close()
        raise _TooLarge(limit)
    chunks, total = [], 0
    try:
        for chunk in _chunks(response):
            total += len(chunk)
            if total > limit:
                raise _TooLarge(limit)
            if deadline is not None and time.monotonic() > deadline:
                raise requests.exceptions.ReadTimeout("the answer took longer than the timeout")
            chunks.append(chunk)
    except BaseException:
        response.close()  # a half-read answer must not go back to the keep-alive pool
        raise
    body = b"".join(chunks)
    # Libcloud's Response reads ``text``, which reads ``content``: serve it from memory.
    response._content = body
    response._content_consumed = True
    return body


def _chunks(response) -> Iterator[bytes]:
    """The decoded body, as it arrives.

    requests' ``iter_content(n)`` blocks until ``n`` bytes came (urllib3 ``read(n)``), so a
    server dripping bytes would never reach the deadline check; urllib3 2's ``read1`` returns
    what one socket read gave. Its errors are mapped as requests maps them.
    """
    raw = response.raw
    read1 = getattr(raw, "read1", None)
    if response._content_consumed or read1 is None:  # already read (LIBCLOUD_DEBUG), or urllib3 1.x
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


def redacting(conn_class: type) -> type:
    """``conn_class``, or when it is Libcloud's debug LoggingConnection, a subclass of it
    that leaves credentials (headers, a proxy password) out of its log.

    ``libcloud.utils.loggingconnection`` is only imported once debugging put it in use:
    in Libcloud before 3.5 it imports ``pipes``, which Python 3.13 removed.
    """
    if conn_class is LibcloudConnection or getattr(conn_class, "_redacts", False):
        return conn_class
    from libcloud.utils.loggingconnection import LoggingConnection

    if not issubclass(conn_class, LoggingConnection):
        return conn_class
    with _REDACTING_LOCK:
        if conn_class not in _REDACTING:

            class RedactingLoggingConnection(conn_class):
                _redacts = True

                def _log_curl(self, method, url, body, headers):
                    shown = {
                        name: ("<redacted>" if name.lower() in _SECRET_HEADERS else value)
                        for name, value in (headers or {}).items()
                    }
                    line = super()._log_curl(method, url, body, shown)
                    proxy_password = getattr(self, "proxy_password", None)
                    return line.replace(proxy_password, "<redacted>") if proxy_password else line

            _REDACTING[conn_class] = RedactingLoggingConnection
        return _REDACTING[conn_class]


_REDACTING: dict = {}
_REDACTING_LOCK = threading.Lock()
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


class ServiceConnection(ConnectionUserAndKey):
    """HTTPS connection to one service of one location."""

    responseCls = RawResponse
    #: Human name of the service, used in error messages ("compute", "pdisk", "marketplace").
    service = "service"
    #: Answers larger than this are refused with a ProtocolError.
    max_response_bytes = MAX_RESPONSE_BYTES
    #: The monotonic deadline of the call in progress (read by :class:`RawResponse`).
    deadline: Optional[float] = None

    def __init__(
        self,
        base_url: str,
        *,
        location_id: str,
        username: Optional[str] = None,
        password: Optional[str] = None,
        client_cert: Optional[tuple[str, str]] = None,
        ca_certs_path: Optional[str] = None,
        verify_ssl: bool = True,
        timeout: float = 30.0,
        retry: Optional[RetryPolicy] = None,
    ) -> None:
        super().__init__(username or "", password or "", url=base_url, timeout=timeout)
        self.base_url = base_url
        self.location_id = location_id
        self._authorization = _basic_authorization(username, password)
        if client_cert is not None:
            # Libcloud's Connection.connect() hands these to the HTTP layer, which mounts an
            # adapter presenting the certificate.
            self.cert_file, self.key_file = client_cert
        self._ca_certs_path = ca_certs_path
        self._verify_ssl = verify_ssl
        self.retry = retry or RetryPolicy()

    # -- Libcloud hooks -------------------------------------------------------------------

    @property
    def conn_class(self):
        # Libcloud's enable_debug() (LIBCLOUD_DEBUG) swaps Connection.conn_class for its
        # LoggingConnection at any time, so look at it on each connect.
        return redacting(Connection.conn_class)

    def connect(self, *args, **kwargs):
        result = super().connect(*args, **kwargs)
        # Libcloud reads the CA bundle from a process-wide setting; each location has its own.
        self.connection.verify = self._verify_ssl
        self.connection.ca_cert = self._ca_certs_path if self._verify_ssl else None
        return result

    def add_default_headers(self, headers: dict) -> dict:
        headers = super().add_default_headers(headers)
        if self._authorization:
            headers["Authorization"] = self._authorization
        return headers

    # -- what the services call -----------------------------------------------------------

    def send(
        self,
        operation: str,
        path: str,
        *,
        method: str = "GET",
        data: Optional[bytes | str] = None,
        headers: Optional[Mapping[str, str]] = None,
        idempotent: bool,
    ) -> RawResponse:
        """Send one request and return the response, whatever its status.

        Transport failures and 502/503/504 answers are retried when ``idempotent`` is true,
        within the retry policy and the connection's timeout (which bounds the whole call);
        what is left raises :class:`ServiceUnavailableError` naming the location, service
        and operation. A non-idempotent request is sent once: a transport failure or a
        502/503/504 answer raises ServiceUnavailableError at once, since the request may or
        may not have been carried out (``timed_out`` tells when it may still be running).
        An answer larger than ``max_response_bytes`` raises :class:`ProtocolError`.
        """
        deadline = time.monotonic() + self.timeout
        shared = getattr(_THREAD, "deadline", None)
        if shared is not None and shared < deadline:
            deadline = shared
            if time.monotonic() >= deadline:
                raise self.unavailable(operation, "no time left of the timeout (%gs)" % self.timeout)
        attempt = 0
        while True:
            try:
                if self.connection is None:
                    self.connect()
                # requests' timeout applies per socket operation: give each attempt what is left.
                self.connection.session.timeout = max(0.01, deadline - time.monotonic())
                self.deadline = deadline
                # retry_failed=False: Libcloud's own retries (LIBCLOUD_RETRY_FAILED_HTTP_REQUESTS)
                # would repeat writes blindly.
                response = self.request(
                    path, data=data, headers=dict(headers or {}), method=method,
                    stream=True, retry_failed=False,
                )
            except _TooLarge as exc:
                self.connection = None
                raise ProtocolError(
                    "%s: %s service at %s answered %s with more than %d bytes; refused"
                    % (self.location_id, self.service, self.base_url, operation, exc.limit),
                    location=self.location_id, operation=operation,
                ) from None
            except requests.exceptions.ContentDecodingError:
                self.connection = None
                raise ProtocolError(
                    "%s: %s service at %s answered %s with a body that cannot be decoded"
                    % (self.location_id, self.service, self.base_url, operation),
                    location=self.location_id, operation=operation,
                ) from None
            except Exception as exc:  # noqa: BLE001 - narrowed right below
                if not _is_transient(exc):
                    if isinstance(exc, (requests.exceptions.SSLError, ssl.SSLError)):
                        raise self.unavailable(operation, "TLS failure: %s" % _reason(exc)) from None
                    raise
                self.connection = None  # a broken keep-alive socket must not be reused
                failure = _reason(exc)
                timed_out = _timed_out(exc)
            else:
                if response.status not in TRANSIENT_STATUSES:
                    return response
                failure = "HTTP %d %s" % (response.status, response.error or "")
                # A gateway timeout means the server behind it may still be working.
                timed_out = response.status == 504
            finally:
                self.deadline = None
            if not idempotent or attempt >= self.retry.retries:
                raise self.unavailable(operation, failure.strip(), timed_out=timed_out)
            pause = self.retry.delay(attempt)
            if time.monotonic() + pause >= deadline:
                raise self.unavailable(operation, failure.strip(), timed_out=timed_out)
            time.sleep(pause)
            attempt += 1

    def unavailable(self, operation: str, reason: str, timed_out: bool = False) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            "%s: %s service at %s did not answer %s: %s"
            % (self.location_id, self.service, self.base_url, operation, reason),
            location=self.location_id,
            operation=operation,
            remote_message=reason,
            timed_out=timed_out,
        )

    def invalid_credentials(self, operation: str, detail: str) -> AuthenticationError:
        return AuthenticationError(
            "%s: %s service refused the credentials of this location for %s: %s"
            % (self.location_id, self.service, operation, detail),
            location=self.location_id, operation=operation, code=401, remote_message=detail,
        )


def _basic_authorization(username: Optional[str], password: Optional[str]) -> Optional[str]:
    if not username or password is None:
        return None
    token = base64.b64encode(("%s:%s" % (username, password)).encode("utf-8")).decode("ascii")
    return "Basic " + token


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (requests.exceptions.SSLError, ssl.SSLError)):
        return False
    return isinstance(exc, _TRANSIENT_EXCEPTIONS)


def _timed_out(exc: BaseException) -> bool:
    """True when the request may have reached the server and may still be running there."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return False  # never connected: nothing was sent
    return isinstance(exc, (requests.exceptions.Timeout, socket.timeout))


def _reason(exc: BaseException) -> str:
    """A short reason for a transport failure, without the URL's query or credentials."""
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        inner = exc.args[0] if exc.args else exc
        text = str(getattr(inner, "reason", inner))
        return text
    if isinstance(exc, requests.exceptions.ConnectionError):
        inner = exc.args[0] if exc.args else exc
        reason = getattr(inner, "reason", None)
        text = str(reason if reason is not None else inner)
        # urllib3 prefixes the pool repr, which repeats the host: keep the OS reason only.
        return text.split(": ", 1)[-1] if "object at 0x" in text else text
    return str(exc) or type(exc).__name__
