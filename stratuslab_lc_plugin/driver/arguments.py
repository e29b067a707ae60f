"""Checks of what callers pass to the driver, made before anything is sent.

A wrong argument must fail before a VM or a disk exists, with a message that names the
argument; the driver's methods call these first and only then talk to a service. OpenNebula
3.2 writes some values into its XML documents unescaped, so a few checks here also protect
the whole location's VM pool from becoming unreadable.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional

from libcloud.compute.base import NodeAuthPassword, NodeAuthSSHKey

from stratuslab_lc_plugin.config import LocationConfig
from stratuslab_lc_plugin.driver.convert import CLIENT_TOKEN_KEY, KEY_NAME_KEY
from stratuslab_lc_plugin.errors import ConfigurationError
from stratuslab_lc_plugin.services.pdisk import DISK_ID
from stratuslab_lc_plugin.services.vmtemplate import CONTEXT_KEY, MAX_NAME_LENGTH, check_value

__all__ = [
    "CLIENT_TOKEN",
    "MAX_VOLUME_SIZE",
    "VISIBILITIES",
    "VM_ID",
    "check_context",
    "check_disk_id",
    "check_node_name",
    "check_volatile_disk",
    "check_volume_request",
    "image_id",
    "public_key",
    "vm_id",
    "volume_id",
]

#: ``ex_client_token``: what fits in a context variable without quoting.
CLIENT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: An OpenNebula VM id as a node id: digits only (ONE ids are 32-bit signed integers).
VM_ID = re.compile(r"[0-9]{1,10}")
_MAX_VM_ID = 2**31 - 1
#: pdisk 14.06 accepts sizes from 1 to 1024 GiB.
MAX_VOLUME_SIZE = 1024
VISIBILITIES = ("private", "public")


def vm_id(node_id: object) -> int:
    """The OpenNebula VM number a node id stands for; anything else is a ValueError."""
    text = str(node_id) if isinstance(node_id, int) and not isinstance(node_id, bool) else node_id
    if not isinstance(text, str) or not VM_ID.fullmatch(text) or int(text) > _MAX_VM_ID:
        raise ValueError("%r is not a StratusLab node id (an OpenNebula VM number)" % (node_id,))
    return int(text)


def no_other_arguments(method: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse keyword arguments ``method`` does not know, but those starting with ``__``.

    Salt's ``libcloud_compute`` module hands its own call metadata (``__pub_fun``,
    ``__pub_jid``...) on to ``list_nodes``, ``reboot_node`` and ``destroy_node``.
    """
    unknown = sorted(name for name in kwargs if not name.startswith("__"))
    if unknown:
        raise TypeError("%s() got unexpected keyword arguments: %s" % (method, ", ".join(unknown)))


#: create_node arguments of other clouds that mean nothing here when they ask for nothing.
_EMPTY_PORTABLE = {"security_groups": ("default",), "security_group": ("default",), "networks": ()}


def portable_create_arguments(kwargs: Mapping[str, Any]) -> List[str]:
    """Check ``create_node`` arguments written for other clouds; return those ignored.

    An unknown ``ex_`` argument is a mistake (``TypeError``). Security groups and networks
    that ask for something StratusLab cannot give are refused (``ValueError``); empty ones
    and ``'default'`` are accepted. Any other argument (ElastiCluster passes its whole node
    configuration) is returned, to be ignored with a warning.
    """
    typos = sorted(name for name in kwargs if name.startswith("ex_"))
    if typos:
        raise TypeError("create_node() got unexpected arguments: %s" % ", ".join(typos))
    ignored = []
    for name, value in kwargs.items():
        if name.startswith("__"):
            continue
        if name in _EMPTY_PORTABLE:
            values = [value] if isinstance(value, str) else list(value or [])
            wanted = [v for v in values if getattr(v, "id", v) not in _EMPTY_PORTABLE[name]]
            if wanted:
                raise ValueError(
                    "create_node(%s=%r): StratusLab has no %s; a VM's network is ex_network "
                    "(public, local or private) and its open ports are its image's"
                    % (name, value, "networks to choose" if name == "networks" else "security groups")
                )
            continue
        ignored.append(name)
    return sorted(ignored)


