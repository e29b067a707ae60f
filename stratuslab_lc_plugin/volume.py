"""VolumeMixin: StratusLab persistent disks (pdisk) as Libcloud storage volumes.

Everything about a volume is read from the pdisk server, including where it is mounted,
so a volume attached by one driver object (or process) can be detached by another; the
14.06 driver remembered the node in memory and could not.
"""

from __future__ import annotations

from typing import Optional, Union

from libcloud.compute.base import Node, StorageVolume
from libcloud.compute.types import StorageVolumeState

from stratuslab_lc_plugin.config import LocationConfig
from stratuslab_lc_plugin.errors import InUseError, InvalidStateError
from stratuslab_lc_plugin.services.one import parse_vm
from stratuslab_lc_plugin.services.pdisk import DISK_ID, DiskRecord

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
        disk_id = services.pdisk.create_disk(size, name, ex_visibility)
        return self._to_volume(services.pdisk.get_disk(disk_id), services.location)

    def destroy_volume(self, volume: StorageVolume) -> bool:
        services = self._services(_volume_location(volume))
        try:
            services.pdisk.delete_disk(volume.id)
        except InUseError as exc:
            vms = ", ".join("VM %s (%s)" % (m.vm_id, m.device) for m in services.pdisk.mounts(volume.id))
            if vms:
                exc.message = "%s: it is attached to %s" % (exc.message, vms)
            raise
        return True

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
        vm = parse_vm(services.one.info(int(node.id)))
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
        device = services.pdisk.attach(volume.id, vm.host, vm.id)
        volume.extra["device"] = device
        volume.extra.setdefault("attachments", []).append({"node_id": str(vm.id), "device": device})
        volume.state = StorageVolumeState.INUSE
        return True

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
        return [self._to_volume(disk, location) for disk in services.pdisk.list_disks()]

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
            state=StorageVolumeState.INUSE if disk.count else StorageVolumeState.AVAILABLE,
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


def _volume_location(volume: Union[StorageVolume, str]) -> Optional[str]:
    if not isinstance(volume, StorageVolume):
        raise TypeError("volume must be a StorageVolume, not %r" % (type(volume).__name__,))
    _check_disk_id(volume.id)
    return (volume.extra or {}).get("location")


def _check_disk_id(volume_id: str) -> None:
    if not isinstance(volume_id, str) or not DISK_ID.fullmatch(volume_id):
        raise ValueError("%r is not a volume UUID" % (volume_id,))
