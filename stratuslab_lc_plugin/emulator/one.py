"""OpenNebula 3.2 XML-RPC as a StratusLab site serves it behind the one-proxy (spec §2).

Four methods (``one.vm.allocate``, ``one.vm.info``, ``one.vmpool.info``,
``one.vm.action``) answer ONE's ``[ok, value, code]`` triples with ONE's error codes
and messages. As behind the real proxy, the HTTP identity decides the user and the
session string is ignored; the user's ONE name (``UNAME``) is the HTTP name URL-encoded
the way the proxy's Java ``URLEncoder`` does (``alice@x.org`` is ``alice%40x.org``). The
user is authenticated before any parameter is read, as in ``Request::execute``. VM documents follow ``VirtualMachine::to_xml`` byte for byte:
element order, PERMISSIONS, a TEMPLATE sorted by name with CDATA values, what ONE adds
at allocation (VMID, NAME, DISK_ID, NIC leases, CONTEXT variables and TARGET, GRAPHICS
PORT; :mod:`.variables`) and HISTORY_RECORDS (all records for ``vm.info``, the last one for ``vmpool.info``). Like
ONE 3.2, names and CDATA contents are written without escaping.

Speed matters (benchmarks must measure the driver, not this): VMs live in memory,
each VM's pool XML is rendered once per change and kept, and SQLite (:mod:`.store`)
holds a JSON body per VM so a restarted cloud gets them back.

Faults come from xmlrpc-c as ONE 3.2 links it: an unknown method is -506 "Method 'NAME'
not defined" (the proxy forwards every name), a missing or mistyped parameter is -501
("Not enough parameters", "Parameter that is supposed to be integer is not"...). A body
that is not an XML-RPC call answers fault 0 (Apache XML-RPC's parse failure, at the proxy).

Choices where ONE 3.2 is undefined or unknown (documented, not guessed silently):
- an unknown ``vm.action`` name leaves ONE's result code uninitialised; it answers INTERNAL
  "Internal error. Action result not defined", the code's ``default`` branch;
- ``$NETWORK[TEMPLATE, ...]``, ``$USER[...]`` and ``$IMAGE[...]`` expand to nothing: the
  cloud's users have empty templates and it has no image repository.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import re
import threading
import time
import xmlrpc.client
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from . import lifecycle as lc
from .store import Store
from .faults import rpc_method_name
from .template import TemplateError, parse
from .variables import VariableError, expand, marshall, unmarshall
from .web import Request, Response, jetty_error

__all__ = ["OneHandler", "VmPool", "VM", "Network", "NETWORKS",
           "SUCCESS", "AUTHENTICATION", "AUTHORIZATION", "NO_EXISTS", "ACTION",
           "XML_RPC_API", "INTERNAL"]

log = logging.getLogger(__name__)

# Request::ErrorCode of ONE 3.2
SUCCESS, AUTHENTICATION, AUTHORIZATION, NO_EXISTS = 0x0000, 0x0100, 0x0200, 0x0400
ACTION, XML_RPC_API, INTERNAL = 0x0800, 0x1000, 0x2000

ONEADMIN = "oneadmin"
USERS_GROUP = (1, "users")
ADMIN_GROUP = (0, "oneadmin")
DEV_PREFIX = "hd"          # ImagePool default DEV_PREFIX
VNC_BASE_PORT = 5900
NAME_MAX = 128
_PERMISSIONS = ("<PERMISSIONS><OWNER_U>1</OWNER_U><OWNER_M>1</OWNER_M><OWNER_A>0</OWNER_A>"
                "<GROUP_U>0</GROUP_U><GROUP_M>0</GROUP_M><GROUP_A>0</GROUP_A>"
                "<OTHER_U>0</OTHER_U><OTHER_M>0</OTHER_M><OTHER_A>0</OTHER_A></PERMISSIONS>")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS one_vm (oid INTEGER PRIMARY KEY, uid INTEGER NOT NULL,
                                   state INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS one_user (name TEXT PRIMARY KEY, uid INTEGER NOT NULL UNIQUE);
"""


# ---------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------

