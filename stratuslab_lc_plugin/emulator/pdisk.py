"""The local cloud's persistent disk service (pdisk 14.06, spec §4).

Mounted by the front at ``/pdisk/pswd`` and ``/pdisk/cert``; the front authenticates
the caller and passes the user name, which is the disk owner. The configured service
user (``pdisk`` by default) is a super-user who sees and may change every disk.

Routes (each also with a trailing ``/``):

================================  ===================  ==================================
path                              methods              what
================================  ===================  ==================================
``/disks``                        GET, POST            list own disks (newest first), create
``/disks/{uuid}``                 GET, HEAD, PUT,      read, exists?, update (form), delete
                                  DELETE
``/disks/{uuid}/mounts``          GET, POST            list mounts, attach (form ``node``,
                                                       ``vm_id``, ``register_only``)
``/disks/{uuid}/mounts/{mount}``  GET, DELETE          read, detach (mount id
                                                       ``<uuid>_<vm id>``)
================================  ===================  ==================================

Every JSON value is a string, keys in the order of the server's FreeMarker templates;
errors are ``{"message": ..., "code": <int>}``. The templates print ``size`` and ``count``
with ``${...}`` and no ``?c``, so FreeMarker formats them for the server's locale: an
en-US site (the default here, ``locale=``) answers ``"1,024"``, a French one ``"1 024"``
with a no-break space (:func:`freemarker_number`). Devices are allocated per VM from
``vdz`` downwards, the first free letter first; ``register_only`` mounts are bookkeeping
only and get the target ``static``.

State lives in the shared :class:`~.store.Store` (tables ``pdisk_disks`` and
``pdisk_mounts``); each request runs in one store transaction, so concurrent requests
never see half an operation nor get the same device twice.

Checks and texts follow pdisk 14.06's resources (spec section 8): every method on
``/disks/{uuid}`` first needs the right to view the disk (``DiskResource.doInit``: 404,
then 403 "insufficient access rights to view disk (<uuid>)"); delete then needs the owner
or the service user, while an update does not (its rights check is ignored); create and
update read the same form fields (``processWebForm``: a size ``Long.parseLong`` refuses,
``visibility`` through ``valueOf``, an unknown ``type`` is an uncaught exception, a 500);
attaching checks "no free devices" before the rights; listing mounts checks no rights and
orders them by device; an unknown mount is a 404 with Restlet's default description, and
so is (unlike pdisk, which removes it) a mount of another disk than the path's.
The copy-on-write ``POST /disks/{uuid}``, uploads, ``/turl`` and ``/instances`` are not
emulated.
"""

from __future__ import annotations

import json
import re
import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import Dict, List, Literal, Mapping, Optional, Tuple, TypedDict, Union

from .store import Store
from .web import RESTLET_DESCRIPTIONS, Request, Response

