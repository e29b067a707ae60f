"""One HTTPS connection to one service of one location, on Libcloud's ``Connection``.

The three StratusLab services (OpenNebula behind the one-proxy, pdisk, Marketplace) share
their transport, so they share this class, which is also the driver's ``connectionCls``:
``driver.connection`` is the default location's compute connection, and everything
Libcloud lets a user set on a connection applies to every connection of the driver
(:class:`TransportSettings`): ``user_agent_append()``, ``set_http_proxy()`` and the
``proxy_url`` argument, ``conn_class`` (Libcloud's ``MockHttp`` in tests,
``LIBCLOUD_DEBUG``'s logger, whose log leaves credentials out).

A request goes through :meth:`StratusLabConnection.send`, top to bottom:

1. the location's credentials: HTTP Basic in a header (never in the URL), or a TLS client
   certificate for ``/cert/`` sites; TLS trust from the location (``ca_certs_path``,
   ``verify_ssl``), else Libcloud's ``libcloud.security`` settings;
2. one deadline for the whole call, retries included (``timeout``, see
   :mod:`~stratuslab_lc_plugin.services.deadline`): each attempt gets the time left as its
   socket timeout, and connecting, the status line, the headers and the body all end by it;
3. retries of idempotent calls only, on transient failures only (no answer, 502/503/504),
   with Libcloud's knobs: ``retry_delay`` (first pause), ``backoff`` (its multiplier);
4. the answer: any 3xx is refused (never followed), the body is read up to
   :data:`MAX_RESPONSE_BYTES`, and every other status goes back to the service, which knows
   what it means in its protocol. Failures become the driver's errors, naming the location,
   the service and the operation.

A Libcloud ``Connection`` keeps per-request state on the instance, so one instance must not
serve two threads at once; the driver keeps one per thread, location and service
(:mod:`~stratuslab_lc_plugin.services.pool`).
"""

from __future__ import annotations

import base64
import random
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Set, Tuple, Union
from urllib.parse import urlsplit, urlunsplit

import libcloud
import libcloud.security
import requests
from libcloud.common.base import BaseDriver, Connection, Response

from stratuslab_lc_plugin import __version__
from stratuslab_lc_plugin.config import LocationConfig
from stratuslab_lc_plugin.errors import (
    AuthenticationError,
    ConfigurationError,
    ProtocolError,
    RedirectRefusedError,
    ServiceUnavailableError,
)
from stratuslab_lc_plugin.services import deadline, http
from stratuslab_lc_plugin.services.http import MAX_RESPONSE_BYTES

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE_BYTES",
    "RawResponse",
    "RetryPolicy",
    "StratusLabConnection",
    "TRANSIENT_STATUSES",
    "TransportSettings",
    "authenticated_url",
]

#: Libcloud's default timeout of a connection, in seconds (``libcloud.http``).
DEFAULT_TIMEOUT = 60.0

#: Answers of a proxy or an overloaded server: the request may not have been processed.
TRANSIENT_STATUSES = frozenset({502, 503, 504})

#: Transport failures after which an idempotent request may safely be sent again.
#: ``requests.exceptions.SSLError`` is a ConnectionError, but a certificate problem does
#: not go away by retrying, so it is excluded explicitly in :func:`_is_transient`.
_TRANSIENT_EXCEPTIONS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    socket.timeout,
    ConnectionError,
)

#: The service names of a location, in the order of messages.
SERVICES = ("compute", "pdisk", "marketplace")


