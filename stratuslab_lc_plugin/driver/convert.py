"""What the services' records become for Libcloud: nodes, images, sizes, locations, volumes.

The services read their answers into plain records (``VmRecord``, ``ImageRecord``,
``DiskRecord``); these functions turn them into Libcloud's objects, and are the only place
that decides what a Libcloud user sees in ``node.state``, ``node.extra``, ``size.disk``...
They make no remote call.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from libcloud.compute.base import Node, NodeImage, NodeLocation, NodeSize, StorageVolume
from libcloud.compute.types import NodeState, StorageVolumeState

from stratuslab_lc_plugin.config import LocationConfig, SizeSpec
from stratuslab_lc_plugin.services.marketplace import ImageRecord
from stratuslab_lc_plugin.services.one import LcmState, VmRecord, VmState
from stratuslab_lc_plugin.services.pdisk import DiskRecord, Mount

__all__ = [
    "CLIENT_TOKEN_KEY",
    "KEY_NAME_KEY",
    "StratusLabNode",
    "StratusLabNodeSize",
    "node_state",
    "to_image",
    "to_location",
    "to_node",
    "to_size",
    "to_volume",
]

#: Context variable that carries the client token of ``create_node`` (see ``ex_client_token``).
CLIENT_TOKEN_KEY = "LIBCLOUD_CLIENT_TOKEN"
#: Context variable naming the key pair whose public key the VM got (``extra['key_name']``).
KEY_NAME_KEY = "LIBCLOUD_KEY_NAME"

# STATE -> NodeState, for every STATE but ACTIVE, which LCM_STATE refines (spec §2.5).
_STATE = {
    VmState.INIT: NodeState.PENDING,
    VmState.PENDING: NodeState.PENDING,
    VmState.HOLD: NodeState.PENDING,
    VmState.STOPPED: NodeState.STOPPED,
    VmState.SUSPENDED: NodeState.SUSPENDED,
    VmState.DONE: NodeState.TERMINATED,
    VmState.FAILED: NodeState.ERROR,
}
_LCM_STATE = {
    LcmState.LCM_INIT: NodeState.PENDING,
    LcmState.PROLOG: NodeState.STARTING,
    LcmState.BOOT: NodeState.STARTING,
    LcmState.RUNNING: NodeState.RUNNING,
    LcmState.MIGRATE: NodeState.MIGRATING,
    LcmState.SAVE_STOP: NodeState.STOPPING,
    LcmState.SAVE_SUSPEND: NodeState.STOPPING,
    LcmState.SAVE_MIGRATE: NodeState.MIGRATING,
    LcmState.PROLOG_MIGRATE: NodeState.MIGRATING,
    LcmState.PROLOG_RESUME: NodeState.STARTING,
    LcmState.EPILOG_STOP: NodeState.STOPPING,
    LcmState.EPILOG: NodeState.STOPPING,
    LcmState.SHUTDOWN: NodeState.STOPPING,
    LcmState.CANCEL: NodeState.STOPPING,
    LcmState.FAILURE: NodeState.ERROR,
    LcmState.CLEANUP: NodeState.STOPPING,
    LcmState.UNKNOWN: NodeState.UNKNOWN,
}

# Disk types of a VM that are not the image it booted from.
_NOT_THE_IMAGE = ("swap", "fs", "block")


def node_state(state: int, lcm_state: int) -> NodeState:
    """Libcloud's ``NodeState`` for an OpenNebula (STATE, LCM_STATE) pair."""
    if state == VmState.ACTIVE:
        return _LCM_STATE.get(lcm_state, NodeState.UNKNOWN)  # type: ignore[call-overload]
    return _STATE.get(state, NodeState.UNKNOWN)  # type: ignore[call-overload]


class StratusLabNode(Node):
    """A Libcloud ``Node`` whose ``uuid`` includes its location, with the 14.06 node's names.

    Node ids are OpenNebula VM ids, unique within a location only; Libcloud derives
    ``uuid`` from the id and driver type alone, so VM 7 of two clouds would share one.
    ``location`` and ``host`` are as in the 14.06 driver, read from the node's last listing;
    ``get_node_state()`` asks the cloud now (``node.state`` itself never does).
    """

    def get_uuid(self) -> str:
        key = "%s:%s:%s" % (self.extra.get("location"), self.id, self.driver.type)
        return hashlib.sha1(key.encode("utf-8")).hexdigest()

    @property
    def location(self) -> NodeLocation:
        """The node's location (14.06: ``node.location``)."""
        return to_location(self.driver.location_config(self.extra.get("location")), self.driver)

    @property
    def cached_state(self) -> NodeState:
        """14.06's name for the state last read (here, ``state`` itself)."""
        return self.state

    @cached_state.setter
    def cached_state(self, value: NodeState) -> None:
        self.state = value

    @property
    def host(self) -> Optional[str]:
        """The OpenNebula host the VM runs on (``extra['host']``), None before it is deployed."""
        return self.extra.get("host")

    def get_node_state(self) -> NodeState:
        """The node's state as the cloud sees it now (one ``one.vm.info``); also updates this node."""
        fresh = self.driver.ex_get_node(self.id, self.extra.get("location"))
        self.state, self.public_ips, self.private_ips = fresh.state, fresh.public_ips, fresh.private_ips
        self.extra = dict(fresh.extra)
        return fresh.state

    def get_vm_info(self) -> None:
        """Not available: the 14.06 client's VM info object is gone."""
        raise AttributeError(
            "StratusLabNode.get_vm_info() returned the 14.06 client's VM object, which this driver "
            "does not have: use driver.ex_get_node(node.id, node.extra['location']) and its extra"
        )


