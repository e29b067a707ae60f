"""The OpenNebula VM template sent to ``one.vm.allocate`` (spec §2.8).

The 14.06 client filled ``share/vm/schema.one`` with ``%`` substitution, so a quote in a
name or a context value broke the template. Here a :class:`VmSpec` holds typed values and
:func:`render` writes the same attributes, in the same order, quoting every string.
"""

from __future__ import annotations

import base64
import gzip
import re
from dataclasses import dataclass, field
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Optional, Sequence

__all__ = ["VmSpec", "render", "quote", "check_value", "cloud_init_context", "DISKS_BUS_PREFIX", "NETWORKS", "MAX_NAME_LENGTH"]

#: Target prefix of every disk for a Marketplace ``disks-bus`` value (vm_manager.py).
DISKS_BUS_PREFIX = {"ide": "hd", "scsi": "sd", "virtio": "vd"}
NETWORKS = ("public", "local", "private")
#: ONE 3.2 refuses longer VM names.
MAX_NAME_LENGTH = 128
#: Context variable names are template attribute names: letters, digits, underscore.
CONTEXT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Where the CONTEXT image is attached; schema.one hard-codes it.
CONTEXT_TARGET = "hdd"


@dataclass
class VmSpec:
    cpu: int
    ram: int  # MiB
    swap: int  # MiB
    image_source: str  # Marketplace metadata URL, pdisk:<endpoint>/<uuid>, or a URL
    disk_driver: str = "raw"
    disks_bus: str = "ide"
    name: Optional[str] = None
    requirements: Optional[str] = None
    network: str = "public"
    public_key: Optional[str] = None
    context: dict[str, str] = field(default_factory=dict)
    volatile_disk_mib: Optional[int] = None
    persistent_sources: Sequence[str] = ()
    inbound_ports: Sequence[int] = ()


def quote(value: str) -> str:
    """A double-quoted template string; ONE's lexer accepts ``\\"`` inside quotes."""
    check_value(value)
    return '"%s"' % value.replace('"', '\\"')


def check_value(value: str, what: str = "a template value") -> None:
    """Refuse what a quoted ONE template string cannot hold.

    Its lexer has no escape for a backslash, so a final one would escape the closing
    quote; and ``""`` is read as the two-character value ``""``.
    """
    if value == "":
        raise ValueError("%s must not be empty: ONE templates cannot hold an empty quoted value" % what)
    if value.endswith("\\"):
        raise ValueError("%s must not end with a backslash: ONE templates cannot quote it" % what)


def render(spec: VmSpec) -> str:
    prefix = DISKS_BUS_PREFIX[spec.disks_bus]
    extra_targets = _extra_targets(prefix)
    lines = [
        "# ---- StratusLab VM template ----",
        "",
        "CPU = %d" % spec.cpu,
        "VCPU = %d" % spec.cpu,
        "MEMORY = %d" % spec.ram,
        'RANK = "- RUNNING_VMS"',
    ]
    if spec.requirements:
        lines.append("REQUIREMENTS = %s" % quote(spec.requirements))
    if spec.name:
        lines.append("NAME = %s" % quote(spec.name))
    lines += _vector("DISK", [
        ("source", quote(spec.image_source)),
        ("target", quote(prefix + "a")),
        ("save", "no"),
        ("readonly", '"no"'),
        ("driver", quote(spec.disk_driver or "raw")),
    ])
    lines += _vector("DISK", [
        ("type", "swap"),
        ("size", str(spec.swap)),
        ("target", quote(prefix + "b")),
        ("readonly", '"no"'),
    ])
    if spec.volatile_disk_mib:
        lines += _vector("DISK", [
            ("format", "ext3"),
            ("readonly", "no"),
            ("save", "no"),
            ("size", str(spec.volatile_disk_mib)),
            ("target", quote(prefix + next(extra_targets))),
            ("type", "fs"),
        ])
    for source in spec.persistent_sources:
        lines += _vector("DISK", [
            ("source", quote(source)),
            ("target", quote(prefix + next(extra_targets))),
            ("type", "block"),
        ])
    lines.append('NIC = [ network_uname = oneadmin, network = %s ]' % quote(spec.network))
    lines += _vector("GRAPHICS", [("port", '"-1"'), ("type", '"vnc"')])
    context = []
    if spec.public_key:
        context.append(("public_key", quote(spec.public_key)))
    context += [(key, quote(value)) for key, value in spec.context.items()]
    context.append(("target", quote(CONTEXT_TARGET)))
    lines += _vector("CONTEXT", context)
    if spec.inbound_ports:
        lines.append("INBOUND_PORTS = %s" % quote(",".join(str(p) for p in spec.inbound_ports)))
    return "\n".join(lines) + "\n"


def cloud_init_context(user_data: Optional[str], public_key: Optional[str]) -> dict[str, str]:
    """The context keys of StratusLab's cloud-init method (spec §2.8).

    User data travels as a gzipped MIME multipart document in base 64, the authorized
    keys as base 64 text.
    """
    context = {"CONTEXT_METHOD": "cloud-init"}
    if public_key:
        context["CLOUD_INIT_AUTHORIZED_KEYS"] = base64.b64encode(public_key.encode("utf-8")).decode("ascii")
    if user_data:
        subtype = "cloud-config" if user_data.lstrip().startswith("#cloud-config") else "x-shellscript"
        message = MIMEMultipart()
        part = MIMEText(user_data, subtype, "utf-8")
        part.add_header("Content-Disposition", 'attachment; filename="user-data"')
        message.attach(part)
        payload = gzip.compress(message.as_bytes(), mtime=0)
        context["CLOUD_INIT_USER_DATA"] = base64.b64encode(payload).decode("ascii")
    return context


def _vector(name: str, items: list[tuple[str, str]]) -> list[str]:
    body = ",\n".join("%s = %s" % (key, value) for key, value in items)
    return ["%s = [" % name, body, "]"]


def _extra_targets(prefix: str):
    # Extra disks take c, e, f... after the image (a) and swap (b); on the IDE bus "d" is
    # the context disk (hdd), so it is skipped there.
    for letter in "cdefghijklmnopqrstuvwxyz":
        if prefix == "hd" and prefix + letter == CONTEXT_TARGET:
            continue
        yield letter
