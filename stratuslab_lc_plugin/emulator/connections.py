"""The HTTPS front's bounds, like those of the nginx in front of a real site.

- At most ``max_connections`` connections are served at a time. A connection beyond that
  makes room by closing the oldest *idle* ones: connections still in their TLS handshake or
  waiting for a request (nginx reuses such connections the same way when it runs out). When
  every connection is inside a request, the newcomer is answered 503; at most ``overflow``
  newcomers get that answer at a time, and any more are closed at once.
- A request must arrive whole within ``request_timeout`` seconds of its connection being
  ready for it: TLS handshake or keep-alive wait, request line, headers and body. A watchdog
  closes connections past their deadline, so a client dripping bytes holds a thread for that
  long at most. Serving the request and writing the answer are not bounded here (the
  socket timeout bounds each write).

Connections are closed with ``shutdown()`` on their file descriptor, under the registry's
lock: a connection is released (under that lock) before its socket is closed, and the
descriptor must still name the socket it was admitted with (same inode), so a shutdown can
never reach another connection's socket.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

__all__ = ["Connection", "ConnectionLimits", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_REQUEST_TIMEOUT"]

DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_REQUEST_TIMEOUT = 60.0   # nginx's client_header_timeout
_OVERFLOW_TIMEOUT = 10.0         # to read the request a 503 answers
_WATCH_INTERVAL = 0.25


@dataclass(eq=False)
class Connection:
    """One accepted connection, as the limits see it."""

    fd: int
    inode: int                  # of the socket: the descriptor still names it
    deadline: Optional[float]   # monotonic time by which the current request must be read
    since: float                # when it last became idle
    busy: bool = False          # inside a request (its line has arrived)
    overflow: bool = False      # admitted only to be answered 503
    shut: bool = False          # shut down by the limits


class ConnectionLimits:
    """The registry of open connections of one front, with its watchdog thread."""

    def __init__(self, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                 overflow: Optional[int] = None) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if not request_timeout > 0:
            raise ValueError("request_timeout must be > 0")
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.overflow = overflow if overflow is not None else max(8, max_connections // 4)
        self._lock = threading.Lock()
        self._open: Dict[int, Connection] = {}   # by id(), in admission order
        self._stopping = threading.Event()
        self._watchdog: Optional[threading.Thread] = None

    # -- the accept thread -------------------------------------------------------------

    def admit(self, sock: socket.socket) -> Optional[Connection]:
        """Register a new connection, making room if needed; None: close it at once."""
        now = time.monotonic()
        with self._lock:
            served = [c for c in self._open.values() if not c.overflow and not c.shut]
            excess = len(served) - self.max_connections + 1
            if excess > 0:
                idle = sorted((c for c in served if not c.busy), key=lambda c: c.since)
                for victim in idle[:excess]:
                    self._shut(victim)
                excess -= min(excess, len(idle))
            if excess > 0:
                waiting = sum(1 for c in self._open.values() if c.overflow and not c.shut)
                if waiting >= self.overflow:
                    return None
                connection = Connection(sock.fileno(), _inode(sock.fileno()),
                                        now + min(self.request_timeout, _OVERFLOW_TIMEOUT),
                                        now, overflow=True)
            else:
                connection = Connection(sock.fileno(), _inode(sock.fileno()),
                                        now + self.request_timeout, now)
            self._open[id(connection)] = connection
            return connection

    # -- a connection's own thread -----------------------------------------------------

    def waiting(self, connection: Connection) -> None:
        """Ready for its next request: idle, with a new deadline (the first one runs from
        admission, and covers the TLS handshake)."""
        with self._lock:
            connection.busy = False
            if connection.deadline is None:
                connection.since = time.monotonic()
                connection.deadline = connection.since + self.request_timeout

    def reading(self, connection: Connection) -> None:
        """Its request line arrived: busy; the deadline still runs."""
        with self._lock:
            connection.busy = True

    def read(self, connection: Connection) -> None:
        """The whole request arrived: no deadline while it is served."""
        with self._lock:
            connection.deadline = None

    def release(self, connection: Connection) -> None:
        """Forget the connection; call before closing its socket."""
        with self._lock:
            self._open.pop(id(connection), None)
            connection.shut = True

    # -- the front ---------------------------------------------------------------------

    def counts(self) -> Dict[str, int]:
        """Open connections: ``busy``, ``idle`` and ``overflow`` (being answered 503)."""
        with self._lock:
            live = [c for c in self._open.values() if not c.shut]
        return {"busy": sum(1 for c in live if c.busy and not c.overflow),
                "idle": sum(1 for c in live if not c.busy and not c.overflow),
                "overflow": sum(1 for c in live if c.overflow)}

    def start(self) -> None:
        self._watchdog = threading.Thread(target=self._watch, name="stratuslab-front-deadlines",
                                          daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        """Stop the watchdog and shut every open connection down."""
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.join()
            self._watchdog = None
        with self._lock:
            for connection in list(self._open.values()):
                self._shut(connection)

    # -- internals -----------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.wait(_WATCH_INTERVAL):
            now = time.monotonic()
            with self._lock:
                late: List[Connection] = [c for c in self._open.values()
                                          if not c.shut and c.deadline is not None
                                          and c.deadline < now]
                for connection in late:
                    self._shut(connection)

    @staticmethod
    def _shut(connection: Connection) -> None:
        """Called with the lock held, while the descriptor is still the connection's."""
        connection.shut = True
        try:
            if _inode(connection.fd) != connection.inode:
                return  # closed meanwhile, and the number reused: not ours any more
            sock = socket.socket(fileno=connection.fd)
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked reading from it
        except OSError:
            pass
        finally:
            sock.detach()


def _inode(fd: int) -> int:
    return os.fstat(fd).st_ino