class RetryPolicy:
    """How often and how patiently idempotent calls are retried.

    ``retries`` extra attempts at most; the first pause is ``retry_delay`` seconds and each
    later one ``backoff`` times the previous (Libcloud's meaning of both), at most
    ``max_delay``, with full jitter (a random pause between 0 and that value), and never
    past the call's deadline.
    """

    def __init__(self, retries: float = 2, retry_delay: float = 0.2, backoff: float = 2.0,
                 max_delay: float = 5.0) -> None:
        for name, value in (("retries", retries), ("retry_delay", retry_delay), ("backoff", backoff)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError("%s must be a number >= 0, not %r" % (name, value))
        if isinstance(retries, float) and not float(retries).is_integer():
            raise ValueError("retries must be a whole number, not %r" % (retries,))
        self.retries = int(retries)
        self.retry_delay = float(retry_delay)
        self.backoff = float(backoff)
        self.max_delay = max_delay

    def delay(self, attempt: int) -> float:
        """The pause before retry number ``attempt + 1``."""
        return random.uniform(0, min(self.max_delay, self.retry_delay * self.backoff**attempt))


@dataclass
class TransportSettings:
    """What every connection of one driver shares: set once, it holds for all of them."""

    timeout: float
    retry: RetryPolicy
    proxy_url: Optional[str] = None
    #: ``user_agent_append()`` tokens; every connection's ``ua`` is this very list.
    user_agent: List[str] = field(default_factory=list)
    _warned: Set[Tuple[str, str]] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def warn_once(self, key: Tuple[str, str], message: str) -> None:
        """A warning, once per driver for each ``key`` (e.g. location and topic)."""
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=4)


class RawResponse(Response):
    """A response that keeps the body as bytes and leaves status handling to the service.

    Libcloud's ``Response`` decodes the body as text with a guessed charset (which garbles
    UTF-8 sent without a charset parameter) and raises on statuses it does not like; the
    services here parse ``raw_body`` and know what their statuses mean. The body is read
    under the connection's ``max_response_bytes`` and the call's deadline.
    """

    def __init__(self, response: requests.Response, connection: "StratusLabConnection") -> None:
        self.connection = connection  # type: ignore[assignment]
        self.raw_body: bytes = http.read_body(response, connection.max_response_bytes)
        self.headers = {name.lower(): value for name, value in response.headers.items()}
        self.error = response.reason  # type: ignore[assignment]
        self.status: int = response.status_code
        self.request = response.request
        self.object = None

    @property
    def body(self) -> str:  # type: ignore[override]
        return self.raw_body.decode("utf-8", "replace")

    def success(self) -> bool:
        return True

    def parse_body(self) -> bytes:
        return self.raw_body


