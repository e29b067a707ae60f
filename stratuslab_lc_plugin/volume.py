"""VolumeMixin: StratusLab persistent disks (pdisk) as Libcloud storage volumes.

Everything about a volume is read from the pdisk server, including where it is mounted,
so a volume attached by one driver object (or process) can be detached by another; the
14.06 driver remembered the node in memory and could not.

Creating and attaching survive a lost answer without duplicates (see
:func:`~stratuslab_lc_plugin.compute.write_once`): pdisk has no client tokens, so a lost
``create_volume`` answer is resolved by the tag. The disks tagged ``name`` are listed
before the disk is created; afterwards, the one new disk with that tag and size, not
attached, is the one created. Two or more such new disks (concurrent creations with the
same name and size) are ambiguous: none is adopted and the error names them. A lost
attach answer is resolved by the disk's mounts.
"""

from __future__ import annotations

from typing import Optional, Union

from libcloud.compute.base import Node, StorageVolume
from libcloud.compute.types import StorageVolumeState

from stratuslab_lc_plugin.compute import within_timeout, write_once
from stratuslab_lc_plugin.config import LocationConfig
from stratuslab_lc_plugin.errors import InUseError, InvalidStateError, NotFoundError, ServiceError, StratusLabError
from stratuslab_lc_plugin.services.pdisk import DISK_ID, DiskRecord, PdiskClient

__all__ = ["VolumeMixin", "MAX_VOLUME_SIZE", "VISIBILITIES"]

#: pdisk 14.06 accepts sizes from 1 to 1024 GiB.
MAX_VOLUME_SIZE = 1024
VISIBILITIES = ("private", "public")


