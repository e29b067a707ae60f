"""The one deadline of a driver call, wherever its work runs.

A driver method may make several remote calls (create_node: image, allocate, the lookup of
a lost answer, the new VM) and may hand some to worker threads (list_nodes asks every
location at once). The caller asked for one timeout, so all of that shares one deadline.
It lives in a :class:`contextvars.ContextVar`: the transport reads it for every request,
and work handed to a worker pool through :func:`run_in` keeps it.

requests bounds each socket operation, not a request: a server that sends one header line
every few seconds would hold a call forever. :class:`SocketWatch` closes the socket of a
request still waiting for its status line and headers when the deadline passes.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional, Tuple, TypeVar

__all__ = ["bounded", "current", "remaining", "run_in", "SocketWatch", "WATCH"]

_DEADLINE: "contextvars.ContextVar[Optional[float]]" = contextvars.ContextVar(
    "stratuslab_lc_plugin_deadline", default=None
)

T = TypeVar("T")


@contextmanager
def bounded(seconds: float) -> Iterator[float]:
    """Make everything inside the block end within ``seconds`` (``time.monotonic()`` based).

    Nested blocks keep the earliest deadline. Yields the deadline in force.
    """
    outer = _DEADLINE.get()
    deadline = time.monotonic() + seconds
    if outer is not None and outer <= deadline:
        yield outer
        return
    token = _DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _DEADLINE.reset(token)


def current() -> Optional[float]:
    """The deadline in force, or None outside any :func:`bounded` block."""
    return _DEADLINE.get()


def remaining() -> Optional[float]:
    """Seconds left before the deadline in force (may be negative), or None."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def run_in(context: contextvars.Context, function: Callable[..., T]) -> Callable[..., T]:
    """``function`` run inside ``context`` (a :func:`contextvars.copy_context`), for a worker pool.

    ``ThreadPoolExecutor.submit`` does not carry the caller's context to the worker.
    """

    def call(*args: Any, **kwargs: Any) -> T:
        return context.run(function, *args, **kwargs)

    return call


class _Watched:
    __slots__ = ("owner", "done", "fired")

    def __init__(self, owner: Any) -> None:
        self.owner = owner  # an object with a ``sock`` attribute (a urllib3 connection)
        self.done = False
        self.fired = False


class SocketWatch:
    """One daemon thread that shuts down the sockets of requests whose deadline passed.

    A blocked read on a socket that another thread shuts down returns at once, so the
    waiting request fails instead of waiting for the next byte. ``watching(owner)`` reads
    ``owner.sock`` only when the deadline fires, so it also covers a connection still
    being set up (TCP, then TLS). The thread starts on first use.
    """

    def __init__(self) -> None:
        self._heap: List[Tuple[float, int, _Watched]] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition(threading.Lock())
        self._thread: Optional[threading.Thread] = None

    @contextmanager
    def watching(self, owner: Any, deadline: Optional[float] = None) -> Iterator[_Watched]:
        """Watch ``owner``'s socket until the block ends; ``fired`` says whether it was shut down."""
        deadline = current() if deadline is None else deadline
        entry = _Watched(owner)
        if deadline is None:
            yield entry
            return
        with self._wakeup:
            heapq.heappush(self._heap, (deadline, next(self._order), entry))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="stratuslab-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is entry:
                self._wakeup.notify()
        try:
            yield entry
        finally:
            with self._wakeup:
                entry.done = True

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._heap:
                    self._wakeup.wait()
                deadline, _, entry = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0 and not entry.done:
                    self._wakeup.wait(delay)
                    continue
                heapq.heappop(self._heap)
                if entry.done:
                    continue
                # Under the lock: the request cannot finish (and its socket go back to a
                # keep-alive pool) between the check above and the shutdown.
                entry.fired = True
                sock = getattr(entry.owner, "sock", None)
                if sock is not None:
                    try:
                        # socket.socket's own shutdown, also for an SSLSocket: SSLSocket's
                        # would drop its TLS state under the thread that is reading.
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                    except (OSError, TypeError):
                        pass  # already closed, or not a real socket


#: The process's watch (one thread for every driver).
WATCH = SocketWatch()