class StratusLabNodeSize(NodeSize):
    """A size (StratusLab instance type): ``ram`` in MiB, ``cpu`` the number of CPUs.

    ``disk`` is None, as in Libcloud's OpenNebula driver: an instance type fixes CPUs, RAM
    and a swap disk, while the root disk is the image's. The swap disk's size is
    ``extra['swap']`` (MiB). The arguments are the 14.06 class's.
    """

    def __init__(self, size_id: str, name: str, ram: Optional[int], disk: Optional[int] = None,
                 bandwidth: Optional[int] = None, price: Optional[float] = None, driver: Any = None,
                 cpu: Optional[int] = 1, extra: Optional[Dict[str, Any]] = None) -> None:
        # None where StratusLab says nothing, as in Libcloud's OpenNebula driver (its
        # annotations want numbers).
        super().__init__(id=size_id, name=name, ram=ram, disk=disk, bandwidth=bandwidth,  # type: ignore[arg-type]
                         price=price, driver=driver, extra=dict(extra or {}, cpu=cpu))  # type: ignore[arg-type]
        self.cpu = cpu

    def __repr__(self) -> str:
        return "<StratusLabNodeSize: id=%s, ram=%s, cpu=%s, swap=%s MiB>" % (
            self.id, self.ram, self.cpu, self.extra.get("swap"),
        )


def to_location(location: LocationConfig, driver: Any) -> NodeLocation:
    return NodeLocation(id=location.id, name=location.name, country=location.country, driver=driver)


def to_size(spec: SizeSpec, driver: Any) -> StratusLabNodeSize:
    return StratusLabNodeSize(spec.name, spec.name, spec.ram, driver=driver, cpu=spec.cpu, extra={"swap": spec.swap})


def to_image(record: ImageRecord, location: LocationConfig, driver: Any,
             endorsements: Sequence[ImageRecord] = ()) -> NodeImage:
    """One Marketplace image; ``endorsements`` are every entry of the same image id."""
    return NodeImage(
        id=record.id,
        name=record.name,
        driver=driver,
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


def to_node(vm: VmRecord, location: LocationConfig, driver: Any, sizes: Mapping[str, SizeSpec]) -> StratusLabNode:
    """The node of a VM of ``location``; ``sizes`` name the instance type it was started with."""
    public = [n.ip for n in vm.nics if n.ip and n.network == "public"]
    private = [n.ip for n in vm.nics if n.ip and n.network != "public"]
    swap = next((d.size for d in vm.disks if d.type == "swap" and d.size), 0)
    image_disk = next((d for d in vm.disks if d.source and d.type not in _NOT_THE_IMAGE), None)
    image_id = image_disk.source.rstrip("/").rsplit("/", 1)[-1] if image_disk and image_disk.source else None
    size_name = _size_name(vm, swap, sizes.values())
    cpus = vm.vcpu or (int(vm.cpu) if vm.cpu else None)
    size = StratusLabNodeSize(size_name or "%s_size" % vm.id, size_name or "%s_size" % vm.id, vm.memory,
                              driver=driver, cpu=cpus, extra={"swap": swap})
    ssh_port = vm.template.get("SSH_PORT")
    return StratusLabNode(
        id=str(vm.id),
        name=vm.name,
        state=node_state(vm.state, vm.lcm_state),
        public_ips=public,
        private_ips=private,
        driver=driver,
        size=size,
        image=NodeImage(id=image_id, name=image_id, driver=driver) if image_id else None,
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
            # What tools written for EC2 or OpenStack read; StratusLab has no tags or
            # security groups (a VM's inbound ports come from its image).
            "key_name": vm.context.get(KEY_NAME_KEY),
            "tags": {},
            "security_group": [],
            "security_groups": [],
        },
    )


def _size_name(vm: VmRecord, swap: int, sizes: Iterable[SizeSpec]) -> Optional[str]:
    for spec in sizes:
        if spec.ram == vm.memory and spec.swap == swap and spec.cpu == vm.vcpu:
            return spec.name
    return None


def to_volume(disk: DiskRecord, location: LocationConfig, driver: Any, mounts: Sequence[Mount] = ()) -> StorageVolume:
    """A persistent disk; ``mounts`` are its current mounts (read after the disk: the fresher news)."""
    attachments: List[Dict[str, str]] = [{"node_id": m.vm_id, "device": m.device} for m in mounts]
    return StorageVolume(
        id=disk.uuid,
        name=disk.tag,
        size=disk.size,
        driver=driver,
        state=StorageVolumeState.INUSE if attachments else StorageVolumeState.AVAILABLE,
        extra={
            "location": location.id,
            "owner": disk.owner,
            "tag": disk.tag,
            "visibility": disk.visibility,
            "type": disk.type,
            "mount_count": disk.count,
            "attachments": attachments,
            "device": attachments[0]["device"] if len(attachments) == 1 else None,
            "identifier": disk.identifier,
            "quarantine": disk.quarantine,
        },
    )
