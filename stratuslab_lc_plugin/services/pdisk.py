"""The persistent disk service, pdisk: a small REST API with JSON answers (spec §4).

Every value in pdisk's JSON is a string; :class:`DiskRecord` turns them into Python types
once, here. Error statuses are mapped to the driver's errors with the server's own message;
an answer of the wrong shape (not JSON, missing keys, a disk id that is not a UUID, which
would otherwise end up in the next request's path) is a :class:`ProtocolError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlencode

from stratuslab_lc_plugin.errors import AccessDeniedError, InUseError, NotFoundError, ServiceError
from stratuslab_lc_plugin.services.connection import StratusLabConnection

__all__ = ["PdiskClient", "DiskRecord", "Mount", "DISK_ID", "pdisk_number"]

#: pdisk volume identifier: a lower-case canonical UUID (spec §3.5).
DISK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

_FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
_JSON = {"Accept": "application/json"}


@dataclass
class DiskRecord:
    uuid: str
    tag: str
    size: int
    owner: str
    count: int
    identifier: Optional[str] = None
    visibility: Optional[str] = None
    type: Optional[str] = None
    quarantine: Optional[str] = None

    @classmethod
    def from_json(cls, data: dict) -> "DiskRecord":
        return cls(
            uuid=_disk_id(data["uuid"]),
            tag=str(data.get("tag", "")),
            size=_gib(pdisk_number(data.get("size", "0"))),
            owner=str(data.get("owner", "")),
            count=pdisk_number(data.get("count", "0")),
            identifier=data.get("identifier") or None,
            visibility=data.get("visibility") or None,
            type=data.get("type") or None,
            quarantine=data.get("quarantine") or None,
        )


@dataclass
class Mount:
    vm_id: str
    device: str


#: A number as pdisk's FreeMarker templates print it: plain digits, or digits in groups of
#: three separated by the server locale's grouping character (``1,024`` in English,
#: ``1.024`` in German, ``1 024`` with a no-break or narrow no-break space in French,
#: ``1'024`` in Swiss locales).
_PDISK_NUMBER = re.compile(r"[0-9]+|[0-9]{1,3}(?:([,.'\u00a0\u202f ])[0-9]{3})(?:\1[0-9]{3})*")


def pdisk_number(value: object) -> int:
    """An integer from pdisk's JSON, whose numbers are strings printed for the server's locale.

    pdisk renders ``"${disk.size}"`` without ``?c`` (spec §8), so 1024 may arrive as
    ``"1,024"``. A JSON number is accepted too. Anything else raises ValueError.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ValueError("not a pdisk number: %r" % (value,))
    text = value.strip()
    if not _PDISK_NUMBER.fullmatch(text):
        raise ValueError("not a pdisk number: %r" % (value,))
    return int(re.sub(r"[^0-9]", "", text))


#: The largest size pdisk 14.06 creates, in GiB; a larger stored size is a byte count.
MAX_DISK_GIB = 1024


def _gib(size: int) -> int:
    """pdisk stores sizes in GiB, except for uploaded images, stored in bytes (spec §4.4).

    Disks made through the API have 1 to 1024 GiB, so only a larger value is a byte count
    (an image of at most 1024 bytes is not a disk).
    """
    return size if size <= MAX_DISK_GIB else -(-size // 2**30)


class PdiskClient:
    """The pdisk calls the driver makes, on one location's pdisk connection."""

    def __init__(self, connection: StratusLabConnection) -> None:
        self.connection = connection

    def list_disks(self) -> list[DiskRecord]:
        return self._call("list_volumes", "GET", "disks/", convert=_disks)

    def get_disk(self, uuid: str) -> DiskRecord:
        return self._call("get_volume", "GET", "disks/%s/" % uuid, convert=DiskRecord.from_json)

    def create_disk(self, size: int, tag: str, visibility: str = "private") -> str:
        form = {"size": str(size), "tag": tag, "visibility": visibility}
        return self._call("create_volume", "POST", "disks/", form=form, expect=201, convert=_created)

    def delete_disk(self, uuid: str) -> None:
        self._call("destroy_volume", "DELETE", "disks/%s/" % uuid)

    def mounts(self, uuid: str) -> list[Mount]:
        return self._call("list_mounts", "GET", "disks/%s/mounts/" % uuid, convert=_mounts)

    def attach(self, uuid: str, host: str, vm_id: int) -> str:
        """Hot-plug the disk into the VM; returns the device the server chose (``vdz``...)."""
        form = {"node": host, "vm_id": str(vm_id)}
        return self._call("attach_volume", "POST", "disks/%s/mounts/" % uuid, form=form, convert=_target)

    def detach(self, uuid: str, vm_id: int) -> str:
        action = "disks/%s/mounts/%s_%s" % (uuid, uuid, vm_id)
        return self._call("detach_volume", "DELETE", action, convert=lambda answer: str(answer.get("target", "")))

    def _call(self, operation: str, method: str, action: str, *, form=None, expect: int = 200, convert=None):
        """The answer's JSON, passed through ``convert`` (whose shape errors become ProtocolError)."""
        location = self.connection.location_id
        response = self.connection.send(
            operation,
            action,
            method=method,
            data=urlencode(form) if form is not None else None,
            headers=_FORM if method in ("POST", "PUT", "DELETE") else _JSON,
            idempotent=method == "GET",
        )
        if response.status == expect:
            try:
                answer = json.loads(response.raw_body.decode("utf-8"))
            except ValueError:
                raise self.connection.protocol_error(operation, "with a body that is not JSON", response.status) from None
            if convert is None:
                return answer
            try:
                return convert(answer)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise self.connection.protocol_error(
                    operation, "with JSON of an unexpected shape (%s)" % type(exc).__name__, response.status
                ) from None
        message = _message(response.raw_body) or "HTTP %d" % response.status
        if response.status == 401:
            raise self.connection.invalid_credentials(operation, message, 401)
        error = {
            403: AccessDeniedError,
            404: NotFoundError,
            409: InUseError,
        }.get(response.status, ServiceError)
        raise error(
            "%s: pdisk refused %s: %s" % (location, operation, message),
            location=location, operation=operation, code=response.status, remote_message=message,
            http_code=response.status, driver=self.connection.driver,
        )


# Converters of pdisk's JSON answers; a KeyError, TypeError... means a wrong shape.


def _disks(answer) -> list[DiskRecord]:
    return [DiskRecord.from_json(disk) for disk in answer]


def _created(answer) -> str:
    return _disk_id(answer["uuid"])


def _mounts(answer) -> list[Mount]:
    mounts = [Mount(vm_id=str(m.get("vmId", "")), device=str(m.get("device", ""))) for m in answer]
    if any(not m.vm_id.isdigit() for m in mounts):
        raise ValueError("a mount's vmId is not a VM number")  # it becomes a path and an int
    return mounts


def _target(answer) -> str:
    return str(answer["target"])


def _disk_id(value) -> str:
    if not isinstance(value, str) or not DISK_ID.fullmatch(value):
        raise ValueError("not a disk UUID")
    return value


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body.decode("utf-8")).get("message", "")).strip()
    except (ValueError, AttributeError):
        pass
    # Jetty's and nginx's error pages (before the request reaches pdisk): their title says it.
    title = _TITLE.search(body[:4096])
    if title:
        return title.group(1).decode("utf-8", "replace").strip()
    return body[:200].decode("utf-8", "replace").strip()


_TITLE = re.compile(rb"<title>([^<]{1,200})</title>", re.IGNORECASE)
