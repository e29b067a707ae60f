"""Exceptions raised by the StratusLab driver, as subclasses of Libcloud's own.

Code written for any Libcloud driver catches Libcloud's classes, so each error here *is*
the matching Libcloud exception as well: a refused login is an ``InvalidCredsError``, an
unreachable service a ``libcloud.common.types.ServiceUnavailableError``, a garbled answer
a ``MalformedResponseError``, and every error a service answered is a ``ProviderError``
(with ``http_code``) and a ``BaseHTTPError`` (with ``code``). Mistakes in arguments,
found before anything is sent, are ``ValueError`` or ``TypeError``; a failed
``deploy_node`` is Libcloud's ``DeploymentError``.

::

    StratusLabError (LibcloudError)          location, operation, code, remote_message
    +-- ConfigurationError (ValueError)      path, section, key, line
    |   +-- SSHKeyError                      a private key that cannot be used
    +-- ServiceError (ProviderError, BaseHTTPError)    http_code
        +-- AuthenticationError (InvalidCredsError)    the login was refused
        +-- AccessDeniedError (InvalidCredsError)      allowed in, not to do this
        +-- NotFoundError / InvalidStateError / InUseError
        +-- RedirectRefusedError             a 3xx answer: redirects are not followed
        +-- ServiceUnavailableError (libcloud ServiceUnavailableError)   timed_out
        +-- ProtocolError (MalformedResponseError)     an answer that does not parse
    +-- KeyPairNotFoundError (KeyPairDoesNotExistError), KeyPairExistsError (KeyPairError)
    +-- ScriptFailedError                    a deployment script exited non-zero
    NodeDeploymentError (DeploymentError)    phase, node; .value is the original exception

``str(error)``, ``error.value`` and ``error.message`` are the same text, which starts with
the location (the configuration section) and never contains credentials. ``code`` is the
service's own error code: the HTTP status for pdisk, the Marketplace and the proxy, or
OpenNebula's code (``0x0400`` NO_EXISTS...) for an OpenNebula error, which arrives in an
HTTP 200 answer (``http_code`` is always the HTTP status, or Libcloud's 503 when nothing
answered).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError, LibcloudError, MalformedResponseError, ProviderError
from libcloud.common.types import ServiceUnavailableError as LibcloudServiceUnavailableError
from libcloud.compute.types import DeploymentError, KeyPairDoesNotExistError, KeyPairError

if TYPE_CHECKING:
    from libcloud.common.base import BaseDriver
    from libcloud.compute.base import Node

__all__ = [
    "StratusLabError",
    "ConfigurationError",
    "SSHKeyError",
    "ServiceError",
    "AuthenticationError",
    "AccessDeniedError",
    "NotFoundError",
    "InvalidStateError",
    "InUseError",
    "RedirectRefusedError",
    "ServiceUnavailableError",
    "ProtocolError",
    "KeyPairNotFoundError",
    "KeyPairExistsError",
    "ScriptFailedError",
    "NodeDeploymentError",
]


class StratusLabError(LibcloudError):
    """Base class of the driver's errors about configuration and remote services.

    Attributes: ``location`` (configuration section), ``operation`` (the driver method
    or remote call), ``code`` and ``remote_message`` (what the service said, if anything).
    """

    def __init__(
        self,
        message: str,
        *,
        location: Optional[str] = None,
        operation: Optional[str] = None,
        code: Optional[int] = None,
        remote_message: Optional[str] = None,
        driver: Optional["BaseDriver"] = None,
    ) -> None:
        # Libcloud's constructors are not chained: with several Libcloud bases their
        # signatures differ (BaseHTTPError takes the code first), so the attributes
        # they define are set here and in ServiceError, once.
        Exception.__init__(self, message)
        self.value = message
        self.driver = driver
        self.location = location
        self.operation = operation
        self.code = code
        self.remote_message = remote_message

    @property
    def message(self) -> str:
        """The error's text (the same as ``value`` and ``str(error)``)."""
        return self.value

    def add_detail(self, detail: str) -> None:
        """Append ``detail`` to the message, keeping ``value``, ``args`` and ``str()`` equal."""
        self.value = self.value + detail
        self.args = (self.value,)

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return "<%s: %s>" % (type(self).__name__, self.value)


