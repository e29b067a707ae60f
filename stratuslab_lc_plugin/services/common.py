"""One HTTPS connection to one service of one location, on Libcloud's Connection classes.

The three StratusLab services (OpenNebula behind the one-proxy, pdisk, Marketplace) share
their transport needs, so they share this class: the location's CA bundle and
``verify_ssl`` flag, HTTP Basic credentials sent in a header (never in the URL), a TLS
client certificate for ``/cert/`` sites, a bounded timeout, retries of idempotent calls on
transient failures only, and errors that name the location and the operation.

A Libcloud ``Connection`` keeps per-request state on the instance, so one instance must not
serve two threads at once; the driver keeps one per thread, location and service
(see :mod:`stratuslab_lc_plugin.services`).
"""

from __future__ import annotations

import base64
import random
import socket
import ssl
import time
from typing import Mapping, Optional

import requests
from libcloud.common.base import ConnectionUserAndKey, Response
from libcloud.common.types import InvalidCredsError

from stratuslab_lc_plugin.errors import ServiceUnavailableError

__all__ = ["RetryPolicy", "RawResponse", "ServiceConnection", "TRANSIENT_STATUSES"]

#: Answers of a proxy or an overloaded server: the request may not have been processed.
TRANSIENT_STATUSES = frozenset({502, 503, 504})

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


class RawResponse(Response):
    """A response that keeps the body as bytes and leaves status handling to the service.

    requests decodes ``text`` with a guessed charset, which garbles UTF-8 bodies sent
    without a charset parameter; every service here parses ``raw_body`` instead.
    """

    def __init__(self, response, connection) -> None:
        self.raw_body: bytes = response.content or b""
        super().__init__(response, connection)

    def success(self) -> bool:
        # Every status reaches the service, which knows what its protocol means by it.
        return True

    def parse_body(self) -> bytes:
        return self.raw_body


class ServiceConnection(ConnectionUserAndKey):
    """HTTPS connection to one service of one location."""

    responseCls = RawResponse
    #: Human name of the service, used in error messages ("compute", "pdisk", "marketplace").
    service = "service"

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
        within the retry policy and the connection's timeout; what is left raises
        :class:`ServiceUnavailableError` naming the location, service and operation.
        """
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                response = self.request(path, data=data, headers=dict(headers or {}), method=method)
            except Exception as exc:  # noqa: BLE001 - narrowed right below
                if not _is_transient(exc):
                    if isinstance(exc, (requests.exceptions.SSLError, ssl.SSLError)):
                        raise self.unavailable(operation, "TLS failure: %s" % _reason(exc)) from None
                    raise
                self.connection = None  # a broken keep-alive socket must not be reused
                failure = _reason(exc)
            else:
                if response.status not in TRANSIENT_STATUSES:
                    return response
                failure = "HTTP %d %s" % (response.status, response.error or "")
                if not idempotent:
                    return response
            if not idempotent or attempt >= self.retry.retries:
                raise self.unavailable(operation, failure.strip())
            pause = self.retry.delay(attempt)
            if time.monotonic() + pause >= deadline:
                raise self.unavailable(operation, failure.strip())
            time.sleep(pause)
            attempt += 1

    def unavailable(self, operation: str, reason: str) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            "%s: %s service at %s did not answer %s: %s"
            % (self.location_id, self.service, self.base_url, operation, reason),
            location=self.location_id,
            operation=operation,
            remote_message=reason,
        )

    def invalid_credentials(self, operation: str, detail: str) -> InvalidCredsError:
        return InvalidCredsError(
            "%s: %s service refused the credentials of this location for %s: %s"
            % (self.location_id, self.service, operation, detail)
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
