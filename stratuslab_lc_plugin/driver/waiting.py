"""Waiting for nodes to run with an address: ``wait_until_running`` and ``deploy_node`` share it.

Libcloud's ``wait_until_running`` polls ``list_nodes`` of every location until the timeout,
even for a node that failed or vanished long before. :func:`wait_running` asks only the
nodes' own locations, stops at once when a node can no longer run (ERROR, TERMINATED, gone),
keeps waiting through transient service failures, and says in :class:`NotRunning` which
node did not make it and in what state.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from libcloud.compute.base import Node
from libcloud.compute.types import NodeState

from stratuslab_lc_plugin.errors import ServiceUnavailableError, StratusLabError

__all__ = ["NotRunning", "Target", "wait_running", "addresses"]

#: States a node never leaves for RUNNING.
FAILED_STATES = (NodeState.TERMINATED, NodeState.ERROR)

#: ``(location id, VM id)`` of a node to wait for.
Target = Tuple[str, int]


class NotRunning(Exception):
    """A node did not reach RUNNING with an address: ``node`` (as last seen), ``why``, ``cause``."""

    def __init__(self, node: Node, why: str, cause: Optional[BaseException] = None, timed_out: bool = False) -> None:
        super().__init__(why)
        self.node = node
        self.why = why
        self.cause = cause
        self.timed_out = timed_out


def addresses(node: Node, ssh_interface: str, force_ipv4: bool = True) -> List[str]:
    """The node's addresses on ``ssh_interface`` ("public_ips" or "private_ips")."""
    found = list(getattr(node, ssh_interface) or [])
    return [a for a in found if _is_ipv4(a)] if force_ipv4 else found


def wait_running(
    targets: Sequence[Tuple[Target, Node]],
    fetch: Callable[[str, Sequence[int]], Dict[int, Node]],
    *,
    ssh_interface: str,
    force_ipv4: bool,
    deadline: float,
    wait_period: float,
    timeout: float,
    observe: Optional[Callable[[Node], None]] = None,
) -> List[Tuple[Node, List[str]]]:
    """Poll until every target runs with an address; return ``(fresh node, addresses)`` in order.

    ``fetch(location_id, vm_ids)`` returns the nodes of those VMs that exist, by VM id;
    ``observe``, if given, sees each node as soon as it is read (an exception it raises
    ends the wait and is not caught here).
    Raises :class:`NotRunning` for the first node that failed, vanished, or was not ready
    by ``deadline`` (``time.monotonic()``); a service failure that is not transient ends
    the wait too (waiting would not help), transient ones are retried until the deadline.
    """
    seen: Dict[Target, Node] = {target: node for target, node in targets}
    by_location: Dict[str, List[int]] = {}
    for (location_id, vm), _ in targets:
        by_location.setdefault(location_id, []).append(vm)
    last_error: Optional[BaseException] = None
    while True:
        ready: Dict[Target, List[str]] = {}
        try:
            found = {location_id: fetch(location_id, vms) for location_id, vms in by_location.items()}
            last_error = None
        except ServiceUnavailableError as exc:  # transient: keep waiting
            found, last_error = {}, exc
        except StratusLabError as exc:  # refused credentials, bad answers: waiting won't help
            node = next(iter(seen.values()))
            raise NotRunning(node, "reading its state failed: %s" % exc, exc) from None
        for location_id, nodes in found.items():
            for vm in by_location[location_id]:
                target = (location_id, vm)
                fresh = nodes.get(vm)
                if fresh is None:
                    raise NotRunning(seen[target], "it disappeared (last state: %s)" % seen[target].state)
                seen[target] = fresh
                if observe is not None:
                    observe(fresh)
                if fresh.state in FAILED_STATES:
                    raise NotRunning(fresh, "it entered state %s" % fresh.state)
                usable = addresses(fresh, ssh_interface, force_ipv4)
                if fresh.state == NodeState.RUNNING and usable:
                    ready[target] = usable
        if len(ready) == len(seen):
            return [(seen[target], ready[target]) for target, _ in targets]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            target = next(t for t, _ in targets if t not in ready)
            node = seen[target]
            detail = "last state: %s" % node.state
            if node.state == NodeState.RUNNING:
                detail += ", but no %saddress in %s" % ("IPv4 " if force_ipv4 else "", ssh_interface)
            if last_error is not None:
                detail += "; reading its state failed: %s" % last_error
            raise NotRunning(node, "it was not running with an address within %g s (%s)" % (timeout, detail),
                             last_error, timed_out=True)
        time.sleep(min(wait_period, remaining))


def _is_ipv4(address: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address)
    except ValueError:
        return False
