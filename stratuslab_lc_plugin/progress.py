"""Waiting for a node to run, with a live indicator for people at a terminal.

Used by the command line and the demo. The wait is bounded; the indicator shows the
OpenNebula state as it changes (Pending, Prolog, Boot, Running).
"""

from __future__ import annotations

import time

from libcloud.compute.base import Node
from libcloud.compute.types import NodeState

from stratuslab_lc_plugin.errors import InvalidStateError

__all__ = ["wait_for_node"]

_GIVE_UP = (NodeState.ERROR, NodeState.TERMINATED, NodeState.STOPPED, NodeState.SUSPENDED)


def wait_for_node(driver, node: Node, timeout: float = 300.0, poll: float = 0.2) -> Node:
    """Poll ``node`` until it runs and has an address; return the fresh node."""
    from rich.console import Console

    console = Console(stderr=True)
    deadline = time.monotonic() + timeout
    with console.status("node %s: %s" % (node.id, node.extra.get("state_label", node.state)), spinner="dots") as status:
        while True:
            node = driver.ex_get_node(node.id, node.extra["location"])
            label = node.extra.get("state_label", node.state)
            status.update("node %s: %s" % (node.id, label))
            if node.state == NodeState.RUNNING and (node.public_ips or node.private_ips):
                return node
            if node.state in _GIVE_UP:
                raise InvalidStateError(
                    "%s: node %s is %s and will not run" % (node.extra["location"], node.id, label),
                    location=node.extra["location"], operation="wait",
                )
            if time.monotonic() >= deadline:
                raise InvalidStateError(
                    "%s: node %s still %s after %.0f s" % (node.extra["location"], node.id, label, timeout),
                    location=node.extra["location"], operation="wait",
                )
            time.sleep(poll)
