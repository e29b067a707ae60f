"""ComputeMixin: locations, sizes, images and the node lifecycle.

Locations are the sections of the user configuration file, sizes its instance types,
images the entries of each location's Marketplace, and nodes the OpenNebula VMs of each
location. ``list_nodes`` asks every location once (``one.vmpool.info``), concurrently, and
a node's state is read from that answer: reading ``node.state`` makes no remote call.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Optional, Sequence, TypeVar, Union

from libcloud.compute.base import Node, NodeAuthPassword, NodeAuthSSHKey, NodeImage, NodeLocation, NodeSize
from libcloud.compute.types import NodeState

from stratuslab_lc_plugin.config import LocationConfig, SizeSpec
from stratuslab_lc_plugin.errors import (
    ConfigurationError,
    InvalidStateError,
    ProtocolError,
    ServiceUnavailableError,
    StratusLabError,
)
from stratuslab_lc_plugin.services import LocationServices
from stratuslab_lc_plugin.services.common import shared_deadline
from stratuslab_lc_plugin.services.marketplace import IMAGE_ID, ImageRecord, newest
from stratuslab_lc_plugin.services.one import VmRecord, gc_paused
from stratuslab_lc_plugin.services.pdisk import DISK_ID
from stratuslab_lc_plugin.vmtemplate import (
    CONTEXT_KEY,
    check_value,
    DISKS_BUS_PREFIX,
    MAX_NAME_LENGTH,
    NETWORKS,
    VmSpec,
    cloud_init_context,
    render,
)

__all__ = ["ComputeMixin", "StratusLabNode", "NodeList", "node_state", "write_once", "within_timeout", "CLIENT_TOKEN_KEY"]

#: Context variable that carries the client token of ``create_node`` (see ``ex_client_token``).
CLIENT_TOKEN_KEY = "LIBCLOUD_CLIENT_TOKEN"
CLIENT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")

# (STATE, LCM_STATE) -> NodeState; STATE 3 (ACTIVE) is refined by LCM_STATE (spec §2.5).
_STATE = {
    0: NodeState.PENDING,  # INIT
    1: NodeState.PENDING,  # PENDING
    2: NodeState.PENDING,  # HOLD
    4: NodeState.STOPPED,
    5: NodeState.SUSPENDED,
    6: NodeState.TERMINATED,  # DONE
    7: NodeState.ERROR,  # FAILED
}
_LCM_STATE = {
    0: NodeState.PENDING,  # LCM_INIT
    1: NodeState.STARTING,  # PROLOG
    2: NodeState.STARTING,  # BOOT
    3: NodeState.RUNNING,
    4: NodeState.MIGRATING,
    5: NodeState.STOPPING,  # SAVE_STOP
    6: NodeState.STOPPING,  # SAVE_SUSPEND
    7: NodeState.MIGRATING,  # SAVE_MIGRATE
    8: NodeState.MIGRATING,  # PROLOG_MIGRATE
    9: NodeState.STARTING,  # PROLOG_RESUME
    10: NodeState.STOPPING,  # EPILOG_STOP
    11: NodeState.STOPPING,  # EPILOG
    12: NodeState.STOPPING,  # SHUTDOWN
    13: NodeState.STOPPING,  # CANCEL
    14: NodeState.ERROR,  # FAILURE
    15: NodeState.STOPPING,  # CLEANUP
    16: NodeState.UNKNOWN,
}

# ONE 3.2 actions and the states that allow them, for errors that say what would work.
_ACTION_NEEDS = {
    "reboot": "RUNNING",
    "shutdown": "RUNNING",
    "stop": "RUNNING",
    "suspend": "RUNNING",
    "resume": "STOPPED or SUSPENDED",
}


def node_state(state: int, lcm_state: int) -> str:
    if state == 3:
        return _LCM_STATE.get(lcm_state, NodeState.UNKNOWN)
    return _STATE.get(state, NodeState.UNKNOWN)


class StratusLabNode(Node):
    """A Libcloud ``Node`` whose ``uuid`` includes its location.

    Node ids are OpenNebula VM ids, unique within a location only; Libcloud derives
    ``uuid`` from the id and driver type alone, so VM 7 of two clouds would share one.
    """

    def get_uuid(self) -> str:
        key = "%s:%s:%s" % (self.extra.get("location"), self.id, self.driver.type)
        return hashlib.sha1(key.encode("utf-8")).hexdigest()


class NodeList(list):
    """The nodes (or, from ``list_volumes``, volumes) the locations gave, and why some did not.

    ``failures`` maps each location that failed to its exception.
    """

    def __init__(self, nodes: Iterable[Node] = (), failures: Optional[dict] = None) -> None:
        super().__init__(nodes)
        self.failures: dict[str, Exception] = failures or {}


LocationArg = Union[NodeLocation, str, None]


def within_timeout(method):
    """Bound all the remote calls of a driver method by the driver's one timeout.

    For methods that make several calls, some only after a lost answer (lookups).
    """

    @functools.wraps(method)
    def bounded(self, *args, **kwargs):
        with shared_deadline(self._pool.timeout):
            return method(self, *args, **kwargs)

    return bounded


class ComputeMixin:
    """Locations, sizes, images and nodes. Needs ``self._config`` and ``self._services()``."""

    # -- locations and sizes (configuration only, no remote call) -------------------------

    def list_locations(self) -> list[NodeLocation]:
        return [self._to_location(loc) for loc in self._config.locations.values()]

    def list_sizes(self, location: LocationArg = None) -> list[NodeSize]:
        if location is not None:
            self._location_config(location)  # sizes do not depend on it, but it must exist
        return [self._to_size(spec) for spec in self._config.sizes.values()]

    # -- images -----------------------------------------------------------------------------

    def list_images(self, location: LocationArg = None) -> list[NodeImage]:
        """The valid images of the location's Marketplace, one per image id.

        When several endorsers vouch for the same image, the newest endorsement describes
        it and ``extra['endorsers']`` lists them all.
        """
        services = self._services(location)
        by_id: dict[str, list[ImageRecord]] = {}
        for record in services.marketplace.list_images():
            by_id.setdefault(record.id, []).append(record)
        return [self._to_image(newest(records), services.location, records) for records in by_id.values()]

    def get_image(self, image_id: str, ex_location: LocationArg = None) -> NodeImage:
        services = self._services(ex_location)
        return self._to_image(services.marketplace.get_image(image_id), services.location)

    # -- nodes ------------------------------------------------------------------------------

    def list_nodes(self, ex_location: LocationArg = None, ex_partial: bool = False) -> list[Node]:
        """Every node of every location, or of ``ex_location`` only.

        Locations are asked concurrently. When one fails, the error names it; with
        ``ex_partial=True`` the nodes of the others are returned in a :class:`NodeList`
        whose ``failures`` say which locations failed and why.
        """
        return self._gather("list_nodes", self._list_location_nodes, ex_location, ex_partial)

    def ex_get_node(self, node_id: Union[str, int], location: LocationArg = None) -> Node:
        services = self._services(location)
        return self._to_node(services.one.vm(_vm_id(node_id)), services.location)

    @within_timeout
    def create_node(
        self,
        name: str,
        size: Union[NodeSize, str],
        image: Union[NodeImage, str, object],
        location: LocationArg = None,
        auth: Optional[NodeAuthSSHKey] = None,
        ex_network: str = "public",
        ex_context: Optional[dict] = None,
        ex_cloud_init: Optional[str] = None,
        ex_requirements: Optional[str] = None,
        ex_volatile_disk: Optional[int] = None,
        ex_persistent_volumes: Sequence[object] = (),
        ex_disks_bus: Optional[str] = None,
        ex_client_token: Optional[str] = None,
        **kwargs,
    ) -> Node:
        """Start a VM and return its node (state pending, with its IP address).

        :param image: a Marketplace image (``NodeImage`` or its id), a persistent volume
            (``StorageVolume`` or its UUID) to boot from, or the URL of an image.
        :param auth: ``NodeAuthSSHKey`` whose key goes to the VM's context; without it
            the location's ``user_public_key_file`` is used.
        :param ex_network: ``public`` (default), ``local`` or ``private``.
        :param ex_context: extra context variables (name -> value).
        :param ex_cloud_init: user data for StratusLab's cloud-init context method.
        :param ex_requirements: an OpenNebula REQUIREMENTS expression.
        :param ex_volatile_disk: size in GiB of an extra disk that lives as long as the VM.
        :param ex_persistent_volumes: volumes (or UUIDs) attached when the VM boots.
        :param ex_disks_bus: ``ide``, ``scsi`` or ``virtio`` for images that do not say.
        :param ex_client_token: makes retries of this call idempotent: a VM already
            created with this token is returned instead of a new one.

        Every argument is checked before any VM is created.
        """
        if kwargs:
            raise TypeError("create_node() got unexpected arguments: %s" % ", ".join(sorted(kwargs)))
        services = self._services(location)
        loc = services.location
        spec_size = self._size_spec(size)
        _check_name(name)
        if ex_network not in NETWORKS:
            raise ValueError("ex_network must be one of %s, not %r" % (", ".join(NETWORKS), ex_network))
        context = _check_context(ex_context)
        if ex_requirements is not None:
            check_value(ex_requirements, "ex_requirements")
        volatile_mib = _check_volatile(ex_volatile_disk)
        if ex_disks_bus is not None and ex_disks_bus not in DISKS_BUS_PREFIX:
            raise ValueError("ex_disks_bus must be one of %s, not %r" % (", ".join(DISKS_BUS_PREFIX), ex_disks_bus))
        persistent = [self._pdisk_source(loc, _volume_id(v)) for v in ex_persistent_volumes]
        public_key = _public_key(auth, loc)
        token = ex_client_token or uuid.uuid4().hex
        if not CLIENT_TOKEN.fullmatch(token):
            raise ValueError("ex_client_token is 1 to 64 letters, digits, '-' or '_', not %r" % (token,))

        source, driver, bus, ports = self._image_source(services, image)
        if loc.default_context_method == "cloud-init" or ex_cloud_init is not None:
            context.update(cloud_init_context(ex_cloud_init, public_key))
        context[CLIENT_TOKEN_KEY] = token
        template = render(
            VmSpec(
                cpu=spec_size.cpu,
                ram=spec_size.ram,
                swap=spec_size.swap,
                image_source=source,
                disk_driver=driver,
                disks_bus=ex_disks_bus or bus,
                name=name,
                requirements=ex_requirements,
                network=ex_network,
                public_key=public_key,
                context=context,
                volatile_disk_mib=volatile_mib,
                persistent_sources=persistent,
                inbound_ports=ports,
            )
        )
        vm_id = self._allocate_once(services, template, token, check_first=ex_client_token is not None)
        return self._to_node(services.one.vm(vm_id), loc)

    def destroy_node(self, node: Node) -> bool:
        return self._vm_action(node, "finalize")

    def reboot_node(self, node: Node) -> bool:
        return self._vm_action(node, "reboot")

    def stop_node(self, node: Node) -> bool:
        """Save the VM to the front end and stop it (ONE ``stop``); ``start_node`` resumes it."""
        return self._vm_action(node, "stop")

    def start_node(self, node: Node) -> bool:
        return self._vm_action(node, "resume")

    def ex_suspend_node(self, node: Node) -> bool:
        """Pause the VM, keeping it on its host (ONE ``suspend``); ``start_node`` resumes it."""
        return self._vm_action(node, "suspend")

    def ex_shutdown_node(self, node: Node) -> bool:
        """Graceful (ACPI) shutdown; the VM ends as ``terminated``."""
        return self._vm_action(node, "shutdown")

    def wait_until_running(self, nodes, *args, **kwargs):
        # Ask only the nodes' own location rather than every location of the driver.
        locations = {node.extra.get("location") for node in nodes}
        if len(locations) == 1 and not kwargs.get("ex_list_nodes_kwargs"):
            kwargs["ex_list_nodes_kwargs"] = {"ex_location": locations.pop()}
        return super().wait_until_running(nodes, *args, **kwargs)

    # -- the pieces -------------------------------------------------------------------------

    def _list_location_nodes(self, location: LocationConfig) -> list[Node]:
        vms = self._services(location.id).one.vms()
        with gc_paused():
            return [self._to_node(vm, location) for vm in vms]

    def _gather(self, operation: str, function, location: LocationArg, partial: bool) -> NodeList:
        """Concatenate ``function(location)`` over one location or all of them.

        Several locations are asked concurrently. A failure is raised (its message starts
        with its location; when several failed, the first is raised and its message names
        the others) or, with ``partial``, reported in the result's ``failures``.
        """
        if location is not None:
            locations = [self._location_config(location)]
        else:
            locations = list(self._config.locations.values())

        def guarded(loc: LocationConfig):
            try:
                return function(loc), None
            except Exception as exc:  # noqa: BLE001 - reported per location below
                return None, exc

        if len(locations) == 1:
            results = [guarded(locations[0])]
        else:
            # Each task is bounded by the driver's timeout, so waiting for it is too.
            futures = [self._location_workers(loc.id).submit(guarded, loc) for loc in locations]
            results = [future.result() for future in futures]
        items, failures = NodeList(), {}
        for loc, (result, error) in zip(locations, results):
            if error is not None:
                failures[loc.id] = error
            else:
                items.extend(result)
        if failures and not partial:
            first = next(iter(failures.values()))
            others = [str(e) for e in list(failures.values())[1:]]
            if others and isinstance(first, StratusLabError):
                # The first error keeps its class (InvalidCredsError stays catchable).
                first.message = "%s; %s also failed: %s" % (first.message, operation, "; ".join(others))
            raise first
        items.failures = failures
        return items

    def _location_workers(self, location_id: str) -> ThreadPoolExecutor:
        """The threads that ask ``location_id`` on behalf of ``_gather``, kept for the driver's life.

        Connections belong to threads, and these threads only ever ask this location, so
        each call finds a warm (keep-alive, resumed TLS) connection instead of paying a
        handshake whenever a thread of a shared pool happens to pick the location up.
        Threads are made on demand: one serves a single caller, concurrent callers get
        their own, up to 16 per location.
        """
        with self._lock:
            pools = self.__dict__.setdefault("_location_pools", {})
            pool = pools.get(location_id)
            if pool is None:
                pool = pools[location_id] = ThreadPoolExecutor(
                    max_workers=16, thread_name_prefix="stratuslab-%s" % location_id
                )
        return pool

    def _allocate_once(self, services: LocationServices, template: str, token: str, check_first: bool) -> int:
        """``one.vm.allocate`` without ever making two VMs for one token (see :func:`write_once`).

        A token the caller chose may already name a VM (a retry of theirs): look first.
        """
        if check_first:
            existing = self._vm_with_token(services, token)
            if existing is not None:
                return existing
        try:
            return write_once(lambda: services.one.allocate(template), lambda: self._vm_with_token(services, token))
        except (ServiceUnavailableError, ProtocolError) as exc:
            exc.message += (
                " (client token %s: if the VM was made or appears later, create_node with "
                "ex_client_token=%r returns it instead of starting another)" % (token, token)
            )
            exc.client_token = token
            raise

    def _vm_with_token(self, services: LocationServices, token: str) -> Optional[int]:
        for vm in services.one.vms():
            if vm.context.get(CLIENT_TOKEN_KEY) == token:
                return vm.id
        return None

    def _vm_action(self, node: Node, action: str) -> bool:
        services = self._services(node.extra.get("location"))
        try:
            services.one.action(action, _vm_id(node.id))
        except InvalidStateError as exc:
            needs = _ACTION_NEEDS.get(action)
            if needs:
                exc.message = "%s (%s needs a %s VM)" % (exc.message, action, needs)
            raise
        return True

    def _image_source(self, services: LocationServices, image) -> tuple[str, str, str, list[int]]:
        """DISK 0's source, driver and bus, and the image's inbound ports (spec §3.5)."""
        loc = services.location
        image_id = _image_id(image)
        if IMAGE_ID.fullmatch(image_id):
            record = services.marketplace.get_image(image_id)
            if not record.locations:
                raise ValueError(
                    "image %s has no location in the Marketplace at %s: it cannot be started"
                    % (image_id, loc.marketplace_endpoint)
                )
            if record.disks_bus not in DISKS_BUS_PREFIX:
                raise ValueError("image %s has an unknown disks bus %r" % (image_id, record.disks_bus))
            source = "%s/metadata/%s" % (loc.marketplace_endpoint, image_id)
            return source, record.format or "raw", record.disks_bus, record.inbound_ports
        if DISK_ID.fullmatch(image_id):
            return self._pdisk_source(loc, image_id), "raw", "ide", []
        if image_id.split(":", 1)[0] in ("http", "https", "ftp", "pdisk"):
            return image_id, "raw", "ide", []
        raise ValueError(
            "image %r is neither a Marketplace image id, a volume UUID nor a URL" % (image_id,)
        )

    def _pdisk_source(self, location: LocationConfig, disk_id: str) -> str:
        if not DISK_ID.fullmatch(disk_id):
            raise ValueError("%r is not a volume UUID" % (disk_id,))
        return "pdisk:%s/%s" % (location.pdisk_endpoint.rstrip("/"), disk_id)

    def _size_spec(self, size: Union[NodeSize, str]) -> SizeSpec:
        size_id = size.id if isinstance(size, NodeSize) else size
        spec = self._config.sizes.get(size_id)
        if spec is None:
            raise ValueError(
                "unknown size %r; sizes are %s" % (size_id, ", ".join(sorted(self._config.sizes)))
            )
        return spec

    # -- Libcloud objects -------------------------------------------------------------------

    def _to_location(self, location: LocationConfig) -> NodeLocation:
        return NodeLocation(id=location.id, name=location.name, country=location.country, driver=self)

    def _to_size(self, spec: SizeSpec) -> NodeSize:
        return NodeSize(
            id=spec.name,
            name=spec.name,
            ram=spec.ram,
            disk=_gib(spec.swap),
            bandwidth=None,
            price=None,
            driver=self,
            extra={"cpu": spec.cpu, "swap": spec.swap},
        )

    def _to_image(self, record: ImageRecord, location: LocationConfig,
                  endorsements: Sequence[ImageRecord] = ()) -> NodeImage:
        return NodeImage(
            id=record.id,
            name=record.name,
            driver=self,
            extra={
                "location": location.id,
                "os": record.os,
                "os_version": record.os_version,
                "arch": record.os_arch,
                "version": record.version,
                "format": record.format,
                "disks_bus": record.disks_bus,
                "kind": record.kind,
                "endorser": record.endorser_email,
                "endorsers": sorted({r.endorser_email for r in endorsements or [record] if r.endorser_email}),
                "created": record.created,
                "valid_until": record.valid,
                "locations": record.locations,
                "inbound_ports": record.inbound_ports,
                "checksums": record.checksums,
                "bytes": record.bytes,
                "compression": record.compression,
                "description": record.description,
            },
        )

    def _to_node(self, vm: VmRecord, location: LocationConfig) -> Node:
        public = [n.ip for n in vm.nics if n.ip and n.network == "public"]
        private = [n.ip for n in vm.nics if n.ip and n.network != "public"]
        swap = next((d.size for d in vm.disks if d.type == "swap" and d.size), 0)
        image_disk = next((d for d in vm.disks if d.source and d.type not in ("swap", "fs", "block")), None)
        image_id = image_disk.source.rstrip("/").rsplit("/", 1)[-1] if image_disk else None
        size = NodeSize(
            id=self._size_name(vm, swap) or "%s_size" % vm.id,
            name=self._size_name(vm, swap) or "%s_size" % vm.id,
            ram=vm.memory,
            disk=_gib(swap),
            bandwidth=None,
            price=None,
            driver=self,
            extra={"cpu": vm.vcpu or (int(vm.cpu) if vm.cpu else None), "swap": swap},
        )
        ssh_port = vm.template.get("SSH_PORT")
        return StratusLabNode(
            id=str(vm.id),
            name=vm.name,
            state=node_state(vm.state, vm.lcm_state),
            public_ips=public,
            private_ips=private,
            driver=self,
            size=size,
            image=NodeImage(id=image_id, name=image_id, driver=self) if image_id else None,
            created_at=datetime.datetime.fromtimestamp(vm.stime, datetime.timezone.utc) if vm.stime else None,
            extra={
                "location": location.id,
                "host": vm.host,
                "owner": vm.owner,
                "group": vm.group,
                "one_state": vm.state,
                "lcm_state": vm.lcm_state,
                "state_label": vm.state_label,
                "vcpu": vm.vcpu,
                "cpu": vm.cpu,
                "memory": vm.memory,
                "network": vm.nics[0].network if vm.nics else None,
                "macs": [n.mac for n in vm.nics if n.mac],
                "disks": [
                    {"id": d.disk_id, "target": d.target, "source": d.source, "type": d.type, "size": d.size}
                    for d in vm.disks
                ],
                "image_source": image_disk.source if image_disk else None,
                "ssh_port": int(ssh_port) if ssh_port and ssh_port.isdigit() else 22,
                "client_token": vm.context.get(CLIENT_TOKEN_KEY),
            },
        )

    def _size_name(self, vm: VmRecord, swap: int) -> Optional[str]:
        for spec in self._config.sizes.values():
            if spec.ram == vm.memory and spec.swap == swap and spec.cpu == vm.vcpu:
                return spec.name
        return None


T = TypeVar("T")


def write_once(write: Callable[[], T], lookup: Callable[[], Optional[T]]) -> T:
    """Run a write whose answer may be lost, without ever doing it twice.

    When the answer is lost or garbled (:class:`ServiceUnavailableError`,
    :class:`ProtocolError`) the write may or may not have happened. ``lookup()`` then
    says what it made (or None): that result is returned. Only when nothing is found is
    the write sent again, once, and not at all when the call timed out, since the
    server may still be working on it (a second write could then make a duplicate).
    When ``lookup()`` itself fails, the write's error is raised with the reason added.
    """
    for attempt in (1, 2):
        try:
            return write()
        except (ServiceUnavailableError, ProtocolError) as exc:
            try:
                found = lookup()
            except StratusLabError as lookup_error:
                exc.message += "; whether it was done could not be checked: %s" % lookup_error
                raise exc from None
            if found is not None:
                return found
            if attempt == 2 or getattr(exc, "timed_out", False):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _gib(mib: int) -> int:
    """``NodeSize.disk`` is in GB for Libcloud: the swap disk, rounded up to whole GiB.

    (The 14.06 driver put MiB there; the exact size stays in ``extra['swap']``, in MiB.)
    """
    return -(-mib // 1024)


def _vm_id(node_id: Union[str, int]) -> int:
    try:
        return int(node_id)
    except (TypeError, ValueError):
        raise ValueError("%r is not a StratusLab node id (an OpenNebula VM number)" % (node_id,)) from None


def _image_id(image) -> str:
    if isinstance(image, str):
        return image.strip()
    image_id = getattr(image, "id", None)
    if not isinstance(image_id, str):
        raise TypeError("image must be a NodeImage, a StorageVolume or a string, not %r" % (image,))
    return image_id


def _volume_id(volume) -> str:
    return volume if isinstance(volume, str) else getattr(volume, "id", repr(volume))


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError("name is %d characters long; OpenNebula allows %d" % (len(name), MAX_NAME_LENGTH))
    if any(ord(c) < 32 for c in name):
        raise ValueError("name must not contain control characters")
    # OpenNebula 3.2 writes NAME into its XML documents unescaped: one such name would
    # make the location's whole VM pool unreadable.
    if any(c in name for c in "<>&"):
        raise ValueError("name must not contain <, > or & (OpenNebula 3.2 does not escape them)")
    check_value(name, "name")


def _check_context(context: Optional[dict]) -> dict[str, str]:
    result = {}
    for key, value in (context or {}).items():
        if not isinstance(key, str) or not CONTEXT_KEY.fullmatch(key):
            raise ValueError("ex_context key %r must be letters, digits and '_'" % (key,))
        if key.upper() in ("TARGET", "PUBLIC_KEY", CLIENT_TOKEN_KEY):
            raise ValueError("ex_context key %r is set by the driver" % (key,))
        if value is None:
            raise ValueError("ex_context value of %r must not be None" % (key,))
        check_value(str(value), "ex_context value of %r" % (key,))
        if "]]>" in str(value):
            raise ValueError("ex_context value of %r must not contain ']]>' (it ends ONE's CDATA)" % (key,))
        result[key.upper()] = str(value)
    return result


def _check_volatile(size_gib: Optional[int]) -> Optional[int]:
    if size_gib is None:
        return None
    if isinstance(size_gib, bool) or not isinstance(size_gib, int) or size_gib <= 0:
        raise ValueError("ex_volatile_disk is a size in GiB (a positive integer), not %r" % (size_gib,))
    return size_gib * 1024


def _public_key(auth, location: LocationConfig) -> str:
    if isinstance(auth, NodeAuthPassword):
        raise ValueError("StratusLab VMs accept SSH keys only: pass auth=NodeAuthSSHKey(public_key)")
    if auth is not None:
        if not isinstance(auth, NodeAuthSSHKey):
            raise TypeError("auth must be a NodeAuthSSHKey, not %r" % (type(auth).__name__,))
        return auth.pubkey.strip() + "\n"
    path = location.public_key_path()
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ConfigurationError(
            "no SSH public key for the VM: pass auth=NodeAuthSSHKey(...) or set "
            "user_public_key_file in [%s] of %s (%s: %s)"
            % (location.id, location.source, path, exc.strerror),
            path=location.source, section=location.id, key="user_public_key_file",
        ) from None
    # ssh-keygen's RFC 4716 export carries "Comment:" headers the VM must not receive.
    key = "\n".join(line for line in lines if not line.startswith("Comment:")).strip()
    if not key:
        raise ConfigurationError("SSH public key file %s is empty" % path, path=location.source, section=location.id)
    return key + "\n"