@dataclass
class Network:
    """A ranged ONE virtual network of loopback addresses (each VM its own address)."""

    id: int
    name: str
    base: int                      # first lease, as an integer IPv4 address
    size: int
    bridge: str = "br0"
    used: Set[int] = field(default_factory=set)   # offsets in use
    cursor: int = 0                # ranged leases are handed out round-robin

    def contains(self, ip: int) -> bool:
        return 0 <= ip - self.base < self.size

    def take(self, requested: Optional[int] = None) -> Optional[int]:
        """Lease ``requested`` (an integer IP) or the next free address; None if none."""
        if requested is not None:
            offset = requested - self.base
            if not 0 <= offset < self.size or offset in self.used:
                return None
            self.used.add(offset)
            return requested
        if len(self.used) >= self.size:
            return None
        offset = self.cursor
        while offset in self.used:
            offset = (offset + 1) % self.size
        self.used.add(offset)
        self.cursor = (offset + 1) % self.size
        return self.base + offset

    def release(self, ip: int) -> None:
        self.used.discard(ip - self.base)

    def attribute(self, name: str) -> str:
        """An attribute of the network's template (what ``$NETWORK[NAME, ...]`` reads)."""
        first = ipaddress.IPv4Address(self.base)
        network = ipaddress.IPv4Network("%s/16" % first, strict=False)
        return {"NAME": self.name, "TYPE": "RANGED", "BRIDGE": self.bridge,
                "NETWORK_ADDRESS": str(network.network_address),
                "NETWORK_MASK": str(network.netmask)}.get(name, "")


def _networks() -> List[Network]:
    def ranged(ident: int, name: str, second_octet: int) -> Network:
        first = int(ipaddress.IPv4Address("127.%d.0.2" % second_octet))
        last = int(ipaddress.IPv4Address("127.%d.255.254" % second_octet))
        return Network(ident, name, first, last - first + 1)
    return [ranged(0, "public", 1), ranged(1, "local", 2), ranged(2, "private", 3)]


NETWORKS = ("public", "local", "private")


# VirtualMachine::get_network_leases and ::get_disk_images of ONE 3.2: one text for every
# failure (3.4 and later name the cause).
NIC_FAILURE = "Could not get virtual network for VM."
IMAGE_FAILURE = "Could not get disk image for VM."
_CPP_INT = re.compile(r"\s*([+-]?[0-9]+)")


def _cpp_int(text: str) -> Optional[int]:
    """``istringstream >> int``: the leading integer of ``text``, None when there is none."""
    match = _CPP_INT.match(text)
    return int(match.group(1)) if match else None


def _ip_number(text: str) -> int:
    """An IPv4 address as a number; -1 (in no network) when ``text`` is not one."""
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        return -1


_JAVA_URL_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*_")


def proxy_user_name(user: str) -> str:
    """The ONE user name of an HTTP user: the one-proxy's ``URLEncoder.encode(user,
    "UTF-8")`` (letters, digits and ``.-*_`` kept, a space as ``+``, the rest ``%XX``)."""
    return "".join(chr(b) if b in _JAVA_URL_SAFE else "+" if b == 0x20 else "%%%02X" % b
                   for b in user.encode("utf-8"))


def _mac(ip: int) -> str:
    return "02:00:" + ":".join("%02x" % b for b in ip.to_bytes(4, "big"))


# ---------------------------------------------------------------------------------------
# VMs and their XML
# ---------------------------------------------------------------------------------------

TemplateList = List[Tuple[str, Union[str, Dict[str, str]]]]


