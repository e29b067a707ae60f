"""OpenNebula 3.2 XML-RPC behind the StratusLab one-proxy (spec §2).

Two things live here: the calls (``one.vm.allocate``, ``one.vm.info``, ``one.vmpool.info``,
``one.vm.action``) with their ``[ok, value, code]`` answers checked and mapped to errors,
and the reading of the ``<VM>`` document into a plain :class:`VmRecord`. What a VM means to
Libcloud (``Node``, ``NodeState``) is the compute mixin's business, not this module's.

Both XML layers (the XML-RPC answer and the VM documents inside it) are parsed by expat with
any DTD refused, so entities are never declared, let alone expanded. The pool answer of
``list_nodes`` is the one large answer; it is decoded in one pass (see :func:`_pool_element`).
"""

from __future__ import annotations

import gc
import re
import threading
import xmlrpc.client
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Iterator, Optional
from xml.etree import ElementTree
from xml.parsers import expat

from defusedxml.common import DefusedXmlException, DTDForbidden
from defusedxml.xmlrpc import DefusedExpatParser
from libcloud.common.base import BaseDriver

from stratuslab_lc_plugin.errors import (
    AccessDeniedError,
    AuthenticationError,
    InvalidStateError,
    NotFoundError,
    ServiceError,
)
from stratuslab_lc_plugin.services.connection import StratusLabConnection

__all__ = [
    "OneClient",
    "VmState",
    "LcmState",
    "PoolFilter",
    "VmRecord",
    "Nic",
    "Disk",
    "parse_vm_pool",
    "parse_vm",
    "gc_paused",
    "STATE_NAMES",
    "LCM_STATE_NAMES",
]

# ONE 3.2 error codes (include/Request.h).
AUTHENTICATION, AUTHORIZATION, NO_EXISTS, ACTION, XML_RPC_API, INTERNAL = (
    0x0100,
    0x0200,
    0x0400,
    0x0800,
    0x1000,
    0x2000,
)


class VmState(IntEnum):
    """``STATE`` of a VM (include/VirtualMachine.h, ONE 3.2)."""

    INIT = 0
    PENDING = 1
    HOLD = 2
    ACTIVE = 3
    STOPPED = 4
    SUSPENDED = 5
    DONE = 6
    FAILED = 7


class LcmState(IntEnum):
    """``LCM_STATE`` of an ACTIVE VM (include/VirtualMachine.h, ONE 3.2)."""

    LCM_INIT = 0
    PROLOG = 1
    BOOT = 2
    RUNNING = 3
    MIGRATE = 4
    SAVE_STOP = 5
    SAVE_SUSPEND = 6
    SAVE_MIGRATE = 7
    PROLOG_MIGRATE = 8
    PROLOG_RESUME = 9
    EPILOG_STOP = 10
    EPILOG = 11
    SHUTDOWN = 12
    CANCEL = 13
    FAILURE = 14
    CLEANUP = 15
    UNKNOWN = 16


STATE_NAMES = tuple(state.name for state in VmState)
LCM_STATE_NAMES = tuple(state.name for state in LcmState)


class PoolFilter(IntEnum):
    """Arguments of ``one.vmpool.info`` (RequestManagerPoolInfoFilter.h, ONE 3.2)."""

    #: filter_flag: only the VMs of the caller.
    MINE = -3
    #: start/end id: no id range.
    NO_RANGE = -1
    #: state: any state but DONE.
    ANY_BUT_DONE = -1