class StratusLabConnection(Connection):
    """HTTPS connection to one ``service`` ("compute", "pdisk" or "marketplace") of one location.

    The positional arguments are Libcloud's (``BaseDriver`` passes the driver key and
    ``secure``); where the service is and how to log in come from ``location``.
    """

    responseCls = RawResponse
    #: The driver object (Libcloud's annotation says a class; BaseDriver sets an instance).
    driver: Optional[BaseDriver] = None  # type: ignore[assignment]
    #: Answers larger than this are refused with a ProtocolError.
    max_response_bytes = MAX_RESPONSE_BYTES

    def __init__(
        self,
        key: Optional[str] = None,
        secure: bool = True,
        host: Optional[str] = None,
        port: Optional[int] = None,
        url: Optional[str] = None,
        timeout: Optional[float] = None,
        proxy_url: Optional[str] = None,
        retry_delay: Optional[float] = None,
        backoff: Optional[float] = None,
        *,
        location: LocationConfig,
        service: str = "compute",
        settings: Optional[TransportSettings] = None,
    ) -> None:
        if settings is None:
            retry = RetryPolicy(2, 0.2 if retry_delay is None else retry_delay, 2.0 if backoff is None else backoff)
            settings = TransportSettings(timeout or DEFAULT_TIMEOUT, retry, proxy_url)
        self.location = location
        self.location_id = location.id
        self.service = service
        self.settings = settings
        self.service_url: Optional[str] = None
        self.unusable: Optional[ConfigurationError] = None
        try:
            self.service_url, auth_mode = service_endpoint(location, service)
        except ConfigurationError as exc:
            # A location that cannot reach this service is still listed; using it says why.
            auth_mode, self.unusable = None, exc
        super().__init__(secure=True, timeout=settings.timeout, proxy_url=settings.proxy_url,
                         retry_delay=settings.retry.retry_delay, backoff=settings.retry.backoff)
        self.ua = settings.user_agent
        if self.service_url is not None:
            parts = urlsplit(self.service_url)
            self.secure = 1 if parts.scheme == "https" else 0
            self.host = "[%s]" % parts.hostname if ":" in (parts.hostname or "") else (parts.hostname or "")
            self.port = parts.port or (443 if self.secure else 80)
            self.request_path = parts.path
        self._authorization: Optional[str] = None
        if auth_mode == "pswd":
            username, password = _credentials(location, service)
            self._authorization = _basic_authorization(username, password)
        self._client_cert = (location.pem_certificate, location.pem_key) if auth_mode == "cert" else None

    # -- Libcloud hooks -------------------------------------------------------------------

    @property  # type: ignore[override]
    def conn_class(self) -> type:
        # Libcloud's enable_debug() (LIBCLOUD_DEBUG) swaps Connection.conn_class for its
        # LoggingConnection at any time, so it is looked up on each connect. Assigning
        # connectionCls.conn_class (Libcloud's MockHttp pattern) replaces this property
        # for the class; assigning it on one instance is kept for that instance.
        chosen = self.__dict__.get("_conn_class") or Connection.conn_class
        return http.redacting(chosen, self.max_response_bytes)

    @conn_class.setter
    def conn_class(self, value: type) -> None:
        self.__dict__["_conn_class"] = value

    def connect(self, host: Optional[str] = None, port: Optional[int] = None,
                base_url: Optional[str] = None, **kwargs: Any) -> None:
        if self.service_url is None:
            self.connection = None  # send() says why this location cannot be used
            return
        if self.secure:
            verify, ca_cert = self._tls_trust()
        else:
            verify, ca_cert = False, None
            if self._authorization:
                self.settings.warn_once(
                    (self.location_id, "plain-http"),
                    "%s is plain HTTP: the credentials of location %s cross the network unencrypted "
                    "(use an https:// endpoint)" % (self.where(), self.location_id),
                )
        super().connect(host=host, port=port, base_url=base_url, **kwargs)
        connection: Any = self.connection
        connection.verify = verify
        connection.ca_cert = ca_cert
        session = getattr(connection, "session", None)
        if session is not None:
            if self._client_cert is not None:
                session.cert = self._client_cert
            http.harden(session)

    def set_http_proxy(self, proxy_url: Optional[str]) -> None:
        """Send the requests of every connection of the driver through ``proxy_url``."""
        self.settings.proxy_url = proxy_url
        self.proxy_url = proxy_url
        if self.connection is not None:
            if proxy_url:
                self.connection.set_http_proxy(proxy_url=proxy_url)
            else:
                self.connection = None  # reconnect without it

    def morph_action_hook(self, action: str) -> str:
        # The service URL's own path, then ``action`` below it ("" for the URL itself: the
        # XML-RPC endpoint). Libcloud's urljoin would drop the URL's last segment.
        base = "/" + self.request_path.strip("/")
        return (base.rstrip("/") + "/" + action.lstrip("/")) if action else base

    def add_default_headers(self, headers: dict) -> dict:
        headers = super().add_default_headers(headers)
        if self._authorization:
            headers["Authorization"] = self._authorization
        return headers

    def _user_agent(self) -> str:
        suffix = " ".join("(%s)" % token for token in self.ua)
        name = getattr(self.driver, "name", None) or "StratusLab"
        return ("libcloud/%s (%s) stratuslab-lc-plugin/%s %s" % (libcloud.__version__, name, __version__, suffix)).rstrip()

    # -- what the services call -----------------------------------------------------------

    def send(
        self,
        operation: str,
        path: str,
        *,
        method: str = "GET",
        data: Optional[Union[bytes, str]] = None,
        headers: Optional[Mapping[str, str]] = None,
        idempotent: bool,
    ) -> RawResponse:
        """Send one request and return the response, whatever its (non-3xx) status.

        Transport failures and 502/503/504 answers are retried when ``idempotent`` is true,
        within the retry policy and the call's deadline; what is left raises
        :class:`ServiceUnavailableError` naming the location, service and operation. A
        request that is not idempotent is sent once: a transport failure or a 502/503/504
        answer raises ServiceUnavailableError at once, since the request may or may not
        have been carried out (``timed_out`` tells when it may still be running). A
        redirect raises :class:`RedirectRefusedError`; an answer larger than
        ``max_response_bytes`` or that cannot be decoded raises :class:`ProtocolError`.
        """
        if self.unusable is not None:
            raise self.unusable
        with deadline.bounded(self.settings.timeout) as end:
            attempt = 0
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    raise self.unavailable(operation, "no time left of the timeout (%gs)" % self.settings.timeout,
                                           timed_out=attempt > 0)
                try:
                    if self.proxy_url != self.settings.proxy_url:
                        self.proxy_url, self.connection = self.settings.proxy_url, None
                    if self.connection is None:
                        self.connect()
                    # requests' timeout applies per socket operation: give each attempt what is left.
                    http_connection: Any = self.connection
                    http_connection.session.timeout = max(0.01, left)
                    # retry_failed=False: Libcloud's own retries (LIBCLOUD_RETRY_FAILED_HTTP_REQUESTS)
                    # would repeat writes blindly.
                    response = self.request(path, data=data, headers=dict(headers or {}), method=method,
                                            stream=True, retry_failed=False)
                except http.Redirected as exc:
                    raise self._redirect_error(operation, exc) from None
                except http.TooLarge as exc:
                    self.connection = None
                    raise self.protocol_error(operation, "with more than %d bytes; refused" % exc.limit) from None
                except requests.exceptions.ContentDecodingError:
                    self.connection = None
                    raise self.protocol_error(operation, "with a body that cannot be decoded") from None
                except http.DeadlinePassed:
                    self.connection = None
                    raise self.unavailable(operation, "timed out", timed_out=True) from None
                except Exception as exc:  # noqa: BLE001 - narrowed right below
                    if not isinstance(exc, (requests.exceptions.RequestException, OSError)):
                        raise
                    self.connection = None  # a broken keep-alive socket must not be reused
                    if not _is_transient(exc):
                        if _is_tls(exc):
                            raise self.unavailable(operation, "TLS failure: %s%s" % (_reason(exc), self._trust_hint())) from None
                        raise self.unavailable(operation, _reason(exc)) from None
                    failure, timed_out, status = _reason(exc), _timed_out(exc), None
                else:
                    if response.status not in TRANSIENT_STATUSES:
                        return response
                    failure = ("HTTP %d %s" % (response.status, response.error or "")).strip()
                    # A gateway timeout means the server behind it may still be working.
                    timed_out, status = response.status == 504, response.status
                if not idempotent or attempt >= self.settings.retry.retries:
                    raise self.unavailable(operation, failure, timed_out=timed_out, http_code=status)
                pause = self.settings.retry.delay(attempt)
                if time.monotonic() + pause >= end:
                    raise self.unavailable(operation, failure, timed_out=timed_out, http_code=status)
                time.sleep(pause)
                attempt += 1

    # -- errors ---------------------------------------------------------------------------

    def where(self) -> str:
        """"<location>: <service> service at <URL>", the start of messages about this connection."""
        return "%s: %s service at %s" % (self.location_id, self.service, self.service_url or "(no endpoint)")

    def unavailable(self, operation: str, reason: str, timed_out: bool = False,
                    http_code: Optional[int] = None) -> ServiceUnavailableError:
        error = ServiceUnavailableError(
            "%s did not answer %s: %s" % (self.where(), operation, reason),
            location=self.location_id, operation=operation, remote_message=reason,
            code=http_code, http_code=http_code, driver=self.driver,
        )
        error.timed_out = timed_out
        return error

    def protocol_error(self, operation: str, problem: str, http_code: Optional[int] = None) -> ProtocolError:
        return ProtocolError(
            "%s answered %s %s" % (self.where(), operation, problem),
            location=self.location_id, operation=operation, http_code=http_code, driver=self.driver,
        )

    def invalid_credentials(self, operation: str, detail: str, http_code: int = 401) -> AuthenticationError:
        return AuthenticationError(
            "%s refused the credentials of this location for %s: %s" % (self.where(), operation, detail),
            location=self.location_id, operation=operation, code=http_code, remote_message=detail,
            http_code=http_code, driver=self.driver,
        )

    def _redirect_error(self, operation: str, redirect: http.Redirected) -> RedirectRefusedError:
        error = RedirectRefusedError(
            "%s answered %s with a redirect (HTTP %d) to %s; redirects are not followed: if the "
            "service has moved, change the endpoint in the configuration"
            % (self.where(), operation, redirect.status, redirect.target or "(no Location)"),
            location=self.location_id, operation=operation, code=redirect.status,
            http_code=redirect.status, driver=self.driver,
        )
        error.target = redirect.target
        return error

    # -- TLS ------------------------------------------------------------------------------

    def _trust_hint(self) -> str:
        if self.location.ca_certs_path:
            return " (checked against ca_certs_path %s)" % self.location.ca_certs_path
        return ("; if the site has its own CA, give its bundle: ca_certs_path in the configuration, "
                "ex_ca_certs_path= to the driver, or libcloud.security.CA_CERTS_PATH / SSL_CERT_FILE")

    def _tls_trust(self) -> Tuple[bool, Optional[str]]:
        """``(verify, CA bundle)``: the location's settings win, then ``libcloud.security``."""
        location = self.location
        if location.verify_ssl is False:
            self.settings.warn_once(
                (location.id, "verify_ssl"),
                "TLS certificates are not verified for location %s (verify_ssl = false in %s)"
                % (location.id, location.source),
            )
            return False, None
        if location.ca_certs_path:
            return True, location.ca_certs_path
        if location.verify_ssl is None and not libcloud.security.VERIFY_SSL_CERT:
            self.settings.warn_once(
                (location.id, "VERIFY_SSL_CERT"),
                "%s (location %s: libcloud.security.VERIFY_SSL_CERT is False)"
                % (libcloud.security.VERIFY_SSL_DISABLED_MSG, location.id),
            )
            return False, None
        return True, libcloud.security.CA_CERTS_PATH or None