@dataclass
class VM:
    """A VM as ONE keeps it; ``template`` holds vectors as dicts (names unique)."""

    id: int
    uid: int
    gid: int
    uname: str
    gname: str
    name: str
    template: TemplateList
    stime: int
    state: int = lc.INIT
    lcm: int = lc.LCM_INIT
    etime: int = 0
    last_poll: int = 0
    deploy_id: str = ""
    memory: int = 0
    cpu: int = 0
    history: List[lc.HistoryRecord] = field(default_factory=list)
    leases: List[Tuple[int, int]] = field(default_factory=list)   # (network id, ip)
    step: int = 0
    due: Optional[float] = None
    # caches, rebuilt on change
    template_xml: Optional[str] = None
    pool_xml: str = ""
    info_xml: Optional[str] = None

    _BODY = ("uid", "gid", "uname", "gname", "name", "stime", "state", "lcm", "etime",
             "last_poll", "deploy_id", "memory", "cpu", "history", "leases", "step", "due")

    def to_body(self) -> str:
        body = {key: getattr(self, key) for key in self._BODY}
        body["template"] = [[n, list(v.items()) if isinstance(v, dict) else v]
                            for n, v in self.template]
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_body(cls, oid: int, text: str) -> "VM":
        body = json.loads(text)
        template = [(n, dict(v) if isinstance(v, list) else v) for n, v in body.pop("template")]
        body["leases"] = [tuple(lease) for lease in body["leases"]]
        return cls(id=oid, template=template, **body)


def _cdata(name: str, value: str) -> str:
    return "<%s><![CDATA[%s]]></%s>" % (name, value, name)


def render_template(template: TemplateList) -> str:
    """``Template::to_xml``: attributes sorted by name (repeats keep their order),
    vector members sorted by name, empty members as ``<X/>``."""
    out = ["<TEMPLATE>"]
    for name, value in sorted(template, key=itemgetter(0)):
        if isinstance(value, dict):
            out.append("<%s>" % name)
            for sub in sorted(value):
                out.append("<%s/>" % sub if value[sub] == "" else _cdata(sub, value[sub]))
            out.append("</%s>" % name)
        else:
            out.append(_cdata(name, value))
    out.append("</TEMPLATE>")
    return "".join(out)


def _history_xml(record: lc.HistoryRecord) -> str:
    return "<HISTORY>%s</HISTORY>" % "".join(
        "<%s>%s</%s>" % (key, record[key], key) for key in lc.HISTORY_FIELDS)


def render_vm(vm: VM, all_history: bool) -> str:
    """``VirtualMachine::to_xml`` (pool form) or ``to_xml_extended`` (``all_history``)."""
    if vm.template_xml is None:
        vm.template_xml = render_template(vm.template)
    if not vm.history:
        history = "<HISTORY_RECORDS/>"
    else:
        records = vm.history if all_history else vm.history[-1:]
        history = "<HISTORY_RECORDS>%s</HISTORY_RECORDS>" % "".join(map(_history_xml, records))
    return ("<VM><ID>%d</ID><UID>%d</UID><GID>%d</GID><UNAME>%s</UNAME><GNAME>%s</GNAME>"
            "<NAME>%s</NAME>%s<LAST_POLL>%d</LAST_POLL><STATE>%d</STATE>"
            "<LCM_STATE>%d</LCM_STATE><STIME>%d</STIME><ETIME>%d</ETIME>"
            "<DEPLOY_ID>%s</DEPLOY_ID><MEMORY>%d</MEMORY><CPU>%d</CPU><NET_TX>0</NET_TX>"
            "<NET_RX>0</NET_RX>%s%s</VM>"
            % (vm.id, vm.uid, vm.gid, vm.uname, vm.gname, vm.name, _PERMISSIONS,
               vm.last_poll, vm.state, vm.lcm, vm.stime, vm.etime, vm.deploy_id,
               vm.memory, vm.cpu, vm.template_xml, history))


# ---------------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------------

class AllocationError(Exception):
    """A template ONE refuses at insertion (INTERNAL error detail)."""