class ConfigurationError(StratusLabError, ValueError):
    """The user configuration file or a constructor argument is wrong.

    ``path``, ``section``, ``key`` and ``line`` say where, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Optional[str] = None,
        section: Optional[str] = None,
        key: Optional[str] = None,
        line: Optional[int] = None,
    ) -> None:
        super().__init__(message, location=section)
        self.path = path
        self.section = section
        self.key = key
        self.line = line


class SSHKeyError(ConfigurationError):
    """A private key could not be used: missing file, wrong passphrase, unsupported format.

    ``path`` is the key file (``None`` for a key given as text).
    """


class ServiceError(StratusLabError, ProviderError, BaseHTTPError):
    """A remote service answered with an error (an HTTP status or an OpenNebula error).

    ``http_code`` is the HTTP status of the answer (Libcloud's ``ProviderError``).
    """

    #: The HTTP status Libcloud's class of this error stands for, when it has one.
    default_http_code: Optional[int] = None

    def __init__(
        self,
        message: str,
        *,
        location: Optional[str] = None,
        operation: Optional[str] = None,
        code: Optional[int] = None,
        remote_message: Optional[str] = None,
        http_code: Optional[int] = None,
        driver: Optional["BaseDriver"] = None,
    ) -> None:
        super().__init__(message, location=location, operation=operation, code=code,
                         remote_message=remote_message, driver=driver)
        # None when no answer carried a status: ProviderError's annotation says int.
        self.http_code = http_code if http_code is not None else self.default_http_code  # type: ignore[assignment]
        self.headers = None  # BaseHTTPError's


class AuthenticationError(ServiceError, InvalidCredsError):
    """The service refused the location's credentials (HTTP 401, ONE AUTHENTICATION).

    A Libcloud ``InvalidCredsError`` too, so ``except InvalidCredsError`` catches it.
    """

    default_http_code = 401


class AccessDeniedError(ServiceError, InvalidCredsError):
    """The credentials do not allow this operation on this resource (HTTP 403, ONE AUTHORIZATION).

    A Libcloud ``InvalidCredsError`` too: Libcloud code treats authorization failures as
    credential problems, and ``except InvalidCredsError`` keeps catching them.
    """

    default_http_code = 403


class NotFoundError(ServiceError):
    """The VM, image or disk does not exist (ONE NO_EXISTS, HTTP 404)."""


class InvalidStateError(ServiceError):
    """The resource is in a state that does not allow the operation (ONE ACTION error)."""


class InUseError(ServiceError):
    """The resource is in use (a disk attached to a VM, HTTP 409)."""


class RedirectRefusedError(ServiceError):
    """The service answered with a redirect (3xx), which the driver never follows.

    Following it would send the request, credentials included, where the configuration
    does not say. ``target`` is the ``Location`` the service gave (without its query).
    """

    target: Optional[str] = None


class ServiceUnavailableError(ServiceError, LibcloudServiceUnavailableError):
    """The service could not be reached or did not answer in time (connection, TLS, timeout, 5xx).

    For a write (create, action, attach...) the outcome is unknown: the request may have
    been carried out before the answer was lost. ``timed_out`` is true when the request
    was sent and no answer came in time, so the server may still be working on it.
    Raised by ``create_node``, it also has ``client_token``: calling ``create_node`` again
    with ``ex_client_token`` set to it returns the VM if one was made, instead of another.
    """

    default_http_code = 503
    timed_out: bool = False
    client_token: Optional[str] = None


class ProtocolError(ServiceError, MalformedResponseError):
    """The service answered something that does not follow its protocol (garbage, bad XML).

    ``body`` (Libcloud's attribute) is left empty: an answer may hold credentials or be large.
    ``client_token`` is set as for :class:`ServiceUnavailableError`.
    """

    body = None
    client_token: Optional[str] = None


class KeyPairNotFoundError(StratusLabError, KeyPairDoesNotExistError):
    """No key pair of that ``name`` in the driver's key store (Libcloud's KeyPairDoesNotExistError)."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message, operation="get_key_pair")
        self.name = name


class KeyPairExistsError(StratusLabError, KeyPairError):
    """A key pair of that ``name`` exists already: it is never overwritten."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message, operation="create_key_pair")
        self.name = name


class ScriptFailedError(StratusLabError):
    """A deployment script exited with a non-zero status (``exit_status``, ``stdout``, ``stderr``)."""

    def __init__(self, message: str, *, exit_status: Optional[int], stdout: Optional[str],
                 stderr: Optional[str]) -> None:
        super().__init__(message, operation="deploy_node")
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr


class NodeDeploymentError(DeploymentError):
    """Libcloud's :class:`~libcloud.compute.types.DeploymentError`, saying what failed.

    As in Libcloud, ``value`` and ``original_error`` are the exception that made the
    deployment fail (a :class:`ScriptFailedError` for a script that exited with a non-zero
    status, ``TimeoutError`` for a node that never ran) and ``node`` is the node, **left
    running**. ``str()`` and ``message`` are a readable sentence naming the phase:
    ``phase`` is ``"wait"``, ``"connect"``, ``"auth"`` or ``"step"``. ``host``/``port`` say
    where SSH was tried; for a failed script, ``exit_status``, ``stdout`` and ``stderr``
    hold its full result.
    """

    def __init__(
        self,
        node: "Node",
        message: str,
        *,
        phase: str,
        original_exception: BaseException,
        driver: Optional["BaseDriver"] = None,
        host: Optional[str] = None,
        port: Optional[int] = None,
        exit_status: Optional[int] = None,
        stdout: Optional[str] = None,
        stderr: Optional[str] = None,
    ) -> None:
        super().__init__(node=node, original_exception=original_exception, driver=driver)
        Exception.__init__(self, message)
        self.message = message
        self.phase = phase
        self.host = host
        self.port = port
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return "<NodeDeploymentError: node=%s, phase=%s, error=%s>" % (
            getattr(self.node, "id", None), self.phase, self.message,
        )