def service_endpoint(location: LocationConfig, service: str) -> Tuple[str, str]:
    """The URL of ``service`` of ``location``, and how to log in there ("pswd", "cert" or "none").

    Raises the ConfigurationError that says what the location lacks.
    """
    if service == "marketplace":
        return location.require_endpoint("marketplace"), "none"
    mode = location.check_usable(service)
    if service == "compute":
        return authenticated_url(location.endpoint, mode), mode
    if service == "pdisk":
        return location.pdisk_endpoint.rstrip("/") + "/" + mode, mode
    raise ValueError("unknown service %r (one of %s)" % (service, ", ".join(SERVICES)))


def authenticated_url(endpoint: str, mode: str) -> str:
    """Insert ``/pswd`` or ``/cert`` before the last path segment (spec §2.1).

    ``https://h/one-proxy/xmlrpc`` becomes ``https://h/one-proxy/pswd/xmlrpc``. A trailing
    slash is dropped first, unlike the 14.06 client which then produced ``…/pswd/``.
    """
    scheme, netloc, path, query, fragment = urlsplit(endpoint)
    head, _, last = path.rstrip("/").rpartition("/")
    return urlunsplit((scheme, netloc, "%s/%s/%s" % (head, mode, last), query, fragment))


def _credentials(location: LocationConfig, service: str) -> Tuple[Optional[str], Optional[str]]:
    if service == "pdisk":
        return location.pdisk_username, location.pdisk_password
    return location.username, location.password