class VmPool:
    """Users, networks and VMs, in memory and in the store, behind one lock.

    ``users`` is the ordered list of user names that may log in; ids are stable across
    restarts (``oneadmin`` is 0, others get the next free id in order from 1).
    """

    def __init__(self, store: Store, users: Sequence[str]) -> None:
        self.store = store
        self._lock = threading.RLock()
        self._dirty: Dict[int, VM] = {}
        self._batch_depth = 0
        self.vms: Dict[int, VM] = {}
        self._next_oid = 0
        self.networks = _networks()
        self.lifecycle: Optional[lc.Lifecycle] = None
        store.ensure_schema(_SCHEMA)
        self.uids = self._register_users(users)
        self._load()

    # -- users -------------------------------------------------------------------------

    def _register_users(self, users: Sequence[str]) -> Dict[str, int]:
        with self.store.transaction() as db:
            known = {row["name"]: row["uid"] for row in db.execute("SELECT name, uid FROM one_user")}
            known.setdefault(ONEADMIN, 0)
            next_uid = max(known.values()) + 1
            for name in users:
                if name not in known:
                    known[name] = next_uid
                    next_uid += 1
            db.executemany("INSERT OR IGNORE INTO one_user (name, uid) VALUES (?, ?)",
                           sorted(known.items()))
        return {name: known[name] for name in [ONEADMIN, *users]}

    # -- persistence ---------------------------------------------------------------------

    def _load(self) -> None:
        with self.store.transaction() as db:
            rows = db.execute("SELECT oid, body FROM one_vm ORDER BY oid").fetchall()
        last_lease: Dict[int, int] = {}
        for row in rows:
            vm = VM.from_body(row["oid"], row["body"])
            self.vms[vm.id] = vm
            for net_id, ip in vm.leases:
                last_lease[net_id] = ip
                if vm.state != lc.DONE:  # a FAILED VM keeps its leases
                    self.networks[net_id].used.add(ip - self.networks[net_id].base)
            vm.pool_xml = render_vm(vm, False)
            self._next_oid = vm.id + 1
        for net_id, ip in last_lease.items():
            network = self.networks[net_id]
            network.cursor = (ip - network.base + 1) % network.size

    def attach(self, lifecycle: lc.Lifecycle) -> None:
        """Connect the state machine and hand it the reloaded VMs."""
        self.lifecycle = lifecycle
        with self.batch():
            for vm in self.vms.values():
                lifecycle.restored(vm)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Hold the pool lock; at the outermost exit re-render and store touched VMs."""
        with self._lock:
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
                if self._batch_depth == 0 and self._dirty:
                    dirty, self._dirty = self._dirty, {}
                    rows = []
                    for vm in dirty.values():
                        vm.info_xml = None
                        vm.pool_xml = render_vm(vm, False)
                        rows.append((vm.id, vm.uid, vm.state, vm.to_body()))
                    with self.store.transaction() as db:
                        db.executemany("INSERT OR REPLACE INTO one_vm (oid, uid, state, body)"
                                       " VALUES (?, ?, ?, ?)", rows)

    def touch(self, vm: VM) -> None:
        self._dirty[vm.id] = vm

    def get(self, vm_id: int) -> Optional[VM]:
        return self.vms.get(vm_id)

    def set_attribute(self, vm: VM, name: str, value: Optional[str]) -> None:
        """Replace (or, with None, remove) a single template attribute."""
        kept = [(n, v) for n, v in vm.template if n != name]
        if value is not None:
            kept.append((name, value))
        if kept != vm.template:
            vm.template = kept
            vm.template_xml = None
            self.touch(vm)

    def release_leases(self, vm: VM) -> None:
        for net_id, ip in vm.leases:
            self.networks[net_id].release(ip)

    def add_attribute(self, vm: VM, name: str, value: Union[str, Dict[str, str]]) -> None:
        """Add a template attribute beside any of the same name."""
        vm.template.append((name, value))
        vm.template_xml = None
        self.touch(vm)

    def info_xml(self, vm: VM) -> str:
        with self._lock:
            if vm.info_xml is None:
                vm.info_xml = vm.pool_xml if len(vm.history) <= 1 else render_vm(vm, True)
            return vm.info_xml

    # -- ONE operations ----------------------------------------------------------------

    def allocate(self, uid: int, uname: str, attrs: List) -> int:
        """``VirtualMachine::insert``; raises AllocationError with ONE's detail text."""
        template: TemplateList = [(n, dict(v) if isinstance(v, list) else v) for n, v in attrs]
        gid, gname = ADMIN_GROUP if uid == 0 else USERS_GROUP
        if uid != 0 and gid != ADMIN_GROUP[0]:
            for name, value in template:
                # StratusLab's ONE restricts only this attribute (spec §2.4)
                if name == "NIC" and isinstance(value, dict) and value.get("VLAN_ID"):
                    raise AllocationError("VM Template includes a restricted attribute NIC/VLAN_ID.")
        with self.batch():
            oid = self._next_oid
            template = [(n, v) for n, v in template if n != "VMID"] + [("VMID", str(oid))]
            name = next((v for n, v in template if n == "NAME" and isinstance(v, str)), "")
            if not name:
                name = "one-%d" % oid
                template = [(n, v) for n, v in template if n != "NAME"] + [("NAME", name)]
            elif len(name) > NAME_MAX:
                # 3.2 appends to the stream that still holds the VM id: "<id>NAME is..."
                raise AllocationError("%dNAME is too long; max length is %d chars." % (oid, NAME_MAX))
            vm = VM(id=oid, uid=uid, gid=gid, uname=uname, gname=gname, name=name,
                    template=template, stime=int(time.time()))
            vm.leases = self._get_leases(template, uid, oid)
            try:
                self._disks(template)
                self._expand_variables(vm)
                self._graphics(template, oid)
            except AllocationError:
                self.release_leases(vm)
                raise
            self.vms[oid] = vm
            self._next_oid = oid + 1
            self.touch(vm)
            if self.lifecycle is not None:
                self.lifecycle.allocated(vm)
            else:
                vm.state = lc.PENDING
        return oid

    def _get_leases(self, template: TemplateList, uid: int, oid: int) -> List[Tuple[int, int]]:
        """``VirtualMachine::get_network_leases``: a lease for each NIC of a network; any
        NIC failure is ONE 3.2's one message.

        Unlike ONE, a NIC of no network that names an ``IP`` is placed on the network whose
        range holds that address, and refused when none does: the VM's guest listens on its
        first NIC's address, which must be one of the cloud's loopback leases.
        """
        leases: List[Tuple[int, int]] = []
        try:
            for nic in (v for n, v in template if n == "NIC" and isinstance(v, dict)):
                requested = _ip_number(nic["IP"]) if nic.get("IP") else None
                network = self._nic_network(nic, uid)
                if network is None:
                    if requested is None:
                        continue  # kept as given, like ONE does
                    network = next((n for n in self.networks if n.contains(requested)), None)
                    if network is None:
                        raise AllocationError(NIC_FAILURE)
                ip = network.take(requested)
                if ip is None:
                    raise AllocationError(NIC_FAILURE)
                leases.append((network.id, ip))
                nic.update(NETWORK=network.name, NETWORK_ID=str(network.id),
                           BRIDGE=network.bridge, MAC=_mac(ip),
                           IP=str(ipaddress.IPv4Address(ip)), VLAN="NO")
        except AllocationError:
            for net_id, ip in leases:
                self.networks[net_id].release(ip)
            raise
        return leases

    def _nic_network(self, nic: Dict[str, str], uid: int) -> Optional[Network]:
        """``VirtualNetworkPool::nic_attribute``'s lookup: the NIC's network, None for a NIC
        of no network; AllocationError when the named network is not found."""
        name, ident = nic.get("NETWORK", ""), nic.get("NETWORK_ID", "")
        if name:
            if nic.get("NETWORK_UID"):
                owner = _cpp_int(nic["NETWORK_UID"])
            elif nic.get("NETWORK_UNAME"):
                owner = self.uids.get(nic["NETWORK_UNAME"])
            else:
                owner = uid
            found = [n for n in self.networks if owner == 0 and n.name == name]  # oneadmin's
        elif ident:
            number = _cpp_int(ident)
            found = [n for n in self.networks if n.id == number]
        else:
            return None
        if not found:
            raise AllocationError(NIC_FAILURE)
        return found[0]

    @staticmethod
    def _disks(template: TemplateList) -> None:
        """``ImagePool::disk_attribute`` for disks without an image pool entry; a disk's
        ``DISK_ID`` is its position among all ``DISK`` attributes, vectors or not."""
        disks = [value for name, value in template if name == "DISK"]
        for index, disk in enumerate(disks):
            if not isinstance(disk, dict):
                continue
            if disk.get("IMAGE") or disk.get("IMAGE_ID"):
                raise AllocationError(IMAGE_FAILURE)  # the cloud has no image repository
            if disk.get("TYPE", "").upper() == "SWAP" and not disk.get("TARGET"):
                disk["TARGET"] = DEV_PREFIX + "d"
            disk["DISK_ID"] = str(index)

    def _expand_variables(self, vm: VM) -> None:
        """``parse_context`` then ``parse_requirements``: variables expanded in CONTEXT
        (which then gets its ``TARGET``) and in REQUIREMENTS. A syntax error fails the
        allocation with no reason, as in 3.2."""
        resolver = _VariableResolver(self, vm)
        for name, vector in (("CONTEXT", True), ("REQUIREMENTS", False)):
            found = [v for n, v in vm.template if n == name]
            if not found:
                continue
            if len(found) > 1:
                raise AllocationError("Only one %s attribute can be defined." % name)
            value = found[0]
            if isinstance(value, dict) != vector:
                raise AllocationError("Wrong format for %s attribute." % name)
            # ONE removes the attribute before parsing: $TEMPLATE does not show it
            vm.template = [(n, v) for n, v in vm.template if n != name]
            try:
                text = marshall(list(value.items())) if isinstance(value, dict) else value
                parsed = expand(text, resolver)
            except VariableError:
                raise AllocationError("") from None
            if vector:
                context = dict(unmarshall(parsed))
                if not context.get("TARGET"):
                    context["TARGET"] = DEV_PREFIX + "b"
                vm.template.append((name, context))
            else:
                vm.template.append((name, parsed))

    @staticmethod
    def _graphics(template: TemplateList, oid: int) -> None:
        for name, value in template:
            if name == "GRAPHICS" and isinstance(value, dict) and not value.get("PORT"):
                value["PORT"] = str(VNC_BASE_PORT + oid)

    def select(self, uid: int, filter_flag: int, start: int, end: int, state: int) -> str:
        """The ``<VM_POOL>`` document of ``one.vmpool.info`` (arguments already checked)."""
        admin = uid == 0
        with self._lock:
            parts = ["<VM_POOL>"]
            for vm in self.vms.values():
                if state == -1:
                    if vm.state == lc.DONE:
                        continue
                elif state >= 0 and vm.state != state:
                    continue
                if start != -1 and (vm.id < start or (end != -1 and vm.id > end)):
                    continue
                if filter_flag == -3:
                    if vm.uid != uid:
                        continue
                elif filter_flag == -1:
                    gid = ADMIN_GROUP[0] if admin else USERS_GROUP[0]
                    if vm.uid != uid and vm.gid != gid:
                        continue
                elif filter_flag >= 0 and vm.uid != filter_flag:
                    continue
                if not admin and vm.uid != uid:
                    continue   # default permissions: only the owner may USE a VM
                parts.append(vm.pool_xml)
            parts.append("</VM_POOL>")
        return "".join(parts)