def number(value: object, what: str) -> float:
    """A number argument, also as the strings tools read from ini files ("30", "0.5")."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise ValueError("%s must be a number, not %r" % (what, value))


def same_public_key(first: str, second: str) -> bool:
    """Whether two OpenSSH public key texts hold the same key (comments aside)."""
    return first.split()[:2] == second.split()[:2]


def check_disk_id(volume_id: Any) -> str:
    if not isinstance(volume_id, str) or not DISK_ID.fullmatch(volume_id):
        raise ValueError("%r is not a StratusLab volume id (a pdisk UUID)" % (volume_id,))
    return volume_id


def image_id(image: Any) -> str:
    """The id of a ``NodeImage``, a ``StorageVolume`` or a string (stripped)."""
    if isinstance(image, str):
        return image.strip()
    found = getattr(image, "id", None)
    if not isinstance(found, str):
        raise TypeError("image must be a NodeImage, a StorageVolume or a string, not %r" % (image,))
    return found


def volume_id(volume: Any) -> str:
    """The pdisk UUID of a ``StorageVolume`` or of a string."""
    return check_disk_id(volume if isinstance(volume, str) else getattr(volume, "id", repr(volume)))


def check_node_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError("name is %d characters long; OpenNebula allows %d" % (len(name), MAX_NAME_LENGTH))
    if any(ord(c) < 32 for c in name):
        raise ValueError("name must not contain control characters")
    # OpenNebula 3.2 writes NAME into its XML documents unescaped: one such name would
    # make the location's whole VM pool unreadable.
    if any(c in name for c in "<>&"):
        raise ValueError("name must not contain <, > or & (OpenNebula 3.2 does not escape them)")
    check_value(name, "name")
    return name


def check_context(context: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    """``ex_context`` as the upper-case variables that go into the VM's CONTEXT."""
    result = {}
    for key, value in (context or {}).items():
        if not isinstance(key, str) or not CONTEXT_KEY.fullmatch(key):
            raise ValueError("ex_context key %r must be letters, digits and '_'" % (key,))
        if key.upper() in ("TARGET", "PUBLIC_KEY", CLIENT_TOKEN_KEY, KEY_NAME_KEY):
            raise ValueError("ex_context key %r is set by the driver" % (key,))
        if value is None:
            raise ValueError("ex_context value of %r must not be None" % (key,))
        check_value(str(value), "ex_context value of %r" % (key,))
        if "]]>" in str(value):
            raise ValueError("ex_context value of %r must not contain ']]>' (it ends ONE's CDATA)" % (key,))
        result[key.upper()] = str(value)
    return result


def check_volatile_disk(size_gib: Optional[int]) -> Optional[int]:
    """``ex_volatile_disk`` (GiB) in MiB, as the template wants it."""
    if size_gib is None:
        return None
    if isinstance(size_gib, bool) or not isinstance(size_gib, int) or size_gib <= 0:
        raise ValueError("ex_volatile_disk is a size in GiB (a positive integer), not %r" % (size_gib,))
    return size_gib * 1024


def check_volume_request(size: Any, name: Any, visibility: Any, snapshot: Any) -> None:
    """The arguments of ``create_volume``."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError("size is a whole number of GiB, not %r" % (size,))
    if not 1 <= size <= MAX_VOLUME_SIZE:
        raise ValueError("size must be between 1 and %d GiB, not %d" % (MAX_VOLUME_SIZE, size))
    if not isinstance(name, str):
        raise ValueError("name must be a string, not %r" % (name,))
    if visibility not in VISIBILITIES:
        raise ValueError("ex_visibility must be 'private' or 'public', not %r" % (visibility,))
    if snapshot is not None:
        raise ValueError("StratusLab volumes cannot be created from snapshots")


def public_key(auth: Any, location: LocationConfig) -> str:
    """The SSH public key for the VM's context: ``auth``'s, else the location's key file."""
    if isinstance(auth, NodeAuthPassword):
        raise ValueError("StratusLab VMs accept SSH keys only: pass auth=NodeAuthSSHKey(public_key)")
    if auth is not None:
        if not isinstance(auth, NodeAuthSSHKey):
            raise TypeError("auth must be a NodeAuthSSHKey, not %r" % (type(auth).__name__,))
        return auth.pubkey.strip() + "\n"
    path = location.public_key_path()
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ConfigurationError(
            "no SSH public key for the VM: pass auth=NodeAuthSSHKey(...) or set "
            "user_public_key_file in [%s] of %s (%s: %s)"
            % (location.id, location.source, path, exc.strerror),
            path=location.source, section=location.id, key="user_public_key_file",
        ) from None
    # ssh-keygen's RFC 4716 export carries "Comment:" headers the VM must not receive.
    key = "\n".join(line for line in lines if not line.startswith("Comment:")).strip()
    if not key:
        raise ConfigurationError("SSH public key file %s is empty" % path, path=location.source, section=location.id)
    return key + "\n"