class OneClient:
    """The four ONE calls the driver makes, on one location's compute connection.

    The one-proxy replaces the session string with the identity it authenticated over
    HTTP, so the password is not repeated in the request body (where Libcloud's debug
    log would print it).
    """

    def __init__(self, connection: StratusLabConnection, username: Optional[str]) -> None:
        self.connection = connection
        self._session = "%s:%s" % (username or "dummy", "a" * 40)

    def allocate(self, template: str) -> int:
        return self._vm_id("one.vm.allocate", self.call("one.vm.allocate", template, idempotent=False))

    def info(self, vm_id: int) -> str:
        return self.call("one.vm.info", int(vm_id), idempotent=True)

    def pool(self, start: int = PoolFilter.NO_RANGE, end: int = PoolFilter.NO_RANGE,
             state: int = PoolFilter.ANY_BUT_DONE) -> str:
        return self._unpack("one.vmpool.info", self._pool_answer(start, end, state))

    def _pool_answer(self, start: int = PoolFilter.NO_RANGE, end: int = PoolFilter.NO_RANGE,
                     state: int = PoolFilter.ANY_BUT_DONE) -> bytes:
        params = (int(PoolFilter.MINE), int(start), int(end), int(state))
        return self._post("one.vmpool.info", params, idempotent=True)

    def vm(self, vm_id: int) -> "VmRecord":
        """``one.vm.info``, read into a :class:`VmRecord`."""
        return self._document("one.vm.info", parse_vm, self.info(vm_id))

    def vms(self) -> list["VmRecord"]:
        """The caller's VMs (any state but DONE) from ``one.vmpool.info``."""
        method = "one.vmpool.info"
        body = self._pool_answer()
        with gc_paused():
            records = self._document(method, _pool_records, body)
            if records is None:  # a failure, a fault, or an answer written another way: two passes
                records = self._document(method, parse_vm_pool, self._unpack(method, body))
        return records

    def _document(self, method: str, parse, text):
        try:
            return parse(text)
        except (expat.ExpatError, DefusedXmlException, ValueError, TypeError, AttributeError) as exc:
            raise self.connection.protocol_error(
                method, "with a VM document that cannot be read (%s)" % type(exc).__name__, http_code=200
            ) from None

    def action(self, name: str, vm_id: int) -> int:
        return self._vm_id("one.vm.action", self.call("one.vm.action", name, int(vm_id), idempotent=False))

    def _vm_id(self, method: str, value) -> int:
        """The VM id a successful allocate or action answers; anything else breaks the protocol."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise self.connection.protocol_error(method, "with %s instead of a VM id" % type(value).__name__, http_code=200)

    def call(self, method: str, *params, idempotent: bool):
        return self._unpack(method, self._post(method, params, idempotent=idempotent))

    def _post(self, method: str, params: tuple, *, idempotent: bool) -> bytes:
        """The body of the HTTP 200 answer to an XML-RPC call; other statuses raise."""
        body = xmlrpc.client.dumps((self._session,) + params, methodname=method, encoding="utf-8")
        response = self.connection.send(
            method,
            "",
            method="POST",
            data=body.encode("utf-8"),
            headers={"Content-Type": "text/xml; charset=utf-8"},
            idempotent=idempotent,
        )
        if response.status in (401, 403):
            raise self.connection.invalid_credentials(method, "HTTP %d" % response.status, response.status)
        if response.status != 200:
            raise ServiceError(
                "%s answered %s with HTTP %d" % (self.connection.where(), method, response.status),
                location=self.connection.location_id, operation=method,
                code=response.status, http_code=response.status, driver=self.connection.driver,
            )
        return response.raw_body

    def _unpack(self, method: str, body: bytes):
        location = self.connection.location_id
        try:
            (answer,) = _loads(body)
        except xmlrpc.client.Fault as fault:
            raise ServiceError(
                "%s: %s failed: %s" % (location, method, fault.faultString),
                location=location, operation=method, code=fault.faultCode,
                remote_message=fault.faultString, http_code=200, driver=self.connection.driver,
            ) from None
        except Exception as exc:  # noqa: BLE001 - any unreadable answer is a protocol error
            raise self.connection.protocol_error(
                method, "with something that is not an XML-RPC response (%s)" % type(exc).__name__, http_code=200
            ) from None
        if not isinstance(answer, (list, tuple)) or len(answer) < 2 or not isinstance(answer[0], bool):
            raise self.connection.protocol_error(
                method, "with %r instead of an OpenNebula [ok, value, code] triple" % type(answer).__name__,
                http_code=200,
            )
        if answer[0]:
            return answer[1]
        message = str(answer[1])
        code = answer[2] if len(answer) > 2 and isinstance(answer[2], int) else None
        raise _one_error(location, method, code, message, self.connection.driver)


def _loads(body: bytes) -> tuple:
    """``xmlrpc.client.loads`` on defusedxml's parser, refusing DTDs and entities."""
    unmarshaller = xmlrpc.client.Unmarshaller()
    parser = DefusedExpatParser(unmarshaller, forbid_dtd=True)
    # The VM pool is one long escaped string: without buffering, expat hands it over in
    # thousands of pieces (one per entity), which costs several times the parse itself.
    parser._parser.buffer_text = True
    parser.feed(body)
    parser.close()
    return unmarshaller.close()