class _VariableResolver:
    """What ONE's variable lookups find for a VM being allocated (see :mod:`.variables`)."""

    def __init__(self, pool: VmPool, vm: VM) -> None:
        self._pool = pool
        self._vm = vm

    def single(self, name: str) -> str:
        if name == "TEMPLATE":  # PoolObjectSQL::to_xml64 of the VM as it is now
            self._vm.template_xml = None
            document = render_vm(self._vm, False)
            self._vm.template_xml = None  # the template changes again after this
            return base64.b64encode(document.encode("utf-8")).decode("ascii")
        if name == "UID":
            return str(self._vm.uid)
        first = next((v for n, v in self._vm.template if n == name), None)
        return first if isinstance(first, str) else ""  # Template::get of a single value

    def vector(self, name: str, attribute: str, key: str, value: str) -> str:
        if name == "NETWORK":
            return self._network_attribute(attribute, key, value)
        if name in ("USER", "IMAGE"):
            return ""
        vectors = [v for n, v in self._vm.template if n == name]
        if not key:
            chosen = vectors[0] if vectors and isinstance(vectors[0], dict) else None
        else:
            chosen = next((v for v in vectors if isinstance(v, dict) and v.get(key, "") == value), None)
        return chosen.get(attribute, "") if chosen is not None else ""

    def _network_attribute(self, attribute: str, key: str, value: str) -> str:
        if key not in ("NETWORK", "NETWORK_ID") or attribute == "TEMPLATE":
            return ""
        nic = next((v for n, v in self._vm.template
                    if n == "NIC" and isinstance(v, dict) and v.get(key, "") == value), None)
        network_id = _cpp_int(nic.get("NETWORK_ID", "")) if nic is not None else None
        network = next((n for n in self._pool.networks if n.id == network_id), None)
        return network.attribute(attribute) if network is not None else ""


