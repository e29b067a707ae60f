"""The local cloud's state directory: only the cloud's own files, private, and nobody else's.

A state directory is whatever directory a user names (``cloud serve --state-dir DIR``), so
the cloud must never take a user's file for its own. A marker file in the directory lists
every entry the cloud created there, with a SHA-256 digest of each file whose content it
fixed (the published configuration, the CA certificate, the key pair). The cloud:

- refuses a directory that holds any entry the marker does not list, or a listed file whose
  content changed since the cloud wrote it (a non-empty directory without a marker is
  refused too), and changes nothing in it;
- removes only files it listed, and only while their content is still what it wrote;
- creates files 0600 and directories 0700 whatever the umask, inside a directory of any
  mode (``cloud.db`` holds passwords); a directory it creates itself is 0700;
- holds an exclusive lock on the directory while it runs, so two clouds never share one.

Files are written through the listed ``tmp`` directory and renamed into place, so a reader
never sees half a file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from typing import Dict, List, Optional

__all__ = ["StateDir", "StateDirError", "MARKER", "write_private", "private_dir"]

MARKER = ".stratuslab-local-cloud"
_WRITER = "stratuslab-lc-plugin local cloud"
_TMP = "tmp"
_SHOWN = 5  # foreign entries named in an error


class StateDirError(ValueError):
    """The directory cannot be the cloud's: the message says why and what to do."""


def write_private(path: str, data: bytes, tmp_dir: Optional[str] = None) -> None:
    """Write a file atomically (a temporary file in ``tmp_dir``, default the file's own
    directory, renamed into place), 0600 whatever the umask."""
    fd, tmp = tempfile.mkstemp(dir=tmp_dir or os.path.dirname(path),
                               prefix=os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def private_dir(path: str) -> str:
    """``path`` as a directory (created when missing), 0700 whatever the umask."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _digest(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


class StateDir:
    """The cloud's state directory; ``StateDir(None)`` is a new temporary one.

    Raises :class:`StateDirError` before touching anything when the directory is not the
    cloud's own (see the module docstring).
    """

    def __init__(self, path: Optional[str]) -> None:
        self.temporary = path is None
        self._lock_fd: Optional[int] = None
        if path is None:
            self.path = tempfile.mkdtemp(prefix="stratuslab-cloud-")
            self._entries: Dict[str, Optional[str]] = {}
            self._adopt()
            return
        self.path = os.path.abspath(path)
        if os.path.lexists(self.path) and not os.path.isdir(self.path):
            raise StateDirError("state directory %s is not a directory" % self.path)
        created = not os.path.exists(self.path)
        if created:
            os.makedirs(self.path)
            os.chmod(self.path, 0o700)
        self._lock()
        try:
            if created or not os.listdir(self.path):
                self._entries = {}
                self._adopt()
            else:
                self._entries = self._check()
        except BaseException:
            self.close()
            raise

    # -- what callers use ------------------------------------------------------------------

    def join(self, name: str) -> str:
        return os.path.join(self.path, name)

    def private_dir(self, name: str) -> str:
        """The listed directory ``name`` (created 0700 when missing)."""
        self._claim(name, None)
        return private_dir(self.join(name))

    def private_file(self, name: str, *companions: str) -> str:
        """The listed file ``name`` whose content the caller manages (a database), created
        empty and 0600 when missing; ``companions`` are files it may create beside it."""
        for companion in companions:
            self._claim(companion, None)
        self._claim(name, None)
        path = self.join(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        return path

    def write(self, name: str, data: bytes) -> str:
        """Write the listed file ``name`` (0600, atomically), recording its digest."""
        self._claim(name, hashlib.sha256(data).hexdigest())
        path = self.join(name)
        self._replace(path, data)
        return path

    def holds(self, name: str) -> bool:
        """True if ``name`` exists and is the cloud's own, with the content it wrote."""
        digest = self._entries.get(name)
        return (name in self._entries and os.path.exists(self.join(name))
                and (digest is None or _digest(self.join(name)) == digest))

    def withdraw(self, name: str) -> None:
        """Remove the listed file ``name`` if it still holds what the cloud wrote."""
        if name not in self._entries:
            return
        path = self.join(name)
        recorded = self._entries[name]
        if recorded is not None and _digest(path) not in (recorded, None):
            return  # changed by someone else since: theirs now
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Release the directory; a temporary one is removed with everything in it."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)

    # -- internals ---------------------------------------------------------------------------

    def _lock(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateDirError("state directory %s is in use by another local cloud"
                                    % self.path) from None
            raise
        self._lock_fd = fd

    def _adopt(self) -> None:
        """Make an empty directory the cloud's: the marker first, then its tmp directory."""
        if self._lock_fd is None:
            self._lock()
        self._entries[_TMP] = None
        fd = os.open(self.join(MARKER), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            json.dump(self._marker(), handle)
        private_dir(self.join(_TMP))

    def _marker(self) -> dict:
        return {"written-by": _WRITER, "entries": dict(sorted(self._entries.items()))}

    def _check(self) -> Dict[str, Optional[str]]:
        try:
            with open(self.join(MARKER)) as handle:
                marker = json.load(handle)
            entries = marker["entries"]
            if marker.get("written-by") != _WRITER or not isinstance(entries, dict):
                raise ValueError("not the cloud's marker")
        except FileNotFoundError:
            raise self._foreign(sorted(os.listdir(self.path)), "it has no %s marker" % MARKER) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateDirError("state directory %s: its marker %s is unreadable (%s); the "
                                "cloud leaves the directory alone" % (self.path, MARKER, exc)) from None
        foreign: List[str] = [n for n in sorted(os.listdir(self.path))
                              if n != MARKER and n not in entries]
        if foreign:
            raise self._foreign(foreign, "the local cloud did not write them")
        changed = [n for n, digest in sorted(entries.items())
                   if os.path.islink(self.join(n))  # the cloud writes no links: not its own
                   or digest is not None and _digest(self.join(n)) not in (digest, None)]
        if changed:
            raise StateDirError(
                "state directory %s: %s changed since the local cloud wrote %s; the cloud "
                "leaves %s alone: move %s away or use another directory"
                % (self.path, ", ".join(changed), "them" if len(changed) > 1 else "it",
                   "them" if len(changed) > 1 else "it", "them" if len(changed) > 1 else "it"))
        return dict(entries)

    def _foreign(self, names: List[str], why: str) -> StateDirError:
        shown = ", ".join(names[:_SHOWN]) + (" and %d more" % (len(names) - _SHOWN)
                                              if len(names) > _SHOWN else "")
        return StateDirError("state directory %s holds files the local cloud must not touch "
                             "(%s: %s); give it an empty or new directory"
                             % (self.path, why, shown))

    def _claim(self, name: str, digest: Optional[str]) -> None:
        if os.sep in name or name in ("", ".", "..", MARKER):
            raise ValueError("not an entry name: %r" % name)
        if self._entries.get(name, "unlisted") == digest:
            return
        self._entries[name] = digest
        self._replace(self.join(MARKER), json.dumps(self._marker()).encode("utf-8"))

    def _replace(self, path: str, data: bytes) -> None:
        write_private(path, data, self.join(_TMP))
