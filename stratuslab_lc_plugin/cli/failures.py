"""How a command fails: an exit status, a line for people and, with ``--json``, an object for scripts.

Every error a command meets ends here, so the rules live in one place:

* exit status 2 for usage and configuration mistakes (and a missing package), 1 for remote
  failures, 130 for Ctrl-C;
* on stderr, ``PROG: error: MESSAGE`` on one line, then ``PROG: hint: ...`` when there is
  something to do about it (create a configuration, remove a node left running);
* with ``--json``, also one object on stdout: ``error``, ``type`` and ``location`` always
  (``location`` is null when no location is involved), ``hint``, ``node`` and ``cleanup``
  when they apply.

Anything else (a bug, such as a name this package fails to import) is not caught: it
shows its traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Dict, Optional

from stratuslab_lc_plugin.cli.console import print_json

__all__ = [
    "EXIT_INTERRUPTED", "EXIT_REMOTE", "EXIT_USAGE",
    "Advised", "CommandError", "Failure", "describe", "missing_package", "report",
]

EXIT_REMOTE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Distributions whose name differs from the module they provide.
_DISTRIBUTIONS = {"libcloud": "apache-libcloud"}


class CommandError(Exception):
    """A failure the command line finds itself: bad usage, a missing package.

    ``usage`` (the help or usage text of the parser concerned) is shown to people before
    the error line; ``prog`` is that parser's program name.
    """

    def __init__(self, message: str, *, kind: str = "UsageError", exit_status: int = EXIT_USAGE,
                 hint: Optional[str] = None, usage: Optional[str] = None, prog: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.exit_status = exit_status
        self.hint = hint
        self.usage = usage
        self.prog = prog


class Advised(Exception):
    """An error of the driver with what the command line can add: a hint, the node left behind."""

    def __init__(self, cause: BaseException, *, hint: Optional[str] = None,
                 node: Optional[Dict[str, Any]] = None, cleanup: Optional[str] = None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.hint = hint
        self.node = node
        self.cleanup = cleanup


@dataclass
class Failure:
    """What is reported about one error."""

    message: str
    type: str
    exit_status: int
    location: Optional[str] = None
    hint: Optional[str] = None
    node: Optional[Dict[str, Any]] = None
    cleanup: Optional[str] = None
    usage: Optional[str] = None
    prog: Optional[str] = None

    def as_json(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"error": self.message, "type": self.type, "location": self.location}
        for key in ("hint", "node", "cleanup"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


def missing_package(exc: ImportError, needed_for: str) -> CommandError:
    """The error for a module that cannot be imported, naming the package to install."""
    module = (exc.name or "").split(".")[0] or "a required module"
    package = _DISTRIBUTIONS.get(module, module)
    return CommandError(
        "the Python package %s is not installed (%s needs it)" % (package, needed_for),
        kind="MissingPackage", hint="pip install %s" % package,
    )


def describe(exc: BaseException) -> Optional[Failure]:
    """The failure to report for ``exc``, or None when it is not an error of a command (a bug)."""
    if isinstance(exc, Advised):
        failure = describe(exc.cause)
        if failure is not None:
            failure.hint = exc.hint or failure.hint
            failure.node, failure.cleanup = exc.node, exc.cleanup
        return failure
    if isinstance(exc, CommandError):
        return Failure(exc.message, exc.kind, exc.exit_status, hint=exc.hint, usage=exc.usage, prog=exc.prog)
    if isinstance(exc, KeyboardInterrupt):
        return Failure("interrupted", "KeyboardInterrupt", EXIT_INTERRUPTED)
    if isinstance(exc, ModuleNotFoundError) and _is_third_party(exc.name):
        return describe(missing_package(exc, "this command"))
    if isinstance(exc, (ValueError, TypeError)):  # ConfigurationError is a ValueError too
        status = EXIT_USAGE
    elif isinstance(exc, OSError) or _is_libcloud_error(exc):
        status = EXIT_REMOTE
    else:
        return None
    return Failure(_text(exc), type(exc).__name__, status, location=_location(exc))


def report(failure: Failure, prog: str, as_json: bool) -> int:
    """Print ``failure`` (stderr for people, stdout too with ``--json``); return its exit status."""
    if failure.usage and not as_json:
        sys.stderr.write(failure.usage if failure.usage.endswith("\n") else failure.usage + "\n")
    name = failure.prog or prog
    print("%s: error: %s" % (name, " ".join(failure.message.splitlines())), file=sys.stderr)
    if failure.hint:
        print("%s: hint: %s" % (name, failure.hint), file=sys.stderr)
    if as_json:
        print_json(failure.as_json())
    return failure.exit_status


def _is_third_party(module: Optional[str]) -> bool:
    # A module of this package that cannot be imported is a bug to show, not a package to install.
    top = (module or "").split(".")[0]
    return bool(top) and top != __name__.split(".")[0]


def _is_libcloud_error(exc: BaseException) -> bool:
    if "libcloud" not in sys.modules:  # nothing from Libcloud can have been raised
        return False
    from libcloud.common.types import LibcloudError

    return isinstance(exc, LibcloudError)


def _text(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    text = str(exc)
    value = getattr(exc, "value", None)
    # Libcloud's own errors print as "<LibcloudError in <driver> 'text'>": keep the text.
    if value is not None and (not text or text.startswith("<")):
        return str(value)
    return text or type(exc).__name__


def _location(exc: BaseException) -> Optional[str]:
    location = getattr(exc, "location", None)
    if location is None:
        node = getattr(exc, "node", None)
        location = (getattr(node, "extra", None) or {}).get("location")
    return location if isinstance(location, str) else None