# ---------------------------------------------------------------------------------------
# XML-RPC
# ---------------------------------------------------------------------------------------

class _Fault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _parse_call(body: bytes) -> Tuple[str, tuple]:
    try:
        from defusedxml.xmlrpc import DefusedExpatParser as Parser
    except ImportError:  # pragma: no cover - defusedxml is a dependency
        Parser = None
    unmarshaller = xmlrpc.client.Unmarshaller()
    parser = Parser(unmarshaller) if Parser else xmlrpc.client.ExpatParser(unmarshaller)
    try:
        parser.feed(body)
        parser.close()
        params = unmarshaller.close()
        method = unmarshaller.getmethodname()
    except Exception as exc:
        raise _Fault(0, "Failed to parse XML-RPC request: %s" % (str(exc) or type(exc).__name__))
    if not method:
        raise _Fault(0, "Failed to parse XML-RPC request: not a methodCall")
    return method, params


def _int_param(params: tuple, index: int) -> int:
    if index >= len(params):
        raise _Fault(-501, "Not enough parameters")
    value = params[index]
    if type(value) is not int or not -2 ** 31 <= value < 2 ** 31:
        raise _Fault(-501, "Parameter that is supposed to be integer is not")
    return value


def _str_param(params: tuple, index: int) -> str:
    if index >= len(params):
        raise _Fault(-501, "Not enough parameters")
    if not isinstance(params[index], str):
        raise _Fault(-501, "Parameter that is supposed to be a string is not")
    return params[index]


