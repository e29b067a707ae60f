"""Exceptions raised by the StratusLab driver.

Every error a caller can meet is a subclass of :class:`StratusLabError`, which is a
Libcloud :class:`~libcloud.common.types.LibcloudError`, so code written for any Libcloud
driver keeps working. Bad credentials raise :class:`AuthenticationError`, which is also
Libcloud's own :class:`~libcloud.common.types.InvalidCredsError`, as every Libcloud
driver raises. Argument mistakes found before any remote call are ``ValueError`` or
``TypeError``.

Each error carries what is needed to act on it without parsing the message: the location
(configuration section) it happened in, the operation, and the remote code and message
when the remote service gave them. Messages never contain credentials.

::

    StratusLabError (LibcloudError)
    +-- ConfigurationError (also ValueError)     path, section, key, line
    +-- AuthenticationError (also InvalidCredsError)
    +-- ServiceError                             code, remote_message
        +-- ServiceUnavailableError              timed_out; not reached, no answer, 502/503/504
        +-- ProtocolError                        an answer that does not parse, or is too large
        +-- NotFoundError / InvalidStateError / InUseError
        +-- AccessDeniedError (also InvalidCredsError)
"""

from __future__ import annotations

from typing import Optional

from libcloud.common.types import InvalidCredsError, LibcloudError

__all__ = [
    "StratusLabError",
    "ConfigurationError",
    "AuthenticationError",
    "ServiceError",
    "ServiceUnavailableError",
    "ProtocolError",
    "NotFoundError",
    "InvalidStateError",
    "InUseError",
    "AccessDeniedError",
]


class StratusLabError(LibcloudError):
    """Base class of every error of this driver."""

    def __init__(
        self,
        message: str,
        *,
        location: Optional[str] = None,
        operation: Optional[str] = None,
        code: Optional[object] = None,
        remote_message: Optional[str] = None,
        driver: object = None,
    ) -> None:
        super().__init__(message, driver=driver)
        self.message = message
        self.location = location
        self.operation = operation
        self.code = code
        self.remote_message = remote_message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return "<%s: %s>" % (type(self).__name__, self.message)


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


class AuthenticationError(StratusLabError, InvalidCredsError):
    """The service refused the location's credentials (HTTP 401, ONE AUTHENTICATION).

    It is a Libcloud ``InvalidCredsError`` too, so ``except InvalidCredsError`` catches it.
    """


class ServiceError(StratusLabError):
    """A remote service answered with an error (HTTP status or OpenNebula error triple)."""


class ServiceUnavailableError(ServiceError):
    """The service could not be reached or did not answer in time (connection, TLS, timeout, 5xx).

    For a write (create, action, attach...) the outcome is unknown: the request may have
    been carried out before the answer was lost. ``timed_out`` is true when the request
    was sent and no answer came in time, so the server may still be working on it.
    Raised by ``create_node``, it also has ``client_token``: calling ``create_node`` again
    with ``ex_client_token`` set to it returns the VM if one was made, instead of another.
    """

    def __init__(self, message: str, *, timed_out: bool = False, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.timed_out = timed_out


class ProtocolError(ServiceError):
    """The service answered something that does not follow its protocol (garbage, bad XML)."""


class NotFoundError(ServiceError):
    """The VM, image or disk does not exist (ONE NO_EXISTS, HTTP 404)."""


class InvalidStateError(ServiceError):
    """The resource is in a state that does not allow the operation (ONE ACTION error)."""


class InUseError(ServiceError):
    """The resource is in use (a disk attached to a VM, HTTP 409)."""


class AccessDeniedError(ServiceError, InvalidCredsError):
    """The credentials do not allow this operation on this resource (HTTP 403, ONE AUTHORIZATION).

    A Libcloud ``InvalidCredsError`` too: Libcloud code treats authorization failures as
    credential problems, and ``except InvalidCredsError`` keeps catching them.
    """

    def __init__(self, message: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.http_code = 403  # InvalidCredsError says 401