class VolumeMixin:
    """Persistent disks. Needs ``self._services()`` and ``self._gather()`` (ComputeMixin)."""

    def list_volumes(self, ex_location=None, ex_partial: bool = False) -> list[StorageVolume]:
        """Every volume of every location (concurrently), or of ``ex_location`` only."""
        return self._gather("list_volumes", self._list_location_volumes, ex_location, ex_partial)

    def ex_get_volume(self, volume_id: str, location=None) -> StorageVolume:
        _check_disk_id(volume_id)
        services = self._services(location)
        return self._to_volume(services.pdisk.get_disk(volume_id), services.location)

    @within_timeout
    def create_volume(
        self,
        size: int,
        name: str,
        location=None,
        snapshot=None,
        ex_visibility: str = "private",
    ) -> StorageVolume:
        """Create a persistent disk of ``size`` GiB (1 to 1024) tagged ``name``."""
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError("size is a whole number of GiB, not %r" % (size,))
        if not 1 <= size <= MAX_VOLUME_SIZE:
            raise ValueError("size must be between 1 and %d GiB, not %d" % (MAX_VOLUME_SIZE, size))
        if not isinstance(name, str):
            raise ValueError("name must be a string, not %r" % (name,))
        if ex_visibility not in VISIBILITIES:
            raise ValueError("ex_visibility must be 'private' or 'public', not %r" % (ex_visibility,))
        if snapshot is not None:
            raise ValueError("StratusLab volumes cannot be created from snapshots")
        services = self._services(location)
        pdisk = services.pdisk
        before = {disk.uuid for disk in pdisk.list_disks() if disk.tag == name}
        disk_id = write_once(
            lambda: pdisk.create_disk(size, name, ex_visibility),
            lambda: _new_disk(pdisk, name, size, before),
        )
        return self._to_volume(pdisk.get_disk(disk_id), services.location)

    def destroy_volume(self, volume: StorageVolume) -> bool:
        services = self._services(_volume_location(volume))
        try:
            services.pdisk.delete_disk(volume.id)
        except InUseError as exc:
            try:
                vms = ", ".join("VM %s (%s)" % (m.vm_id, m.device) for m in services.pdisk.mounts(volume.id))
            except StratusLabError:
                vms = ""  # naming the VMs is a courtesy: the in-use error is what matters
            if vms:
                exc.message = "%s: it is attached to %s" % (exc.message, vms)
            raise
        return True

    @within_timeout
    def attach_volume(self, node: Node, volume: StorageVolume, device: Optional[str] = None) -> bool:
        """Hot-plug the volume into the node; the server chooses the device.

        The device (``vdz``, then ``vdy``...) is stored in ``volume.extra['device']``.
        """
        if device is not None:
            raise ValueError("the pdisk server chooses the device; call attach_volume without device")
        location = self._location_config(node.extra.get("location"))
        volume_location = _volume_location(volume) or location.id
        if volume_location != location.id:
            raise ValueError(
                "volume %s is in location %s but node %s is in %s"
                % (volume.id, volume_location, node.id, location.id)
            )
        services = self._services(location)
        vm = services.one.vm(int(node.id))
        if not vm.host:
            raise InvalidStateError(
                "%s: node %s is not deployed on a host yet (%s); attach once it runs"
                % (location.id, node.id, vm.state_label),
                location=location.id, operation="attach_volume",
            )
        for mount in services.pdisk.mounts(volume.id):
            if mount.vm_id == str(vm.id):
                raise InvalidStateError(
                    "%s: volume %s is already attached to node %s as %s"
                    % (location.id, volume.id, node.id, mount.device),
                    location=location.id, operation="attach_volume",
                )
        device = write_once(
            lambda: services.pdisk.attach(volume.id, vm.host, vm.id),
            lambda: next((m.device for m in services.pdisk.mounts(volume.id) if m.vm_id == str(vm.id)), None),
        )
        volume.extra["device"] = device
        volume.extra.setdefault("attachments", []).append({"node_id": str(vm.id), "device": device})
        volume.state = StorageVolumeState.INUSE
        return True

    @within_timeout
    def detach_volume(self, volume: StorageVolume, ex_node: Optional[Node] = None) -> bool:
        """Detach the volume from the node it is attached to (found on the server).

        A public volume attached to several nodes needs ``ex_node`` to say which.
        """
        location = _volume_location(volume)
        services = self._services(location)
        mounts = services.pdisk.mounts(volume.id)
        if ex_node is not None:
            mounts = [m for m in mounts if m.vm_id == str(ex_node.id)]
        if not mounts:
            raise InvalidStateError(
                "%s: volume %s is not attached%s"
                % (services.location.id, volume.id, " to node %s" % ex_node.id if ex_node else ""),
                location=services.location.id, operation="detach_volume",
            )
        if len(mounts) > 1:
            raise ValueError(
                "volume %s is attached to nodes %s: pass ex_node to say which"
                % (volume.id, ", ".join(m.vm_id for m in mounts))
            )
        services.pdisk.detach(volume.id, int(mounts[0].vm_id))
        volume.extra["device"] = None
        volume.extra["attachments"] = [
            a for a in volume.extra.get("attachments", []) if a.get("node_id") != mounts[0].vm_id
        ]
        volume.state = StorageVolumeState.INUSE if volume.extra["attachments"] else StorageVolumeState.AVAILABLE
        return True

    # -- the pieces -------------------------------------------------------------------------

    def _list_location_volumes(self, location: LocationConfig) -> list[StorageVolume]:
        services = self._services(location)
        volumes = []
        for disk in services.pdisk.list_disks():
            try:
                volumes.append(self._to_volume(disk, location))
            except NotFoundError:
                continue  # destroyed (by another thread or client) since it was listed
        return volumes

    def _to_volume(self, disk: DiskRecord, location: LocationConfig) -> StorageVolume:
        attachments = []
        if disk.count:
            # Mounts are listed only for disks in use: one extra call each, not one per disk.
            services = self._services(location)
            attachments = [{"node_id": m.vm_id, "device": m.device} for m in services.pdisk.mounts(disk.uuid)]
        return StorageVolume(
            id=disk.uuid,
            name=disk.tag,
            size=disk.size,
            driver=self,
            # The mounts are read after the disk: they are the fresher news.
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


def _new_disk(pdisk: PdiskClient, tag: str, size: int, before: set[str]) -> Optional[str]:
    """The disk a lost ``create_volume`` answer made, if one can be told (module docstring)."""
    new = [
        d.uuid for d in pdisk.list_disks()
        if d.tag == tag and d.size == size and not d.count and d.uuid not in before
    ]
    if len(new) > 1:
        raise ServiceError(
            "%d new volumes tagged %r of %d GiB appeared meanwhile (%s); none was adopted"
            % (len(new), tag, size, ", ".join(new))
        )
    return new[0] if new else None


def _volume_location(volume: Union[StorageVolume, str]) -> Optional[str]:
    if not isinstance(volume, StorageVolume):
        raise TypeError("volume must be a StorageVolume, not %r" % (type(volume).__name__,))
    _check_disk_id(volume.id)
    return (volume.extra or {}).get("location")


def _check_disk_id(volume_id: str) -> None:
    if not isinstance(volume_id, str) or not DISK_ID.fullmatch(volume_id):
        raise ValueError("%r is not a volume UUID" % (volume_id,))