def _answer(value: Any) -> Response:
    body = xmlrpc.client.dumps((value,), methodresponse=True, encoding="utf-8",
                               allow_none=False)
    # Apache XML-RPC (the one-proxy) answers text/xml without a charset.
    return Response(200, body.encode("utf-8", "surrogateescape"), "text/xml")


class OneHandler:
    """The ``/one-proxy/{pswd,cert}`` web app: ONE XML-RPC at path ``/xmlrpc``."""

    def __init__(self, pool: VmPool) -> None:
        self.pool = pool
        self._methods = {
            "one.vm.allocate": ("VirtualMachineAllocate", self._allocate),
            "one.vm.info": ("VirtualMachineInfo", self._info),
            "one.vmpool.info": ("VirtualMachinePoolInfo", self._pool_info),
            "one.vm.action": ("VirtualMachineAction", self._action),
        }

    def handle(self, request: Request) -> Response:
        if request.path != "/xmlrpc":
            return jetty_error(404, "/one-proxy" + request.path, "Not Found")
        if request.method != "POST":
            return jetty_error(405, "/one-proxy/xmlrpc",
                               "HTTP method %s is not supported by this URL" % request.method)
        try:
            method, params = _parse_call(request.body)
            if method not in self._methods:
                raise _Fault(-506, "Method '%s' not defined" % method)
            label, function = self._methods[method]
            user = proxy_user_name(request.user or "")
            uid = self.pool.uids.get(user)
            if uid is None:  # Request::execute: before any parameter is read
                result = self._failure(label, AUTHENTICATION,
                                       "User couldn't be authenticated, aborting call.")
            else:
                result = function(label, uid, user, params)
        except _Fault as fault:
            body = xmlrpc.client.dumps(xmlrpc.client.Fault(fault.code, fault.message),
                                       methodresponse=True, encoding="utf-8")
            return Response(200, body.encode("utf-8", "surrogateescape"), "text/xml")
        return _answer(result)

    def injected_error(self, request: Request) -> Response:
        """What the fault kind ``one-error`` answers: ONE's INTERNAL failure triple."""
        label = rpc_method_name(request.body) or "one"
        return _answer([False, "[%s] Internal error injected by the local cloud" % label, INTERNAL])

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _failure(label: str, code: int, message: str) -> list:
        return [False, "[%s] %s" % (label, message), code]

    def _missing(self, label: str, vm_id: int) -> list:
        """``Request::get_error``: NO_EXISTS, naming the VM (or "Pool." for -1)."""
        where = " Pool." if vm_id == -1 else " [%d]." % vm_id
        return self._failure(label, NO_EXISTS, "Error getting virtual machine" + where)

    def _not_authorized(self, label: str, uid: int, operation: str, vm_id: int) -> list:
        """``authorization_error`` with the ACL manager's text (no id for a negative one)."""
        target = " [%d]" % vm_id if vm_id >= 0 else ""
        return self._failure(label, AUTHORIZATION, "User [%d] : Not authorized to perform %s VM%s."
                             % (uid, operation, target))

    def _vm_for(self, label: str, uid: int, vm_id: int, operation: str):
        """``basic_authorization`` / ``vm_authorization``, then the lookup: a VM, or a
        failure triple. A non-admin asking for a negative id is refused the pool itself
        (``vm.info``) or told it does not exist (``vm.action``)."""
        if uid != 0 and vm_id < 0 and operation == "USE":
            return None, self._not_authorized(label, uid, operation, vm_id)
        vm = self.pool.get(vm_id)
        if vm is None:
            return None, self._missing(label, vm_id)
        if uid != 0 and vm.uid != uid:
            return None, self._not_authorized(label, uid, operation, vm_id)
        return vm, None

    # -- methods -----------------------------------------------------------------------

    def _allocate(self, label: str, uid: int, user: str, params: tuple) -> list:
        text = _str_param(params, 1)
        try:
            attrs = parse(text)
            oid = self.pool.allocate(uid, user, attrs)
        except (TemplateError, AllocationError) as exc:
            detail = ("Parse error: %s" % exc) if isinstance(exc, TemplateError) else str(exc)
            # Request::allocate_error: no detail, no trailing blank
            return self._failure(label, INTERNAL, " ".join(
                filter(None, ("Error allocating a new virtual machine.", detail))))
        return [True, oid, SUCCESS]

    def _info(self, label: str, uid: int, user: str, params: tuple) -> list:
        vm_id = _int_param(params, 1)
        vm, failure = self._vm_for(label, uid, vm_id, "USE")
        if failure:
            return failure
        return [True, self.pool.info_xml(vm), SUCCESS]

    def _pool_info(self, label: str, uid: int, user: str, params: tuple) -> list:
        filter_flag = _int_param(params, 1)
        start, end, state = (_int_param(params, i) for i in (2, 3, 4))
        if state < -2 or state > lc.FAILED:
            return self._failure(label, XML_RPC_API, "Incorrect filter_flag, state")
        if filter_flag < -3:
            return self._failure(label, XML_RPC_API, "Incorrect filter_flag")
        return [True, self.pool.select(uid, filter_flag, start, end, state), SUCCESS]

    def _action(self, label: str, uid: int, user: str, params: tuple) -> list:
        name = _str_param(params, 1)
        vm_id = _int_param(params, 2)
        lifecycle = self.pool.lifecycle
        with self.pool.batch():
            vm = self.pool.get(vm_id)
            if uid != 0:  # vm_authorization first, then the action
                vm, failure = self._vm_for(label, uid, vm_id, "MANAGE")
                if failure:
                    return failure
            if lifecycle is None:
                raise RuntimeError("the VM pool has no life cycle attached: no action can run")
            if not lifecycle.knows(name):
                return self._failure(label, INTERNAL, "Internal error. Action result not defined")
            if vm is None:
                return self._missing(label, vm_id)
            rc = lifecycle.action(vm, name)
        if rc == lc.WRONG_STATE:
            return self._failure(label, ACTION, "Wrong state to perform action")
        return [True, vm_id, SUCCESS]
