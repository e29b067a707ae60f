"""A stand-in for the compute half of the driver, to test ``deploy_node`` on its own.

``FakeComputeDriver`` is the real :class:`DeploymentMixin` with a scripted ``create_node`` and
node lookup: nodes go PENDING -> RUNNING (or to a failure state) after a few polls, and their
"VM" is either an SSH guest of the local cloud (:class:`GuestManager`, real SSH on a loopback
address) or any fixed SSH server (a real sshd). The SSH side is therefore real; only the
XML-RPC side is faked. It is a test seam of the driver core: it skips ``DriverCore.__init__``
(no configuration file, no connection) and replaces ``DriverCore._fetch_nodes``, the one
place where the mixins read nodes from the cloud.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from libcloud.common.base import ConnectionKey
from libcloud.compute.base import Node, NodeAuthSSHKey, NodeDriver
from libcloud.compute.types import NodeState

from stratuslab_lc_plugin.driver.deployment import DeploymentMixin
from stratuslab_lc_plugin.errors import NotFoundError


# Shared by every fake driver so that VM ids (and guest homes and addresses) never repeat.
_NODE_IDS = itertools.count(1)


@dataclass
class FakeLocationConfig:
    """What deployment uses of ``config.LocationConfig``: its id and its two key paths."""

    private_key: str
    public_key: Optional[str] = None
    id: str = ""

    def private_key_path(self) -> str:
        return self.private_key

    def public_key_path(self) -> str:
        return self.public_key or self.private_key + ".pub"


@dataclass
class FakeConfig:
    """``config.UserConfig.location()`` over a dict; ``None`` means the default location."""

    locations: Dict[str, FakeLocationConfig]
    default_location: str = "local"
    asked: List[Optional[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for location_id, location in self.locations.items():
            location.id = location_id

    def location(self, location_id: Optional[str] = None) -> FakeLocationConfig:
        self.asked.append(location_id)
        return self.locations[location_id or self.default_location]


@dataclass
class FakeCatalogue:
    """``catalogue.entry(image_id).has_sftp``: images listed in ``no_sftp`` lack SFTP."""

    no_sftp: Tuple[str, ...] = ("ttylinux",)

    def entry(self, image_id: str):
        return _Entry(image_id not in self.no_sftp)


@dataclass
class _Entry:
    has_sftp: bool


class FakeComputeDriver(DeploymentMixin):
    """``deploy_node`` on top of scripted nodes.

    - ``guests``: a GuestManager; each node gets a guest on 127.1.250.<n> once RUNNING.
    - ``target``: instead of guests, every node "is" this ``(ip, port)`` SSH server.
    - ``polls_until_running``: list_nodes calls before the node is RUNNING.
    - ``final_state``: the state reached instead of RUNNING (e.g. ``NodeState.ERROR``).
    - ``with_address``: False makes a RUNNING node without public IP.

    Nodes are polled through ``ex_get_node`` (from ``_fetch_nodes``), like the real driver.
    """

    name = "Fake StratusLab"
    type = "fake-stratuslab"
    connectionCls = ConnectionKey
    features = {"create_node": ["ssh_key"]}

    def __init__(self, config: FakeConfig, guests=None, target: Optional[Tuple[str, int]] = None,
                 polls_until_running: int = 1, final_state: str = NodeState.RUNNING,
                 with_address: bool = True, publish_port: bool = True) -> None:
        self._config = config
        NodeDriver.__init__(self, key="fake")
        self.guests = guests
        self.target = target
        self.polls_until_running = polls_until_running
        self.final_state = final_state
        self.with_address = with_address
        self.publish_port = publish_port
        self.created: List[dict] = []
        self._nodes: Dict[str, dict] = {}

    def create_node(self, name="node", size=None, image=None, location=None, auth=None, **kwargs) -> Node:
        location_id = getattr(location, "id", location) or self._config.default_location
        if isinstance(auth, NodeAuthSSHKey):
            public_key = auth.pubkey
        else:
            with open(self._config.location(location_id).public_key_path()) as handle:
                public_key = handle.read()
        node_id = str(next(_NODE_IDS))
        record = {
            "id": node_id, "name": name, "location": location_id, "public_key": public_key,
            "image": getattr(image, "id", image), "polls": 0, "state": NodeState.PENDING,
            "ip": None, "port": 22,
        }
        self._nodes[node_id] = record
        self.created.append({"name": name, "auth": auth, "location": location_id, **kwargs})
        return self._node(record)

    def list_nodes(self) -> List[Node]:
        for record in self._nodes.values():
            self._advance(record)
        return [self._node(record) for record in self._nodes.values()]

    def _advance(self, record: dict) -> None:
        record["polls"] += 1
        if record["state"] == NodeState.PENDING and record["polls"] > self.polls_until_running:
            self._boot(record)

    def _ex_connection_class_kwargs(self) -> dict:
        return {}  # a plain ConnectionKey: this driver never connects

    def _fetch_nodes(self, location_id: str, vms) -> Dict[int, Node]:
        found = {}
        for vm in vms:
            try:
                found[vm] = self.ex_get_node(str(vm), location_id)
            except NotFoundError:
                pass
        return found

    def ex_get_node(self, node_id: str, location=None) -> Node:
        """Like the real driver's: one node, NotFoundError when it is gone."""
        if node_id not in self._nodes:
            raise NotFoundError("VM %s does not exist" % node_id, location=location)
        record = self._nodes[node_id]
        self._advance(record)
        return self._node(record)

    def destroy_node(self, node: Node) -> bool:
        record = self._nodes.pop(node.id, None)
        if record is not None and self.guests is not None:
            self.guests.vm_stopped(int(node.id))
        return record is not None

    def _boot(self, record: dict) -> None:
        record["state"] = self.final_state
        if self.final_state != NodeState.RUNNING:
            return
        if self.target is not None:
            record["ip"], record["port"] = self.target
        else:
            record["ip"] = "127.1.250.%d" % (int(record["id"]) % 250 + 1)
            port = self.guests.vm_running(int(record["id"]), record["ip"], record["public_key"], record["image"])
            record["port"] = port

    def _node(self, record: dict) -> Node:
        extra = {"location": record["location"]}
        if self.publish_port:
            extra["ssh_port"] = record["port"]
        public_ips = [record["ip"]] if record["ip"] and self.with_address else []
        return Node(id=record["id"], name=record["name"], state=record["state"], public_ips=public_ips,
                    private_ips=[], driver=self, extra=extra)
