"""What the command line shows: tables for people, JSON for scripts, a live wait indicator.

Shared by the commands and the demo, so both print the same way. Nothing here imports
Libcloud or rich until something is shown: ``stratuslab-lc --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Mapping, Optional, Sequence, TextIO

from stratuslab_lc_plugin.cli.interrupts import raise_if_interrupted

__all__ = ["print_json", "print_table", "wait_for_node"]


def print_json(data: Any, stream: Optional[TextIO] = None) -> None:
    """``data`` as indented JSON, one document per call (values JSON lacks become strings)."""
    print(json.dumps(data, indent=2, default=str), file=stream or sys.stdout)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: Optional[str] = None,
                stream: Optional[TextIO] = None) -> None:
    """``rows`` as an aligned table of ``columns`` (underscores shown as spaces)."""
    from rich.console import Console
    from rich.table import Table

    target = stream or sys.stdout
    # A pipe or a file gets whole lines: folding at 80 columns would break scripts and grep.
    console = Console(file=target, soft_wrap=True) if target.isatty() else Console(file=target, width=10_000)
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if value is None:
        return "-"
    return str(value)


def wait_for_node(driver: Any, node: Any, timeout: float = 300.0, poll: float = 0.2) -> Any:
    """Wait with ``driver.wait_until_running`` until ``node`` runs with an address; return it.

    The wait is bounded; people at a terminal see the OpenNebula state as it changes
    (Pending, Prolog, Boot, Running) on stderr. Besides the driver's own give-up states
    (error, terminated, gone), a stopped or suspended node ends the wait at once: at a
    terminal nobody else is going to resume it.
    """
    from libcloud.compute.types import NodeState
    from rich.console import Console

    from stratuslab_lc_plugin.errors import InvalidStateError

    give_up = (NodeState.STOPPED, NodeState.SUSPENDED)
    location = node.extra["location"]
    # The addresses of the network the node is on (to_node files any but "public" as private).
    interface = "public_ips" if node.extra.get("network") in (None, "public") else "private_ips"
    status_text = "node %s: %s"
    with Console(stderr=True).status(status_text % (node.id, node.extra.get("state_label", node.state)),
                                     spinner="dots") as status:

        def show(fresh: Any) -> None:
            label = fresh.extra.get("state_label", fresh.state)
            status.update(status_text % (fresh.id, label))
            if fresh.state in give_up:
                raise InvalidStateError("%s: node %s is %s and will not run" % (location, fresh.id, label),
                                        location=location, operation="wait")
            raise_if_interrupted()

        ((fresh, _),) = driver.wait_until_running([node], wait_period=poll, timeout=timeout,
                                                 ssh_interface=interface, ex_on_poll=show)
    return fresh
