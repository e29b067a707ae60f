"""Libcloud objects as rows of plain data, the form in which the command line and the demo show them.

One function per kind of object, so a table, a JSON document and the demo's output all
say the same thing with the same names.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = [
    "IMAGE_COLUMNS", "LOCATION_COLUMNS", "NODE_COLUMNS", "SIZE_COLUMNS", "VOLUME_COLUMNS",
    "image_row", "location_row", "node_row", "size_row", "volume_row",
]

Row = Dict[str, Any]

LOCATION_COLUMNS = ["id", "name", "country", "default"]
SIZE_COLUMNS = ["id", "cpu", "ram_mib", "swap_mib"]
IMAGE_COLUMNS = ["id", "name", "os", "arch", "format", "valid_until"]
NODE_COLUMNS = ["location", "id", "name", "state", "public_ips", "private_ips", "size", "image"]
VOLUME_COLUMNS = ["location", "id", "name", "size_gib", "state", "attached_to"]


def location_row(location: Any, default: Optional[str] = None) -> Row:
    return {"id": location.id, "name": location.name, "country": location.country,
            "default": location.id == default}


def size_row(size: Any) -> Row:
    return {"id": size.id, "cpu": size.extra["cpu"], "ram_mib": size.ram, "swap_mib": size.extra["swap"]}


def image_row(image: Any) -> Row:
    extra = image.extra
    return {
        "id": image.id,
        "name": image.name,
        "os": "%s %s" % (extra["os"], extra["os_version"]),
        "arch": extra["arch"],
        "format": extra["format"],
        "bus": extra["disks_bus"],
        "valid_until": extra["valid_until"],
    }


def node_row(node: Any) -> Row:
    extra = node.extra
    return {
        "location": extra["location"],
        "id": node.id,
        "name": node.name,
        "state": node.state,
        "label": extra["state_label"],
        "public_ips": node.public_ips,
        "private_ips": node.private_ips,
        "size": node.size.id if node.size else None,
        "image": node.image.id if node.image else None,
        "host": extra["host"],
        "ssh_port": extra["ssh_port"],
    }


def volume_row(volume: Any) -> Row:
    extra = volume.extra
    return {
        "location": extra["location"],
        "id": volume.id,
        "name": volume.name,
        "size_gib": volume.size,
        "state": volume.state,
        "owner": extra["owner"],
        "attached_to": ["%s:%s" % (a["node_id"], a["device"]) for a in extra["attachments"]],
    }
