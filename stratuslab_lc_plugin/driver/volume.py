"""VolumeMixin: StratusLab persistent disks (pdisk) as Libcloud storage volumes.

Everything about a volume is read from the pdisk server, including where it is mounted,
so a volume attached by one driver object (or process) can be detached by another; the
14.06 driver remembered the node in memory and could not.

Creating and attaching survive a lost answer without duplicates (see
:func:`~stratuslab_lc_plugin.driver.core.write_once`): pdisk has no client tokens, so a lost
``create_volume`` answer is resolved by the tag. The disks tagged ``name`` are listed
before the disk is created; afterwards, the one new disk with that tag and size, not
attached, is the one created. Two or more such new disks (concurrent creations with the
same name and size) are ambiguous: none is adopted and the error names them. A lost
attach answer is resolved by the disk's mounts.
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Set

from libcloud.compute.base import Node, StorageVolume
from libcloud.compute.types import StorageVolumeState

from stratuslab_lc_plugin.config import LocationConfig
from stratuslab_lc_plugin.driver import arguments, convert
from stratuslab_lc_plugin.driver.core import DriverCore, LocationArg, NodeList, one_deadline, write_once
from stratuslab_lc_plugin.errors import InUseError, InvalidStateError, NotFoundError, ServiceError, StratusLabError
from stratuslab_lc_plugin.services.pdisk import DiskRecord, PdiskClient

__all__ = ["VolumeMixin"]


class VolumeMixin(DriverCore):
    """Persistent disks."""

    def list_volumes(self, ex_location: LocationArg = None, ex_partial: bool = False,
                     location: LocationArg = None, **kwargs: object) -> NodeList[StorageVolume]:
        """Every volume of every location (concurrently), or of ``ex_location`` only.

        ``location=`` is the 14.06 driver's name for ``ex_location``.
        """
        arguments.no_other_arguments("list_volumes", kwargs)
        if location is not None and ex_location is not None and location != ex_location:
            raise ValueError("list_volumes() got location=%r and ex_location=%r: give one" % (location, ex_location))
        chosen = ex_location if ex_location is not None else location
        return self._each_location("list_volumes", self._list_location_volumes, chosen, ex_partial)

    def ex_get_volume(self, volume_id: str, location: LocationArg = None) -> StorageVolume:
        """The volume ``volume_id`` (a pdisk UUID) of ``location`` (default: the default location)."""
        arguments.check_disk_id(volume_id)
        loc = self.location_config(location)
        return self._volume(loc, self._services(loc).pdisk.get_disk(volume_id))

    @one_deadline
    def create_volume(
        self,
        size: int,
        name: str,
        location: LocationArg = None,
        snapshot: None = None,
        ex_visibility: str = "private",
    ) -> StorageVolume:
        """Create a persistent disk of ``size`` GiB (1 to 1024) tagged ``name``."""
        arguments.check_volume_request(size, name, ex_visibility, snapshot)
        services = self._services(location)
        pdisk = services.pdisk
        before = {disk.uuid for disk in pdisk.list_disks() if disk.tag == name}
        disk_id = write_once(
            lambda: pdisk.create_disk(size, name, ex_visibility),
            lambda: _new_disk(pdisk, name, size, before),
        )
        return self._volume(services.location, pdisk.get_disk(disk_id))

    def destroy_volume(self, volume: StorageVolume, ex_location: LocationArg = None) -> bool:
        location, disk = self._locate_volume(volume, ex_location)
        pdisk = self._services(location).pdisk
        try:
            pdisk.delete_disk(disk)
        except InUseError as exc:
            try:
                vms = ", ".join("VM %s (%s)" % (m.vm_id, m.device) for m in pdisk.mounts(disk))
            except StratusLabError:
                vms = ""  # naming the VMs is a courtesy: the in-use error is what matters
            if vms:
                exc.add_detail(": it is attached to %s" % vms)
            raise
        return True

    @one_deadline
    def attach_volume(self, node: Node, volume: StorageVolume, device: Optional[str] = None,
                      ex_location: LocationArg = None) -> bool:
        """Hot-plug the volume into the node.

        The pdisk server chooses the device (``vdz``, then ``vdy``...) and this method
        stores it in ``volume.extra['device']``. A ``device`` given by portable code is
        accepted; when the server chose another one, a warning says which.
        """
        location, vm_id = self._locate_node(node, ex_location)
        # A volume that does not say where it is: its UUID can only name a disk of the node's location.
        recorded = (getattr(volume, "extra", None) or {}).get("location")
        volume_location, disk = self._locate_volume(volume, None if recorded else location.id)
        if volume_location.id != location.id:
            raise ValueError(
                "volume %s is in location %s but node %s is in %s; nothing was sent"
                % (disk, volume_location.id, vm_id, location.id)
            )
        services = self._services(location)
        vm = services.one.vm(vm_id)
        host = vm.host
        if not host:
            raise InvalidStateError(
                "%s: node %s is not deployed on a host yet (%s); attach once it runs"
                % (location.id, vm_id, vm.state_label),
                location=location.id, operation="attach_volume",
            )
        pdisk = services.pdisk
        for mount in pdisk.mounts(disk):
            if mount.vm_id == str(vm.id):
                raise InvalidStateError(
                    "%s: volume %s is already attached to node %s as %s"
                    % (location.id, disk, vm_id, mount.device),
                    location=location.id, operation="attach_volume",
                )
        chosen = write_once(
            lambda: pdisk.attach(disk, host, vm.id),
            lambda: next((m.device for m in pdisk.mounts(disk) if m.vm_id == str(vm.id)), None),
        )
        if device is not None and _device_name(device) != chosen:
            warnings.warn(
                "attach_volume: the pdisk server chose device %s for volume %s on node %s, not %s "
                "(StratusLab does not let the caller choose); see volume.extra['device']"
                % (chosen, disk, vm_id, device),
                UserWarning,
                stacklevel=3,  # the caller, past one_deadline's wrapper
            )
        extra = volume.extra if volume.extra is not None else {}
        extra["device"] = chosen
        extra.setdefault("attachments", []).append({"node_id": str(vm.id), "device": chosen})
        extra.setdefault("location", location.id)
        volume.extra = extra
        volume.state = StorageVolumeState.INUSE
        return True

    @one_deadline
    def detach_volume(self, volume: StorageVolume, ex_node: Optional[Node] = None,
                      ex_location: LocationArg = None) -> bool:
        """Detach the volume from the node it is attached to (found on the server).

        A public volume attached to several nodes needs ``ex_node`` to say which.
        """
        location, disk = self._locate_volume(volume, ex_location)
        node_vm: Optional[int] = None
        if ex_node is not None:
            node_location, node_vm = self._locate_node(ex_node, location.id)
            if node_location.id != location.id:
                raise ValueError("ex_node %s is in location %s, not %s; nothing was sent"
                                 % (node_vm, node_location.id, location.id))
        pdisk = self._services(location).pdisk
        mounts = pdisk.mounts(disk)
        if node_vm is not None:
            mounts = [m for m in mounts if m.vm_id == str(node_vm)]
        if not mounts:
            raise InvalidStateError(
                "%s: volume %s is not attached%s"
                % (location.id, disk, " to node %s" % node_vm if node_vm is not None else ""),
                location=location.id, operation="detach_volume",
            )
        if len(mounts) > 1:
            raise ValueError(
                "volume %s is attached to nodes %s: pass ex_node to say which"
                % (disk, ", ".join(m.vm_id for m in mounts))
            )
        pdisk.detach(disk, int(mounts[0].vm_id))
        extra = volume.extra if volume.extra is not None else {}
        extra["device"] = None
        extra["attachments"] = [a for a in extra.get("attachments", []) if a.get("node_id") != mounts[0].vm_id]
        volume.extra = extra
        volume.state = StorageVolumeState.INUSE if extra["attachments"] else StorageVolumeState.AVAILABLE
        return True

    # -- the pieces -------------------------------------------------------------------------

    def _list_location_volumes(self, location: LocationConfig) -> List[StorageVolume]:
        pdisk = self._services(location).pdisk
        volumes = []
        for disk in pdisk.list_disks():
            try:
                volumes.append(self._volume(location, disk))
            except NotFoundError:
                continue  # destroyed (by another thread or client) since it was listed
        return volumes

    def _volume(self, location: LocationConfig, disk: DiskRecord) -> StorageVolume:
        # Mounts are listed only for disks in use: one extra call each, not one per disk.
        mounts = self._services(location).pdisk.mounts(disk.uuid) if disk.count else []
        return convert.to_volume(disk, location, self, mounts)


def _new_disk(pdisk: PdiskClient, tag: str, size: int, before: Set[str]) -> Optional[str]:
    """The disk a lost ``create_volume`` answer made, if one can be told (module docstring)."""
    new = [
        d.uuid for d in pdisk.list_disks()
        if d.tag == tag and d.size == size and not d.count and d.uuid not in before
    ]
    if len(new) > 1:
        # Raised into write_once, which adds it to the lost answer's error (naming the location).
        raise ServiceError(
            "%d new volumes tagged %r of %d GiB appeared meanwhile (%s); none was adopted"
            % (len(new), tag, size, ", ".join(new)),
            operation="create_volume",
        )
    return new[0] if new else None


def _device_name(device: str) -> str:
    # Portable code passes "/dev/vdb" (Libcloud's examples) or "vdb".
    return device.rsplit("/", 1)[-1]