def _one_error(location: str, method: str, code: Optional[int], message: str,
               driver: Optional[BaseDriver]) -> Exception:
    text = "%s: %s failed: %s" % (location, method, message)
    # AUTHORIZATION is ONE's "not authorized to perform X on VM n": a valid user without rights.
    cls = {
        AUTHENTICATION: AuthenticationError,
        AUTHORIZATION: AccessDeniedError,
        NO_EXISTS: NotFoundError,
        ACTION: InvalidStateError,
    }.get(code if code is not None else -1, ServiceError)
    return cls(text, location=location, operation=method, code=code, remote_message=message,
               http_code=200, driver=driver)


# -- the VM document ----------------------------------------------------------------------


@dataclass
class Nic:
    network: str
    ip: Optional[str]
    mac: Optional[str]


@dataclass
class Disk:
    disk_id: Optional[int]
    source: Optional[str]
    target: Optional[str]
    type: Optional[str]
    size: Optional[int]
    driver: Optional[str]


@dataclass
class VmRecord:
    """What a ``<VM>`` document says, in Python types."""

    id: int
    name: str
    uid: int
    owner: str
    group: str
    state: int
    lcm_state: int
    stime: int
    etime: int
    cpu: Optional[float]
    vcpu: Optional[int]
    memory: Optional[int]
    nics: list[Nic] = field(default_factory=list)
    disks: list[Disk] = field(default_factory=list)
    context: dict[str, str] = field(default_factory=dict)
    template: dict[str, str] = field(default_factory=dict)
    host: Optional[str] = None

    @property
    def state_label(self) -> str:
        """The 14.06 client's state summary: the LCM name while ACTIVE, else the state name."""
        if self.state == VmState.ACTIVE:
            return _name(LCM_STATE_NAMES, self.lcm_state).title()
        return _name(STATE_NAMES, self.state).title()


def _name(names: tuple[str, ...], code: int) -> str:
    return names[code] if 0 <= code < len(names) else "unknown_%d" % code


