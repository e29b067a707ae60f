"""Ctrl-C that is never lost by the command line.

Python turns SIGINT into ``KeyboardInterrupt`` in whatever Python code the main thread runs
when the signal arrives. When that is a weakref callback or a ``__del__`` (the garbage
collector runs them at any moment), the exception is printed as "Exception ignored" and the
program goes on as if nothing had happened: the demo then ran to its end after a Ctrl-C.
While :func:`catching_interrupts` is active, SIGINT still raises at once, and is also
remembered, so that waits (which call :func:`raise_if_interrupted` at each poll) and the
demo's steps end even when that first exception was swallowed.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator, Optional

__all__ = ["catching_interrupts", "forget_interrupt", "raise_if_interrupted"]

_requested = threading.Event()


def _on_sigint(signum: int, frame: Optional[FrameType]) -> None:
    _requested.set()
    raise KeyboardInterrupt


@contextmanager
def catching_interrupts() -> Iterator[None]:
    """Remember every Ctrl-C while the block runs (main thread only; elsewhere, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()


def raise_if_interrupted() -> None:
    """Raise the ``KeyboardInterrupt`` of a Ctrl-C that nothing has handled yet."""
    if _requested.is_set():
        _requested.clear()
        raise KeyboardInterrupt


def forget_interrupt() -> None:
    """The Ctrl-C was handled (for clean-up code that must not be interrupted by it again)."""
    _requested.clear()
