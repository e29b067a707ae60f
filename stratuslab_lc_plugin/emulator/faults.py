"""Fault injection for the local cloud: lost answers, proxy errors, slow and garbled answers.

Real sites fail in a few typical ways: a connection drops before or after the server did
the work, a proxy answers 502 or 503, a server is slow, or an answer arrives garbled. A
driver must survive each of them without duplicating resources, and the only way to prove
it is to make them happen on demand. A fault is written ``TARGET=KIND[:COUNT]``:

TARGET
    an XML-RPC method (``one.vm.allocate``, ``one.vmpool.info``...), a whole service
    (``one``, ``pdisk``, ``marketplace``), or a pdisk method and route below ``/pdisk/pswd``
    or ``/pdisk/cert`` (``POST /disks``, ``DELETE /disks/*/mounts/*``; ``*`` stands for
    one path segment, a trailing slash does not matter, method ``*`` for any method).
KIND
    ``drop-before`` (close the connection without answering; the service does nothing),
    ``drop-after`` (the service does the work, then the connection closes without an
    answer), ``http-500`` / ``http-502`` / ``http-503`` (that status instead of the
    service's answer; the service does nothing), ``delay-SECONDS`` (wait, then serve
    normally), ``malformed`` (the service does the work, the answer's body is replaced by
    bytes that parse neither as XML nor as JSON) and ``one-error`` (an OpenNebula
    ``[false, message, INTERNAL]`` triple instead of the answer; ONE targets only).
COUNT
    how many matching requests the fault hits; without it, every one.

This module only parses faults and counts them (thread-safe); the HTTPS front
(:mod:`.front`) asks :meth:`FaultSet.take` once per authenticated request and acts.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Union

__all__ = ["Fault", "FaultSet", "KINDS", "SERVICES", "GARBLED_BODY", "rpc_method_name"]

#: Services a fault can name as a whole (the front's mounts carry these names).
SERVICES = ("one", "pdisk", "marketplace")
#: Fault kinds; ``delay-SECONDS`` takes a number of seconds.
KINDS = ("drop-before", "drop-after", "http-500", "http-502", "http-503", "delay-SECONDS",
         "malformed", "one-error")
#: What ``malformed`` answers: neither XML nor JSON nor an XML-RPC response.
GARBLED_BODY = b"\x00\x1b[garbled answer injected by the local cloud <<< & {{{ ]]>"

_RPC_METHOD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+")
_ROUTE_METHOD = re.compile(r"\*|[A-Z]+")
_METHOD_NAME = re.compile(rb"<methodName>\s*([^<\s]+)\s*</methodName>")
_FIXED_KINDS = ("drop-before", "drop-after", "http-500", "http-502", "http-503", "malformed",
                "one-error")


def rpc_method_name(body: bytes) -> Optional[str]:
    """The ``methodName`` of an XML-RPC call body, without parsing the whole document."""
    match = _METHOD_NAME.search(body[:4096])
    return match.group(1).decode("ascii", "replace") if match else None


@dataclass
class Fault:
    """One fault rule. ``count`` None means every matching request; ``hits`` counts them."""

    target: str
    kind: str
    count: Optional[int] = None
    seconds: float = 0.0
    hits: int = 0

    @classmethod
    def parse(cls, spec: str) -> "Fault":
        """Parse ``TARGET=KIND[:COUNT]``; ValueError says what is wrong."""
        target, sep, rest = spec.partition("=")
        target = " ".join(target.split())
        if not sep or not target or not rest.strip():
            raise ValueError("fault %r is not TARGET=KIND[:COUNT]" % (spec,))
        kind, colon, count_text = rest.strip().partition(":")
        count: Optional[int] = None
        if colon:
            if not count_text.strip().isdigit() or int(count_text) < 1:
                raise ValueError("fault %r: COUNT must be a positive whole number" % (spec,))
            count = int(count_text)
        seconds = 0.0
        if kind.startswith("delay-"):
            try:
                seconds = float(kind[len("delay-"):])
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds < 86400:
                raise ValueError("fault %r: delay-SECONDS needs a number of seconds" % (spec,))
            kind = "delay"
        elif kind not in _FIXED_KINDS:
            raise ValueError("fault %r: KIND must be one of %s" % (spec, ", ".join(KINDS)))
        _check_target(spec, target)
        if kind == "one-error" and not cls._is_one_target(target):
            raise ValueError("fault %r: one-error applies to ONE targets (one, one.*) only" % (spec,))
        return cls(target, kind, count, seconds)

    @staticmethod
    def _is_one_target(target: str) -> bool:
        return target == "one" or (" " not in target and target not in SERVICES)

    @property
    def spec(self) -> str:
        kind = "delay-%g" % self.seconds if self.kind == "delay" else self.kind
        return "%s=%s%s" % (self.target, kind, "" if self.count is None else ":%d" % self.count)

    @property
    def remaining(self) -> Optional[int]:
        """How many more requests it hits (None: unlimited)."""
        return None if self.count is None else max(0, self.count - self.hits)

    def matches(self, service: Optional[str], method: str, path: str, rpc_method: Optional[str]) -> bool:
        target = self.target
        if target in SERVICES:
            return service == target
        if " " in target:
            if service != "pdisk":
                return False
            want_method, _, want_path = target.partition(" ")
            if want_method not in ("*", method):
                return False
            return _route_matches(want_path, path)
        return service == "one" and rpc_method == target

    def __str__(self) -> str:
        return self.spec


def _check_target(spec: str, target: str) -> None:
    if target in SERVICES:
        return
    if " " in target:
        method, _, path = target.partition(" ")
        if not _ROUTE_METHOD.fullmatch(method) or not path.startswith("/") or " " in path:
            raise ValueError("fault %r: a route target is 'METHOD /path' (e.g. 'POST /disks')" % (spec,))
        return
    if not _RPC_METHOD.fullmatch(target):
        raise ValueError(
            "fault %r: TARGET must be an XML-RPC method (one.vm.allocate...), one of %s, "
            "or a pdisk 'METHOD /route'" % (spec, ", ".join(SERVICES)))


def _route_matches(pattern: str, path: str) -> bool:
    want = pattern.strip("/").split("/")
    have = path.strip("/").split("/")
    return len(want) == len(have) and all(w == "*" or w == h for w, h in zip(want, have))


class FaultSet:
    """The active faults of a cloud; safe to change while the cloud serves.

    The first fault (in the order added) that matches a request and has hits left is
    the one applied; a fault whose count is used up stays listed (with its ``hits``)
    until :meth:`remove` or :meth:`clear`.
    """

    def __init__(self, faults: Iterable[Union[str, Fault]] = ()) -> None:
        self._lock = threading.Lock()
        self._faults: List[Fault] = []
        for fault in faults:
            self.add(fault)

    def add(self, fault: Union[str, Fault]) -> Fault:
        if isinstance(fault, str):
            fault = Fault.parse(fault)
        elif not isinstance(fault, Fault):
            raise TypeError("a fault is a 'TARGET=KIND[:COUNT]' string or a Fault, not %r" % (fault,))
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if f is not fault]

    def clear(self) -> None:
        with self._lock:
            self._faults = []

    def take(self, service: Optional[str], method: str, path: str, body: bytes) -> Optional[Fault]:
        """The fault to apply to this request, counting the hit, or None."""
        if not self._faults:  # the common case, without the lock
            return None
        rpc_method = rpc_method_name(body) if service == "one" else None
        with self._lock:
            for fault in self._faults:
                if fault.remaining != 0 and fault.matches(service, method, path, rpc_method):
                    fault.hits += 1
                    return fault
        return None

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter(list(self._faults))

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

    def __repr__(self) -> str:
        return "FaultSet([%s])" % ", ".join(repr(f.spec) for f in self)
