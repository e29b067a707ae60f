"""ComputeMixin: locations, sizes, images and the node lifecycle.

Locations are the sections of the user configuration file, sizes its instance types,
images the entries of each location's Marketplace, and nodes the OpenNebula VMs of each
location. ``list_nodes`` asks every location once (``one.vmpool.info``), concurrently, and
a node's state is read from that answer: reading ``node.state`` makes no remote call.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from libcloud.compute.base import Node, NodeAuthPassword, NodeAuthSSHKey, NodeImage, NodeLocation, NodeSize, StorageVolume

from stratuslab_lc_plugin.config import LocationConfig, SizeSpec
from stratuslab_lc_plugin.driver import arguments, convert, waiting
from stratuslab_lc_plugin.driver.core import DriverCore, LocationArg, NodeList, one_deadline, write_once
from stratuslab_lc_plugin.errors import InvalidStateError, ProtocolError, ServiceUnavailableError, StratusLabError
from stratuslab_lc_plugin.services.marketplace import IMAGE_ID, ImageRecord, newest
from stratuslab_lc_plugin.services.pdisk import DISK_ID
from stratuslab_lc_plugin.services.pool import LocationServices
from stratuslab_lc_plugin.services.vmtemplate import DISKS_BUS_PREFIX, NETWORKS, VmSpec, check_value, cloud_init_context, render

__all__ = ["ComputeMixin"]

# The driver method of each ONE action, for messages.
_ACTION_METHODS = {"finalize": "destroy_node", "reboot": "reboot_node", "stop": "stop_node", "resume": "start_node",
                   "suspend": "ex_suspend_node", "shutdown": "ex_shutdown_node"}

# ONE 3.2 actions and the states that allow them, for errors that say what would work.
_ACTION_NEEDS = {
    "reboot": "RUNNING",
    "shutdown": "RUNNING",
    "stop": "RUNNING",
    "suspend": "RUNNING",
    "resume": "STOPPED or SUSPENDED",
}


class ComputeMixin(DriverCore):
    """Locations, sizes, images and nodes."""

    # -- locations and sizes (configuration only, no remote call) -------------------------

    def list_locations(self, **kwargs: object) -> List[NodeLocation]:
        arguments.no_other_arguments("list_locations", kwargs)
        return [convert.to_location(loc, self) for loc in self._config.locations.values()]

    def list_sizes(self, location: LocationArg = None, **kwargs: object) -> List[NodeSize]:
        arguments.no_other_arguments("list_sizes", kwargs)
        if location is not None:
            self.location_config(location)  # sizes do not depend on it, but it must exist
        return [convert.to_size(spec, self) for spec in self._config.sizes.values()]

    # -- images -----------------------------------------------------------------------------

    def list_images(self, location: LocationArg = None, **kwargs: object) -> List[NodeImage]:
        """The valid images of the location's Marketplace, one per image id.

        When several endorsers vouch for the same image, the newest endorsement describes
        it and ``extra['endorsers']`` lists them all.
        """
        arguments.no_other_arguments("list_images", kwargs)
        services = self._services(location)
        by_id: Dict[str, List[ImageRecord]] = {}
        for record in services.marketplace.list_images():
            by_id.setdefault(record.id, []).append(record)
        return [convert.to_image(newest(records), services.location, self, records) for records in by_id.values()]

    def get_image(self, image_id: str, ex_location: LocationArg = None) -> NodeImage:
        services = self._services(ex_location)
        return convert.to_image(services.marketplace.get_image(image_id), services.location, self)

    # -- nodes ------------------------------------------------------------------------------

    def list_nodes(self, ex_location: LocationArg = None, ex_partial: bool = False,
                   **kwargs: object) -> NodeList[Node]:
        """Every node of every location, or of ``ex_location`` only.

        Locations are asked concurrently. When one fails, the error names it; with
        ``ex_partial=True`` the nodes of the others are returned in a :class:`NodeList`
        whose ``failures`` say which locations failed and why.
        """
        arguments.no_other_arguments("list_nodes", kwargs)
        return self._each_location("list_nodes", self._list_location_nodes, ex_location, ex_partial)

    def ex_get_node(self, node_id: Union[str, int, None], location: LocationArg = None) -> Node:
        """The node of VM ``node_id`` of ``location`` (default: the default location)."""
        vm = arguments.vm_id(node_id)
        return self._fetch_node(self.location_config(location), vm)

    @one_deadline
    def create_node(
        self,
        name: str,
        size: Union[NodeSize, str],
        image: Union[NodeImage, StorageVolume, str],
        location: LocationArg = None,
        auth: Union[NodeAuthSSHKey, NodeAuthPassword, None] = None,
        ex_network: str = "public",
        ex_context: Optional[Mapping[str, object]] = None,
        ex_cloud_init: Optional[str] = None,
        ex_requirements: Optional[str] = None,
        ex_volatile_disk: Optional[int] = None,
        ex_persistent_volumes: Sequence[Union[StorageVolume, str]] = (),
        ex_disks_bus: Optional[str] = None,
        ex_client_token: Optional[str] = None,
        ex_keyname: Optional[str] = None,
        ex_userdata: Optional[str] = None,
        **kwargs: object,
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
        :param ex_keyname: a key pair of the driver's key store (``list_key_pairs``) whose
            public key goes to the VM's context, instead of ``auth``.
        :param ex_userdata: cloud-init user data, as on EC2 or OpenStack (the same as
            ``ex_cloud_init``).

        Every argument is checked before any VM is created.
        """
        ignored = arguments.portable_create_arguments(kwargs)
        services = self._services(location)
        loc = services.location
        spec_size = self._size_spec(size)
        arguments.check_node_name(name)
        if ex_network not in NETWORKS:
            raise ValueError("ex_network must be one of %s, not %r" % (", ".join(NETWORKS), ex_network))
        context = arguments.check_context(ex_context)
        if ex_requirements is not None:
            check_value(ex_requirements, "ex_requirements")
        volatile_mib = arguments.check_volatile_disk(ex_volatile_disk)
        if ex_disks_bus is not None and ex_disks_bus not in DISKS_BUS_PREFIX:
            raise ValueError("ex_disks_bus must be one of %s, not %r" % (", ".join(DISKS_BUS_PREFIX), ex_disks_bus))
        persistent = [_pdisk_source(loc, arguments.volume_id(v)) for v in ex_persistent_volumes]
        if ex_userdata is not None:
            if ex_cloud_init is not None:
                raise ValueError("give ex_userdata or ex_cloud_init (the same thing), not both")
            ex_cloud_init = ex_userdata
        if ex_keyname is not None:
            key_name: Optional[str] = ex_keyname
            public_key = self._stored_key(ex_keyname).public_key + "\n"
            if auth is not None and not arguments.same_public_key(arguments.public_key(auth, loc), public_key):
                raise ValueError("auth and ex_keyname=%r are different keys: give one" % ex_keyname)
        else:
            key_name = None if auth is not None else self._configured_key_name(loc)
            public_key = arguments.public_key(auth, loc)
        token = ex_client_token or uuid.uuid4().hex
        if not arguments.CLIENT_TOKEN.fullmatch(token):
            raise ValueError("ex_client_token is 1 to 64 letters, digits, '-' or '_', not %r" % (token,))

        source, driver, bus, ports = self._image_source(services, image)
        if loc.default_context_method == "cloud-init" or ex_cloud_init is not None:
            context.update(cloud_init_context(ex_cloud_init, public_key))
        context[convert.CLIENT_TOKEN_KEY] = token
        if key_name:
            context[convert.KEY_NAME_KEY] = key_name
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
        if ignored:
            warnings.warn("create_node ignores %s: StratusLab has no such setting" % ", ".join(ignored),
                          UserWarning, stacklevel=3)  # the caller, past one_deadline's wrapper
        vm = self._allocate_once(services, template, token, check_first=ex_client_token is not None)
        return self._fetch_node(loc, vm)

    def destroy_node(self, node: Node, ex_location: LocationArg = None, **kwargs: object) -> bool:
        return self._vm_action(node, "finalize", ex_location, kwargs)

    def reboot_node(self, node: Node, ex_location: LocationArg = None, **kwargs: object) -> bool:
        return self._vm_action(node, "reboot", ex_location, kwargs)

    def stop_node(self, node: Node, ex_location: LocationArg = None, **kwargs: object) -> bool:
        """Save the VM to the front end and stop it (ONE ``stop``); ``start_node`` resumes it."""
        return self._vm_action(node, "stop", ex_location, kwargs)

    def start_node(self, node: Node, ex_location: LocationArg = None, **kwargs: object) -> bool:
        return self._vm_action(node, "resume", ex_location, kwargs)

    def ex_start_node(self, node: Node, ex_location: LocationArg = None, **kwargs: object) -> bool:
        """``start_node`` under the name some Libcloud tools use (StackStorm's pack)."""
        return self.start_node(node, ex_location, **kwargs)

    def ex_stop_node(self, node: Node, ex_location: LocationArg = None, **kwargs: object) -> bool:
        """``stop_node`` under the name some Libcloud tools use (StackStorm's pack)."""
        return self.stop_node(node, ex_location, **kwargs)

    def ex_suspend_node(self, node: Node, ex_location: LocationArg = None, **kwargs: object) -> bool:
        """Pause the VM, keeping it on its host (ONE ``suspend``); ``start_node`` resumes it."""
        return self._vm_action(node, "suspend", ex_location, kwargs)

    def ex_shutdown_node(self, node: Node, ex_location: LocationArg = None, **kwargs: object) -> bool:
        """Graceful (ACPI) shutdown; the VM ends as ``terminated``."""
        return self._vm_action(node, "shutdown", ex_location, kwargs)

    def wait_until_running(
        self,
        nodes: Sequence[Node],
        wait_period: float = 5,
        timeout: float = 600,
        ssh_interface: str = "public_ips",
        force_ipv4: bool = True,
        ex_list_nodes_kwargs: Optional[Dict[str, object]] = None,
        ex_on_poll: Optional[Callable[[Node], None]] = None,
    ) -> List[Tuple[Node, List[str]]]:
        """Libcloud's ``wait_until_running``: block until the nodes run with an address.

        Returns ``[(node, addresses)]`` in the order given, and also updates the given
        Node objects (state, addresses, extra...), so ``node.state`` reads ``running``
        afterwards. Only the nodes' own locations are asked. Unlike Libcloud's, it stops at
        once, with an error naming the node and its state, when a node failed or vanished.
        ``ex_list_nodes_kwargs`` is accepted for compatibility; the locations come from the
        nodes. ``ex_on_poll``, if given, is called with each node as soon as it is read, at
        every poll (to show progress, or to give up early: an exception it raises ends the
        wait and reaches the caller unchanged).
        """
        if ssh_interface not in ("public_ips", "private_ips"):
            raise ValueError("ssh_interface argument must either be public_ips or private_ips")
        given = list(nodes)
        targets = []
        for node in given:
            location, vm = self._locate_node(node)
            targets.append(((location.id, vm), node))
        try:
            result = self._wait_running(targets, ssh_interface, force_ipv4, timeout, wait_period,
                                        observe=ex_on_poll)
        except waiting.NotRunning as exc:
            where = exc.node.extra.get("location")
            raise StratusLabError(
                "%s: wait_until_running: node %s: %s" % (where, exc.node.id, exc.why),
                location=where, operation="wait_until_running",
            ) from exc.cause
        return result

    # -- the pieces -------------------------------------------------------------------------

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
            exc.add_detail(
                " (client token %s: if the VM was made or appears later, create_node with "
                "ex_client_token=%r returns it instead of starting another)" % (token, token)
            )
            exc.client_token = token
            raise

    def _vm_with_token(self, services: LocationServices, token: str) -> Optional[int]:
        for vm in services.one.vms():
            if vm.context.get(convert.CLIENT_TOKEN_KEY) == token:
                return vm.id
        return None

    def _vm_action(self, node: Node, action: str, ex_location: LocationArg, kwargs: Mapping[str, object]) -> bool:
        arguments.no_other_arguments(_ACTION_METHODS[action], kwargs)
        location, vm = self._locate_node(node, ex_location)
        try:
            self._services(location).one.action(action, vm)
        except InvalidStateError as exc:
            needs = _ACTION_NEEDS.get(action)
            if needs:
                exc.add_detail(" (%s needs a %s VM)" % (action, needs))
            raise
        return True

    def _image_source(self, services: LocationServices, image: object) -> Tuple[str, str, str, List[int]]:
        """DISK 0's source, driver and bus, and the image's inbound ports (spec §3.5)."""
        loc = services.location
        wanted = arguments.image_id(image)
        if IMAGE_ID.fullmatch(wanted):
            record = services.marketplace.get_image(wanted)
            if not record.locations:
                raise ValueError(
                    "image %s has no location in the Marketplace at %s: it cannot be started"
                    % (wanted, loc.marketplace_endpoint)
                )
            if record.disks_bus not in DISKS_BUS_PREFIX:
                raise ValueError("image %s has an unknown disks bus %r" % (wanted, record.disks_bus))
            source = "%s/metadata/%s" % (loc.marketplace_endpoint, wanted)
            return source, record.format or "raw", record.disks_bus, record.inbound_ports
        if DISK_ID.fullmatch(wanted):
            return _pdisk_source(loc, wanted), "raw", "ide", []
        if wanted.split(":", 1)[0] in ("http", "https", "ftp", "pdisk"):
            return wanted, "raw", "ide", []
        raise ValueError("image %r is neither a Marketplace image id, a volume UUID nor a URL" % (wanted,))

    def _size_spec(self, size: Union[NodeSize, str]) -> SizeSpec:
        size_id = size.id if isinstance(size, NodeSize) else size
        spec = self._config.sizes.get(size_id)
        if spec is None:
            raise ValueError("unknown size %r; sizes are %s" % (size_id, ", ".join(sorted(self._config.sizes))))
        return spec


def _pdisk_source(location: LocationConfig, disk_id: str) -> str:
    return "pdisk:%s/%s" % (location.pdisk_endpoint.rstrip("/"), arguments.check_disk_id(disk_id))