__all__ = ["PdiskHandler", "Mount", "DISK_TYPES", "freemarker_number", "DEFAULT_LOCALE"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pdisk_disks (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order (newest first lists)
    uuid        TEXT NOT NULL UNIQUE,
    owner       TEXT NOT NULL,
    tag         TEXT NOT NULL DEFAULT '',
    size        INTEGER NOT NULL,
    visibility  TEXT NOT NULL,
    type        TEXT NOT NULL,
    identifier  TEXT NOT NULL DEFAULT '',
    quarantine  TEXT NOT NULL DEFAULT '',
    created     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pdisk_mounts (
    disk_uuid   TEXT NOT NULL REFERENCES pdisk_disks(uuid),
    vm_id       TEXT NOT NULL,
    node        TEXT NOT NULL,
    target      TEXT NOT NULL,
    created     REAL NOT NULL,
    PRIMARY KEY (disk_uuid, vm_id)
);
-- One device per VM; register-only mounts all share the pseudo target "static".
CREATE UNIQUE INDEX IF NOT EXISTS pdisk_mounts_device
    ON pdisk_mounts(vm_id, target) WHERE target <> 'static';
"""

DISK_TYPES = ("MACHINE_IMAGE_ORIGIN", "MACHINE_IMAGE_LIVE", "DATA_IMAGE_ORIGIN",
              "DATA_IMAGE_LIVE", "DATA_IMAGE_RAW_READONLY", "DATA_IMAGE_RAW_READ_WRITE")
_VISIBILITIES = ("PRIVATE", "PUBLIC")
_STATIC_TARGET = "static"
_DEVICES = tuple("vd" + chr(c) for c in range(ord("z"), ord("a") - 1, -1))  # vdz ... vda
_MAX_SIZE = 1024
_JAVA_LONG = re.compile(r"[+-]?[0-9]+")
_JSON_TYPE = "application/json; charset=UTF-8"
_VISIBILITY_ENUM = "eu.stratuslab.storage.disk.resources.BaseResource.DiskVisibility"
# The grouping separator of Java's number format per locale (FreeMarker's "number");
# "computer" is FreeMarker's ?c: no grouping.
_GROUPING = {"en": ",", "fr": "\u00a0", "de": ".", "de_CH": "'", "it": ".", "es": ".",
             "nl": ".", "pt": ".", "ru": "\u00a0", "pl": "\u00a0", "computer": ""}
DEFAULT_LOCALE = "en_US"

_ROUTES = (
    (re.compile(r"/disks/?"), "disks", ("GET", "POST")),
    (re.compile(r"/disks/([^/]+)/?"), "disk", ("GET", "PUT", "DELETE")),
    (re.compile(r"/disks/([^/]+)/mounts/?"), "mounts", ("GET", "POST")),
    (re.compile(r"/disks/([^/]+)/mounts/([^/]+)/?"), "mount", ("GET", "DELETE")),
)


class _DiskFields(TypedDict, total=False):
    """The columns of ``pdisk_disks`` a create or an update sets from its form."""

    owner: str
    tag: str
    size: int
    visibility: str
    type: str
    identifier: str
    quarantine: str


_TEXT_FIELDS: Tuple[Literal["tag"], Literal["owner"], Literal["quarantine"],
                    Literal["identifier"]] = ("tag", "owner", "quarantine", "identifier")


@dataclass(frozen=True)
class Mount:
    """A disk attached to (or registered for) a VM."""

    disk_uuid: str
    vm_id: str
    node: str
    target: str

    @property
    def mount_id(self) -> str:
        return f"{self.disk_uuid}_{self.vm_id}"


class _Refusal(Exception):
    """An error answer: status code and the message the client shows."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(status: int, document: object) -> Response:
    return Response(status, json.dumps(document).encode("utf-8"), _JSON_TYPE)


def _java_long(text: str) -> int:
    """``Long.parseLong`` semantics, with Java's error text."""
    if not _JAVA_LONG.fullmatch(text) or not -2 ** 63 <= int(text) < 2 ** 63:
        raise ValueError(f'For input string: "{text}"')
    return int(text)


def _grouping(locale: str) -> str:
    """The grouping separator for a locale name (``en_US``, ``fr-FR``, ``de_CH``...)."""
    name = locale.replace("-", "_")
    for key in (name, name.split("_")[0].lower()):
        if key in _GROUPING:
            return _GROUPING[key]
    raise ValueError("unknown locale %r for pdisk's numbers (known: %s)"
                     % (locale, ", ".join(sorted(_GROUPING))))


def freemarker_number(value: int, locale: str = DEFAULT_LOCALE) -> str:
    """``${value}`` as FreeMarker prints an integer for ``locale`` (grouped by thousands)."""
    separator = _grouping(locale)
    digits = str(abs(value))
    groups: List[str] = []
    while len(digits) > 3:
        digits, tail = digits[:-3], digits[-3:]
        groups.insert(0, tail)
    text = separator.join([digits] + groups)
    return "-" + text if value < 0 else text


class PdiskHandler:
    """The pdisk REST/JSON service over the shared store."""

    def __init__(self, store: Store, service_user: str = "pdisk",
                 locale: str = DEFAULT_LOCALE) -> None:
        self.store = store
        self.service_user = service_user
        _grouping(locale)  # fail early on an unknown locale
        self.locale = locale
        store.ensure_schema(_SCHEMA)

    # --- API for the rest of the local cloud ----------------------------------------

    def mounts_for_vm(self, vm_id: Union[int, str]) -> List[Mount]:
        """The disks attached to a VM, most recent first."""
        with self.store.transaction() as db:
            rows = db.execute("SELECT disk_uuid, vm_id, node, target FROM pdisk_mounts "
                              "WHERE vm_id = ? ORDER BY created DESC, rowid DESC",
                              (str(vm_id),)).fetchall()
        return [Mount(*row) for row in rows]

    def release_vm(self, vm_id: Union[int, str]) -> List[str]:
        """Forget every mount of a VM that is gone (so its disks can be deleted again);
        returns the disk uuids that were released."""
        with self.store.transaction() as db:
            rows = db.execute("SELECT disk_uuid FROM pdisk_mounts WHERE vm_id = ?",
                              (str(vm_id),)).fetchall()
            db.execute("DELETE FROM pdisk_mounts WHERE vm_id = ?", (str(vm_id),))
        return [row[0] for row in rows]

    # --- HTTP -----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        head = request.method == "HEAD"
        method = "GET" if head else request.method
        try:
            user = request.user
            if not user:
                # The front authenticates every pdisk route; refuse rather than guess.
                raise _Refusal(401, "authentication required")
            for pattern, name, methods in _ROUTES:
                match = pattern.fullmatch(request.path)
                if match:
                    break
            else:
                raise _Refusal(404, RESTLET_DESCRIPTIONS[404])
            if method not in methods:
                response = self._error(405, RESTLET_DESCRIPTIONS[405])
                response.headers["Allow"] = ", ".join(methods + ("HEAD",))
                return response
            with self.store.transaction() as db:
                response = getattr(self, f"_{name}_{method.lower()}")(
                    db, request, user, *match.groups())
        except _Refusal as refusal:
            response = self._error(refusal.status, refusal.message)
        if head:
            response.body = b""
        return response

    @staticmethod
    def _error(status: int, message: str) -> Response:
        return _json(status, {"message": message, "code": status})

    # --- /disks ---------------------------------------------------------------------

    def _disks_get(self, db, request: Request, user: str) -> Response:
        sql = "SELECT * FROM pdisk_disks"
        args: tuple = ()
        if user != self.service_user:
            sql += " WHERE owner = ?"
            args = (user,)
        rows = db.execute(sql + " ORDER BY seq DESC", args).fetchall()
        return _json(200, [self._summary(db, row) for row in rows])

    def _disks_post(self, db, request: Request, user: str) -> Response:
        disk: _DiskFields = {
            "owner": user, "tag": "", "size": -1, "visibility": "PRIVATE",
            "type": "DATA_IMAGE_RAW_READ_WRITE", "identifier": "", "quarantine": ""}
        disk.update(self._form_fields(request.form))
        # DiskBaseResource.validateNewDisk
        if disk["identifier"] and db.execute("SELECT 1 FROM pdisk_disks WHERE identifier = ?",
                                             (disk["identifier"],)).fetchone():
            raise _Refusal(403, "Disk already registered")
        if not 1 <= disk["size"] <= _MAX_SIZE:
            raise _Refusal(400, f"Size must be an integer between 1 and {_MAX_SIZE}")
        disk_uuid = str(uuidlib.uuid4())
        db.execute("INSERT INTO pdisk_disks (uuid, owner, tag, size, visibility, type, identifier,"
                   " quarantine, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (disk_uuid, disk["owner"], disk["tag"], disk["size"], disk["visibility"],
                    disk["type"], disk["identifier"], disk["quarantine"], time.time()))
        return _json(201, {"uuid": disk_uuid})

    @staticmethod
    def _form_fields(form: Mapping[str, str]) -> _DiskFields:
        """``DiskBaseResource.processWebForm``: the disk fields a create or update sets."""
        fields: _DiskFields = {}
        if "size" in form:
            try:
                fields["size"] = _java_long(form["size"])
            except ValueError as exc:
                raise _Refusal(400, f"Error parsing size: {exc}") from None
        if "visibility" in form:
            value = form["visibility"].upper()
            if value not in _VISIBILITIES:
                raise _Refusal(400, "Invalid value for form element visibility: No enum "
                                    f"constant {_VISIBILITY_ENUM}.{value}")
            fields["visibility"] = value
        for name in _TEXT_FIELDS:
            if name in form:
                fields[name] = form[name]
        if "type" in form:
            if form["type"] not in DISK_TYPES:  # DiskType.valueOf, exception not caught
                raise _Refusal(500, RESTLET_DESCRIPTIONS[500])
            fields["type"] = form["type"]
        return fields

    # --- /disks/{uuid} --------------------------------------------------------------

    def _disk_get(self, db, request: Request, user: str, disk_uuid: str) -> Response:
        return _json(200, self._detail(db, self._viewable(db, disk_uuid, user)))

    def _disk_put(self, db, request: Request, user: str, disk_uuid: str) -> Response:
        self._viewable(db, disk_uuid, user)
        # DiskResource.update calls hasSufficientRightsToEdit and ignores its answer.
        for column, value in self._form_fields(request.form).items():
            # Columns come from the fixed names of _form_fields, never from the request.
            db.execute(f"UPDATE pdisk_disks SET {column} = ? WHERE uuid = ?", (value, disk_uuid))
        return _json(200, self._detail(db, self._disk(db, disk_uuid)))

    def _disk_delete(self, db, request: Request, user: str, disk_uuid: str) -> Response:
        row = self._viewable(db, disk_uuid, user)
        if not self._may_change(row, user):
            raise _Refusal(403, f"insufficient rights to delete disk ({disk_uuid})")
        if self._count(db, disk_uuid):
            raise _Refusal(409, f"disk ({disk_uuid}) is in use and can't be deleted")
        db.execute("DELETE FROM pdisk_disks WHERE uuid = ?", (disk_uuid,))
        return _json(200, {"uuid": disk_uuid})

    # --- /disks/{uuid}/mounts -------------------------------------------------------

    def _mounts_get(self, db, request: Request, user: str, disk_uuid: str) -> Response:
        self._known(db, disk_uuid)  # MountsResource checks no rights
        mounts = db.execute("SELECT vm_id, target FROM pdisk_mounts WHERE disk_uuid = ? "
                            "ORDER BY target", (disk_uuid,)).fetchall()
        return _json(200, [{"vmId": vm, "device": target} for vm, target in mounts])

    def _mounts_post(self, db, request: Request, user: str, disk_uuid: str) -> Response:
        row = self._known(db, disk_uuid)
        node = request.form.get("node", "")
        vm_id = request.form.get("vm_id", "")
        if not node:
            raise _Refusal(400, "missing node attribute")
        if not vm_id:
            raise _Refusal(400, "missing vm_id attribute")
        if request.form.get("register_only", "").lower() == "true":
            target = _STATIC_TARGET
        else:  # Instance.nextDiskTarget, before any rights are checked
            used = {t for (t,) in db.execute(
                "SELECT target FROM pdisk_mounts WHERE vm_id = ?", (vm_id,))}
            free = next((d for d in _DEVICES if d not in used), None)
            if free is None:
                raise _Refusal(409, "no free devices available")
            target = free
        if not self._may_view(row, user):
            raise _Refusal(403, "Not enough rights to attach disk")
        if db.execute("SELECT 1 FROM pdisk_mounts WHERE disk_uuid = ? AND vm_id = ?",
                      (disk_uuid, vm_id)).fetchone():
            raise _Refusal(403, f"Mount already exists for: {vm_id} and {disk_uuid}")
        db.execute("INSERT INTO pdisk_mounts (disk_uuid, vm_id, node, target, created) "
                   "VALUES (?, ?, ?, ?, ?)", (disk_uuid, vm_id, node, target, time.time()))
        return _json(200, {"node": node, "vm_id": vm_id, "target": target, "uuid": [disk_uuid]})

    # --- /disks/{uuid}/mounts/{mount id} --------------------------------------------

    def _mount_get(self, db, request: Request, user: str, disk_uuid: str,
                   mount_id: str) -> Response:
        row = self._disk(db, disk_uuid)
        self._require_view(row, user, disk_uuid)
        return _json(200, self._mount_document(self._mount(db, mount_id)))

    def _mount_delete(self, db, request: Request, user: str, disk_uuid: str,
                      mount_id: str) -> Response:
        mount = self._mount(db, mount_id)  # MountResource.doInit looks the mount up first
        row = self._find(db, disk_uuid)
        if row is None:
            raise _Refusal(404, f"unknown disk: {disk_uuid}")
        if not self._may_view(row, user):
            raise _Refusal(403, "insufficient rights to detach disk")
        if mount.disk_uuid != disk_uuid:
            # pdisk 14.06 would remove that other disk's mount (answering "static"):
            # refused here instead.
            raise _Refusal(404, RESTLET_DESCRIPTIONS[404])
        db.execute("DELETE FROM pdisk_mounts WHERE disk_uuid = ? AND vm_id = ?",
                   (mount.disk_uuid, mount.vm_id))
        return _json(200, self._mount_document(mount))

    @staticmethod
    def _mount_document(mount: Mount) -> Dict[str, str]:
        return {"diskId": mount.disk_uuid, "mountId": mount.mount_id,
                "vmId": mount.vm_id, "target": mount.target}

    # --- helpers --------------------------------------------------------------------

    @staticmethod
    def _find(db, disk_uuid: str) -> Optional[Mapping]:
        return db.execute("SELECT * FROM pdisk_disks WHERE uuid = ?", (disk_uuid,)).fetchone()

    def _disk(self, db, disk_uuid: str) -> Mapping:
        row = self._find(db, disk_uuid)
        if row is None:
            raise _Refusal(404, f"disk ({disk_uuid}) does not exist")
        return row

    def _viewable(self, db, disk_uuid: str, user: str) -> Mapping:
        """``DiskResource.doInit``, for every method on ``/disks/{uuid}``."""
        row = self._disk(db, disk_uuid)
        self._require_view(row, user, disk_uuid)
        return row

    def _require_view(self, row: Mapping, user: str, disk_uuid: str) -> None:
        if not self._may_view(row, user):
            raise _Refusal(403, f"insufficient access rights to view disk ({disk_uuid})")

    def _known(self, db, disk_uuid: str) -> Mapping:
        """``MountsResource.doInit``: the disk must exist, whoever asks."""
        row = self._find(db, disk_uuid)
        if row is None:
            raise _Refusal(404, f"Unknown disk: {disk_uuid}")
        return row

    @staticmethod
    def _mount(db, mount_id: str) -> Mount:
        """The mount with that id (``<disk uuid>_<vm id>``), whatever disk the path names."""
        disk_uuid, sep, vm_id = mount_id.partition("_")
        row = sep and db.execute(
            "SELECT disk_uuid, vm_id, node, target FROM pdisk_mounts "
            "WHERE disk_uuid = ? AND vm_id = ?", (disk_uuid, vm_id)).fetchone()
        if not row:
            raise _Refusal(404, RESTLET_DESCRIPTIONS[404])
        return Mount(*row)

    def _may_view(self, row: Mapping, user: str) -> bool:
        return row["visibility"] == "PUBLIC" or self._may_change(row, user)

    def _may_change(self, row: Mapping, user: str) -> bool:
        return user == row["owner"] or user == self.service_user

    @staticmethod
    def _count(db, disk_uuid: str) -> int:
        return db.execute("SELECT COUNT(*) FROM pdisk_mounts WHERE disk_uuid = ?",
                          (disk_uuid,)).fetchone()[0]

    def _summary(self, db, row: Mapping) -> Dict[str, str]:
        """A list entry (json/disks.ftl key order)."""
        document = {"uuid": row["uuid"], "tag": row["tag"]}
        if row["quarantine"]:
            document["quarantine"] = row["quarantine"]
        document["count"] = freemarker_number(self._count(db, row["uuid"]), self.locale)
        document["owner"] = row["owner"]
        if row["identifier"]:
            document["identifier"] = row["identifier"]
        document["size"] = freemarker_number(row["size"], self.locale)
        return document

    def _detail(self, db, row: Mapping) -> Dict[str, str]:
        """One disk (json/disk.ftl key order)."""
        document = {"uuid": row["uuid"], "tag": row["tag"],
                    "count": freemarker_number(self._count(db, row["uuid"]), self.locale),
                    "owner": row["owner"]}
        for optional in ("identifier", "quarantine"):
            if row[optional]:
                document[optional] = row[optional]
        document.update(size=freemarker_number(row["size"], self.locale), type=row["type"],
                        visibility=row["visibility"])
        return document