def _basic_authorization(username: Optional[str], password: Optional[str]) -> Optional[str]:
    if not username or password is None:
        return None
    token = base64.b64encode(("%s:%s" % (username, password)).encode("utf-8")).decode("ascii")
    return "Basic " + token


def _is_tls(exc: BaseException) -> bool:
    return isinstance(exc, (requests.exceptions.SSLError, ssl.SSLError))


def _is_transient(exc: BaseException) -> bool:
    return not _is_tls(exc) and isinstance(exc, _TRANSIENT_EXCEPTIONS)


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
        return str(getattr(inner, "reason", inner))
    if isinstance(exc, requests.exceptions.ConnectionError):
        inner = exc.args[0] if exc.args else exc
        reason = getattr(inner, "reason", None)
        text = str(reason if reason is not None else inner)
        # urllib3 prefixes the pool repr, which repeats the host: keep the OS reason only.
        return text.split(": ", 1)[-1] if "object at 0x" in text else text
    if isinstance(exc, requests.exceptions.RequestException):
        return "%s: %s" % (type(exc).__name__, _strip_urls(str(exc)))
    return str(exc) or type(exc).__name__


def _strip_urls(text: str) -> str:
    # requests' messages for bad URLs and proxies quote them; a proxy URL may hold a password.
    return " ".join("(an address)" if "://" in word else word for word in text.split())