_PAUSES_LOCK = threading.Lock()
_pauses = 0  # threads inside gc_paused()
_resume = False  # whether the collector was on when the first of them came in


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while a VM pool is read (and becomes nodes).

    The pool's element tree and the nodes are tens of thousands of long-lived objects that
    hold no cycles; full collections triggered by their allocation walked all of them
    again and again, making list_nodes slower per VM as the pool grew (about 2x from 1,000
    to 10,000 VMs). Threads that read several locations' pools at once share one pause,
    ended by the last one out: when the first to finish turned the collector back on, its
    next collections walked the trees the others were still building.
    """
    global _pauses, _resume
    with _PAUSES_LOCK:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _PAUSES_LOCK:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()


def parse_vm_pool(xml_text: str) -> list[VmRecord]:
    """The VMs of a ``<VM_POOL>`` document (the string a ``one.vmpool.info`` answer holds)."""
    with gc_paused():
        return _vms_of_pool(_tree(xml_text))


def _vms_of_pool(pool: ElementTree.Element) -> list[VmRecord]:
    if pool.tag != "VM_POOL":
        raise ValueError("the document is a <%s>, not a <VM_POOL>" % pool.tag)
    return [_vm_from_element(vm) for vm in pool if vm.tag == "VM"]


# -- the pool answer in one pass ------------------------------------------------------------
#
# ``one.vmpool.info`` answers an XML-RPC string that holds the whole pool as an escaped XML
# document: decoding it the usual way parses 3 MB of entity references per 1,000 VMs into
# a string, then parses that string again. When the answer is the plain success frame that
# servers write, ``[true, "<VM_POOL>...", 0]``, unescaping the string where it stands
# (five byte replacements) and parsing the result once with ElementTree's C parser gives
# the same elements for about half the work. The patterns below recognise the frame only to
# choose that path; expat still parses all of it. The string may be typed (``<string>``, as
# xmlrpc-c and Python write it) or not (a bare ``<value>``, as the one-proxy's Apache
# XML-RPC writes it).

_XML_SPACE = rb"[ \t\r\n]*"
_POOL_HEAD = re.compile(_XML_SPACE.join([
    rb"(?:\xef\xbb\xbf)?(?:<\?xml[ \t\r\n][^<>]*\?>)?", rb"<methodResponse>", rb"<params>", rb"<param>",
    rb"<value>", rb"<array>", rb"<data>", rb"<value>", rb"<boolean>1</boolean>", rb"</value>", rb"<value>",
    rb"(<string>)?",
]))
_POOL_TAIL = re.compile(_XML_SPACE.join([
    rb"(</string>)?", rb"</value>", rb"<value>", rb"(?:<i4>0</i4>|<int>0</int>)", rb"</value>", rb"</data>",
    rb"</array>", rb"</value>", rb"</param>", rb"</params>", rb"</methodResponse>", rb"",
]))
# The XML escapes of a string's text, ``&amp;`` last so that an escaped escape stays one.
_ESCAPES = ((b"&lt;", b"<"), (b"&gt;", b">"), (b"&quot;", b'"'), (b"&apos;", b"'"), (b"&amp;", b"&"))


def _pool_records(body: bytes) -> Optional[list[VmRecord]]:
    """The VMs of a plain success answer to ``one.vmpool.info``, or None (see :func:`_pool_element`).

    The element tree is gone when this returns, so the collector never walks it.
    """
    pool = _pool_element(body)
    return None if pool is None else _vms_of_pool(pool)


def _pool_element(body: bytes) -> Optional[ElementTree.Element]:
    """The ``<VM_POOL>`` element of a plain success answer, parsed once; None for any other.

    The string's text must be character data with the five predefined escapes only (no
    character reference, CDATA section, comment, namespace declaration or ``xml:`` name):
    then unescaping it where it stands yields the string's value, and the pool document
    becomes the content of the string's element. There a DTD or an XML declaration is a
    syntax error, so expat refuses either at once, and so does a document with anything
    beside its one root element. Any such answer, and every error answer, returns None and
    goes the two-pass way, which reads or refuses it exactly as before.
    """
    head = _POOL_HEAD.match(body)
    if head is None:
        return None
    start = head.end()
    end = body.find(b"<", start)
    tail = _POOL_TAIL.fullmatch(body, end) if end >= 0 else None
    if tail is None or bool(head.group(1)) != bool(tail.group(1)):
        return None
    text = body[start:end]
    for escape, character in _ESCAPES[:2]:
        text = text.replace(escape, character)
    # Pool documents escape little else than their tags' brackets: once those are gone, one
    # search for an ampersand (a single byte, the quickest kind) usually saves the scans for
    # the rest, each as long as the document.
    if b"&" in text:
        for escape, character in _ESCAPES[2:-1]:
            text = text.replace(escape, character)
        # Looked for once most ampersands are gone (none of the replacements makes one).
        if b"&#" in text:
            return None
        text = text.replace(*_ESCAPES[-1])
    if b"xmlns" in text or b"<xml:" in text:
        return None
    parser = ElementTree.XMLParser()
    try:
        for piece in (body[:start], text, body[end:]):  # fed in turn: no joined copy of the answer
            parser.feed(piece)
        root = parser.close()
    except ElementTree.ParseError:
        return None
    holder = root[0][0][0][0][0][1]  # methodResponse/params/param/value/array/data/value[2]
    if head.group(1):
        holder = holder[0]  # its <string>
    if len(holder) != 1 or _XML_SPACE_ONLY.fullmatch(holder.text or "") is None:
        return None
    pool = holder[0]
    if pool.tag != "VM_POOL" or _XML_SPACE_ONLY.fullmatch(pool.tail or "") is None:
        return None
    return pool


_XML_SPACE_ONLY = re.compile("[ \t\r\n]*")


def parse_vm(xml_text: str) -> VmRecord:
    return _vm_from_element(_tree(xml_text))


def _tree(xml_text: str) -> ElementTree.Element:
    """Parse a ONE document with expat and the C tree builder, refusing any DTD.

    Entity expansion and external entities need a document type declaration, which ONE
    documents never have: expat refuses it as it meets it, wherever it is. Feeding expat's
    events straight to the C TreeBuilder keeps this as fast as ElementTree's own C
    parser; defusedxml's parser runs in Python and is five times slower on a pool of
    thousands of VMs.
    """
    builder = ElementTree.TreeBuilder()
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.Parse(xml_text, True)
    return builder.close()


def _refuse_dtd(*_) -> None:
    raise DTDForbidden(None, None, None)


def _vm_from_element(vm: ElementTree.Element) -> VmRecord:
    # Called once per VM of the pool: C-level lookups (findtext on direct children) and
    # positional constructor calls keep it to a few microseconds.
    text = vm.findtext
    scalars: dict[str, str] = {}
    nics: list[Nic] = []
    disks: list[Disk] = []
    context: dict[str, str] = {}
    template = vm.find("TEMPLATE")
    if template is not None:
        for attribute in template:
            tag = attribute.tag
            if not len(attribute):
                scalars[tag] = attribute.text or ""
            elif tag == "NIC":
                get = attribute.findtext
                nics.append(Nic(get("NETWORK") or "", get("IP") or None, get("MAC") or None))
            elif tag == "DISK":
                get = attribute.findtext
                disks.append(Disk(_int(get("DISK_ID")), get("SOURCE") or None, get("TARGET") or None,
                                  get("TYPE") or None, _int(get("SIZE")), get("DRIVER") or None))
            elif tag == "CONTEXT":
                context = {sub.tag: sub.text or "" for sub in attribute}
    # vm.info lists every history record, vmpool.info the current one: the last is current.
    host = None
    history = vm.find("HISTORY_RECORDS")
    if history is not None:
        records = history.findall("HISTORY")
        if records:
            host = records[-1].findtext("HOSTNAME") or None
    return VmRecord(
        int(text("ID") or ""), text("NAME") or "", _int(text("UID")) or 0, text("UNAME") or "", text("GNAME") or "",
        _int(text("STATE")) or 0, _int(text("LCM_STATE")) or 0, _int(text("STIME")) or 0, _int(text("ETIME")) or 0,
        _float(scalars.get("CPU")), _int(scalars.get("VCPU")), _int(scalars.get("MEMORY")),
        nics, disks, context, scalars, host,
    )


def _int(value: Optional[str]) -> Optional[int]:
    if value:
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _float(value: Optional[str]) -> Optional[float]:
    if value:
        try:
            return float(value)
        except ValueError:
            return None
    return None
