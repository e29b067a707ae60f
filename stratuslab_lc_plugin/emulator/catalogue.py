"""The image catalogue behind the local cloud's Marketplace.

A StratusLab Marketplace stores signed ``rdf:RDF`` metadata documents, one per
(image identifier, endorser e-mail, endorsement time). The emulated Marketplace
(:mod:`.marketplace`) serves them, and the rest of the local cloud looks images up here
when a VM is started (disk format and bus, whether the guest offers SFTP...).

:meth:`Catalogue.seeded` builds a realistic catalogue shaped like the real samples in
``fixtures/real/marketplace/`` (namespaces, endorsement block, checksums, locations):
valid, expired and deprecated entries, several operating systems, raw and qcow2, ide and
virtio, and images endorsed more than once, so "newest entry per (identifier, endorser)"
matters. Validity dates are relative to the moment the catalogue is built, because the
server's ``status=valid`` rule compares them with the current time.

Image identifiers are derived from the image's SHA-1 exactly as StratusLab does (spec
§3.5); :func:`new_entry` computes them, and :class:`CatalogueEntry` refuses an identifier
that does not match its SHA-1. The emulator has no image files: the checksums of a
synthetic entry are those of a short, deterministic stand-in content, so every digest of
one entry describes the same bytes. Entries that reuse a real StratusLab identifier carry
only the SHA-1 that identifier encodes. Entries are not signed (no XML-DSig
``<Signature>``): the 14.06 client never verifies signatures when it reads metadata.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from types import MappingProxyType
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "Catalogue",
    "CatalogueEntry",
    "new_entry",
    "image_id_from_sha1",
    "sha1_from_image_id",
    "format_time",
    "parse_time",
]

_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ID_LENGTH = 27
_ID_RE = re.compile(r"[A-Za-z0-9_-]{27}")
_SHA1_RE = re.compile(r"[0-9a-f]{40}")

# Namespaces of the Marketplace metadata (spec §3.4).
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_DCTERMS = "http://purl.org/dc/terms/"
NS_SLTERMS = "http://mp.stratuslab.eu/slterms#"
NS_SLREQ = "http://mp.stratuslab.eu/slreq#"
XML_BASE = "http://mp.stratuslab.eu/"

# Digest names as they appear in slreq:algorithm, in the order the signing tool writes them.
_DIGESTS = (("MD5", "md5"), ("SHA-1", "sha1"), ("SHA-256", "sha256"), ("SHA-512", "sha512"))


def image_id_from_sha1(sha1_hex: str) -> str:
    """Marketplace identifier of an image: its SHA-1 in base 64 (alphabet ``A-Z a-z 0-9 - _``),
    most significant digit first, 27 digits."""
    digest = sha1_hex.strip().lower()
    if not _SHA1_RE.fullmatch(digest):
        raise ValueError(f"not a SHA-1 hex digest: {sha1_hex!r}")
    number = int(digest, 16)
    digits = []
    for _ in range(_ID_LENGTH):
        digits.append(_ID_ALPHABET[number & 63])
        number >>= 6
    return "".join(reversed(digits))


def sha1_from_image_id(image_id: str) -> str:
    """Inverse of :func:`image_id_from_sha1` (the identifier encodes all 160 bits)."""
    if not _ID_RE.fullmatch(image_id):
        raise ValueError(f"not a Marketplace image identifier: {image_id!r}")
    number = 0
    for char in image_id:
        number = (number << 6) | _ID_ALPHABET.index(char)
    if number >> 160:
        raise ValueError(f"identifier does not encode a SHA-1: {image_id!r}")
    return f"{number:040x}"


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, seconds precision: the form used in metadata and URLs."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse the ``YYYY-MM-DDTHH:MM:SSZ`` form of :func:`format_time`."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def _utc(moment: datetime) -> datetime:
    # Naive datetimes are taken as UTC so that comparisons with "now" never raise.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class CatalogueEntry:
    """One Marketplace metadata entry: an image endorsed by one person at one time.

    ``created`` is the endorsement time (with ``image_id`` and ``endorser_email`` it
    identifies the entry, as in ``/metadata/{id}/{email}/{created}``); ``image_created``
    is the image's own ``dcterms:created``. ``has_sftp`` is not metadata: it tells the
    emulated guests whether the image's SSH server offers SFTP (ttylinux does not).
    """

    image_id: str
    title: str
    description: str
    os: str
    os_version: str
    arch: str
    version: str
    format: str
    disks_bus: str
    endorser_email: str
    created: datetime
    valid: datetime
    checksums: Mapping[str, str] = field(compare=False, hash=False)
    bytes: int = 0
    deprecated: Optional[str] = None
    locations: Tuple[str, ...] = ()
    inbound_ports: Tuple[int, ...] = ()
    has_sftp: bool = True
    compression: str = "gz"
    kind: str = "machine"
    image_type: str = "base"
    tag: str = ""
    image_created: Optional[datetime] = None
    creator: str = "StratusLab"
    publisher: str = "StratusLab"
    hypervisor: str = "kvm"
    endorser_subject: str = ""
    endorser_issuer: str = "CN=StratusLab Test CA,O=StratusLab,C=EU"

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise fields once, here
        set_(self, "created", _utc(self.created))
        set_(self, "valid", _utc(self.valid))
        set_(self, "image_created", _utc(self.image_created or self.created))
        set_(self, "locations", tuple(self.locations))
        set_(self, "inbound_ports", tuple(int(p) for p in self.inbound_ports))
        checksums = {alg: value.lower() for alg, value in dict(self.checksums).items()}
        set_(self, "checksums", MappingProxyType(checksums))
        if not self.endorser_subject:
            set_(self, "endorser_subject", f"CN={self.endorser_email},O=StratusLab,C=EU")
        sha1 = checksums.get("SHA-1")
        if sha1 is None:
            raise ValueError(f"entry {self.image_id!r} has no SHA-1 checksum")
        if image_id_from_sha1(sha1) != self.image_id:
            raise ValueError(
                f"identifier {self.image_id!r} does not match SHA-1 {sha1} "
                f"(expected {image_id_from_sha1(sha1)!r})")

    @property
    def key(self) -> Tuple[str, str, str]:
        """(identifier, endorser e-mail, endorsement time): the entry's Marketplace address."""
        return (self.image_id, self.endorser_email, format_time(self.created))

    def status(self, now: Optional[datetime] = None) -> str:
        """``valid``, ``expired`` or ``deprecated``, with the server's rules (spec §3.2)."""
        if self.deprecated is not None:
            return "deprecated"
        return "valid" if self.valid > _utc(now or datetime.now(timezone.utc)) else "expired"

    def to_rdf_xml(self) -> str:
        """The stored ``rdf:RDF`` document, without XML declaration."""
        return self._rdf

    @cached_property
    def _rdf(self) -> str:
        # Laid out like the real signed samples (valid-two-locations.xml).
        def el(name: str, text: str, indent: int = 8) -> str:
            pad = " " * indent
            return f"{pad}<{name}>{escape(text)}</{name}>" if text else f"{pad}<{name}/>"

        lines = [
            f'<rdf:RDF xmlns:dcterms="{NS_DCTERMS}" xmlns:rdf="{NS_RDF}" '
            f'xmlns:slreq="{NS_SLREQ}" xmlns:slterms="{NS_SLTERMS}" xml:base="{XML_BASE}">',
            "",
            f"    <rdf:Description rdf:about={quoteattr('#' + self.image_id)}>",
            "",
            el("dcterms:identifier", self.image_id),
            el("slreq:bytes", str(self.bytes)),
        ]
        for algorithm, value in self.checksums.items():
            lines += [
                '        <slreq:checksum rdf:parseType="Resource">',
                el("slreq:algorithm", algorithm, 12),
                el("slreq:value", value, 12),
                "        </slreq:checksum>",
            ]
        lines += [
            '        <slreq:endorsement rdf:parseType="Resource">',
            el("dcterms:created", format_time(self.created), 12),
            '            <slreq:endorser rdf:parseType="Resource">',
            el("slreq:email", self.endorser_email, 16),
            el("slreq:subject", self.endorser_subject, 16),
            el("slreq:issuer", self.endorser_issuer, 16),
            "            </slreq:endorser>",
            "        </slreq:endorsement>",
            "",
            el("dcterms:type", self.image_type),
            el("slterms:kind", self.kind),
            el("slterms:os", self.os),
            el("slterms:os-version", self.os_version),
            el("slterms:os-arch", self.arch),
            el("slterms:version", self.version),
            el("dcterms:compression", self.compression),
            el("dcterms:format", self.format),
            el("slterms:disks-bus", self.disks_bus),
            el("dcterms:creator", self.creator),
            # __post_init__ set image_created (to created when not given)
            el("dcterms:created", format_time(self.image_created or self.created)),
            el("dcterms:valid", format_time(self.valid)),
            el("dcterms:title", self.title),
        ]
        if self.tag:
            lines.append(el("dcterms:alternative", self.tag))
        lines += [
            el("dcterms:description", self.description),
            el("slterms:hypervisor", self.hypervisor),
            el("dcterms:publisher", self.publisher),
        ]
        lines += [el("slterms:location", location) for location in self.locations]
        lines += [el("slterms:inbound-port", str(port)) for port in self.inbound_ports]
        if self.deprecated is not None:
            lines.append(el("slterms:deprecated", self.deprecated))
        lines += ["", "    </rdf:Description>", "</rdf:RDF>"]
        return "\n".join(lines)


def new_entry(*, sha1: Optional[str] = None, content: Optional[bytes] = None,
              image_id: Optional[str] = None, **fields) -> CatalogueEntry:
    """Build a :class:`CatalogueEntry` whose identifier and checksums agree.

    Give one of: ``content`` (the image bytes: every digest is computed from them),
    ``sha1`` (only the SHA-1 is known), ``image_id`` (a real identifier: its SHA-1 is
    decoded from it). With none of them a deterministic stand-in content is derived from
    the descriptive fields. ``bytes`` defaults to the length of ``content``.
    """
    if image_id is not None:
        sha1 = sha1_from_image_id(image_id)
    if sha1 is not None:
        checksums = {"SHA-1": sha1.lower()}
    else:
        if content is None:
            content = " ".join(str(fields.get(name, "")) for name in
                               ("title", "os", "os_version", "arch", "version")).encode()
        checksums = {label: hashlib.new(algo, content).hexdigest() for label, algo in _DIGESTS}
        fields.setdefault("bytes", len(content))
    return CatalogueEntry(image_id=image_id_from_sha1(checksums["SHA-1"]),
                          checksums=checksums, **fields)


class Catalogue:
    """A thread-safe collection of entries (every version of every endorsement).

    Entries may be added while the cloud runs (tests, users); an entry with the same
    (identifier, endorser, endorsement time) replaces the earlier one.
    """

    def __init__(self, entries: Iterable[CatalogueEntry] = ()) -> None:
        self._lock = threading.Lock()
        self._entries: Dict[Tuple[str, str, str], CatalogueEntry] = {}
        for entry in entries:
            self.add(entry)

    @classmethod
    def seeded(cls, now: Optional[datetime] = None) -> "Catalogue":
        """The default catalogue of the local cloud (see :data:`_SEEDS`)."""
        return cls(_seed_entries(_utc(now or datetime.now(timezone.utc))))

    def add(self, entry: CatalogueEntry) -> None:
        with self._lock:
            self._entries[entry.key] = entry

    def entries(self) -> Tuple[CatalogueEntry, ...]:
        """Every stored entry, newest endorsement first."""
        with self._lock:
            snapshot = list(self._entries.values())
        return tuple(sorted(snapshot, key=lambda e: (e.created, e.image_id), reverse=True))

    def latest(self) -> List[CatalogueEntry]:
        """The newest entry of each (identifier, endorser), whatever its status: the
        entries the Marketplace tags ``latest`` and lists by default."""
        newest: Dict[Tuple[str, str], CatalogueEntry] = {}
        for entry in self.entries():
            newest.setdefault((entry.image_id, entry.endorser_email), entry)
        return list(newest.values())

    def find(self, image_id: str, email: str, created: str) -> Optional[CatalogueEntry]:
        """The entry stored at ``/metadata/{image_id}/{email}/{created}``, if any."""
        with self._lock:
            return self._entries.get((image_id, email, created))

    def entry(self, image_id: str, now: Optional[datetime] = None) -> Optional[CatalogueEntry]:
        """The image as ``GET /metadata/{image_id}`` would give it: among the latest entry
        of each endorser, the valid ones; the most recently endorsed wins. ``None`` when
        the image is unknown, expired or deprecated."""
        valid = [e for e in self.latest()
                 if e.image_id == image_id and e.status(now) == "valid"]
        return valid[0] if valid else None  # latest() keeps newest-first order

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# --- the seeded catalogue ---------------------------------------------------------------

_APPLIANCES = "http://appliances.stratuslab.eu/images"
_FIXTURE_CHECKSUMS = {  # fixtures/real/marketplace/valid-two-locations.xml
    "MD5": "a003bf123ce16965005ee85c60281a31",
    "SHA-1": "1104f3e30c030f8b93f220b04131032dddf51f21",
    "SHA-256": "63694032b698d2f455b67311e0d4b821e3c4a8a08c679f3e6514d5e13b7255f8",
    "SHA-512": "70cd8ad17fab1abe7fae230ff70f682ed3af4892225b3100e6a07fc2471b657d"
               "ef80fce93afd02aa7f3e716bb8cab02b745d032cdc4895d5fd242a7ac8403693",
}
_JANE = {  # the endorser of the real signed samples
    "endorser_email": "jane.tester@example.org",
    "endorser_subject": "CN=Jane Tester,OU=Testing Department,O=StratusLab Project,C=EU",
    "endorser_issuer": "CN=TestCA,OU=Test,O=StratusLab,C=EU",
    "creator": "Jane Tester",
}
_APPLIANCE_TEAM = {"endorser_email": "appliances@example.org", "creator": "StratusLab"}
_LAL = {"endorser_email": "images@lal.example.org", "creator": "LAL cloud team",
        "endorser_subject": "CN=LAL Cloud Team,O=CNRS,C=FR"}
_GiB = 1024 ** 3


def _web(name: str, version: str, ext: str) -> str:
    return f"{_APPLIANCES}/base/{name}/{version}/{name}-{version}.img.{ext}"


# Each seed: fields of CatalogueEntry (plus new_entry's image_id/checksums), with
# "valid_days" (validity relative to now; negative = expired) instead of "valid".
_SEEDS: Sequence[Dict] = (
    # ttylinux with its real StratusLab identifier; no SFTP server in that image.
    dict(image_id="BN1EEkPiBx87_uLj2-sdybSI-Xb", title="ttylinux-9.7-i486-base",
         description="A 32-bit ttylinux base image (busybox, dropbear SSH, no SFTP).",
         os="ttylinux", os_version="9.7", arch="i486", version="1.2", format="raw",
         disks_bus="ide", tag="ttylinux", bytes=41943040, inbound_ports=(22,),
         has_sftp=False, created="2013-06-18T09:15:44Z", image_created="2013-06-17T16:02:10Z",
         valid_days=365, locations=(_web("ttylinux-9.7-i486-base", "1.2", "gz"),),
         **_APPLIANCE_TEAM),
    # The older real ttylinux identifier: expired, not deprecated.
    dict(image_id="GOaxJFdoEXvqAm9ArJgnZ0_ky6F", title="ttylinux-9.7-i486-base",
         description="A 32-bit ttylinux base image (first release).",
         os="ttylinux", os_version="9.7", arch="i486", version="1.0", format="raw",
         disks_bus="ide", bytes=41943040, inbound_ports=(22,), has_sftp=False,
         created="2012-02-10T11:20:31Z", valid_days=-400,
         locations=(_web("ttylinux-9.7-i486-base", "1.0", "gz"),), **_APPLIANCE_TEAM),
    # The image of the real fixtures, endorsed twice by the same person: the older
    # endorsement deprecated it, the newer one (two locations) is the one listed.
    dict(checksums=_FIXTURE_CHECKSUMS, bytes=128, title="ttylinux-9.3-i686",
         description="", os="ttylinux", os_version="9.3", arch="i686", version="1.0",
         format="raw", disks_bus="ide", compression="", has_sftp=False,
         created="2014-03-08T14:10:17Z", image_created="2011-09-09T14:12:57Z",
         valid_days=180, deprecated="This is a test of deprecation", **_JANE),
    dict(checksums=_FIXTURE_CHECKSUMS, bytes=128, title="ttylinux-9.3-i686",
         description="", os="ttylinux", os_version="9.3", arch="i686", version="1.0",
         format="raw", disks_bus="ide", compression="", has_sftp=False,
         created="2014-03-08T14:28:15Z", image_created="2011-09-09T14:12:57Z",
         valid_days=180,
         locations=("http://www.example.org/1234", "http://www.example2.org/5678"), **_JANE),
    # Ubuntu with its real identifier (used in the StratusLab demos), endorsed twice.
    dict(image_id="GJ5vp8gIxhZ1w1MQF16R6MIcNoq", title="ubuntu-12.04-x86_64-base",
         description="Ubuntu 12.04 LTS base image.", os="Ubuntu", os_version="12.04",
         arch="x86_64", version="1.2", format="qcow2", disks_bus="virtio",
         tag="ubuntu-12.04", bytes=2 * _GiB, inbound_ports=(22,),
         created="2013-05-02T10:11:12Z", valid_days=90,
         locations=(_web("ubuntu-12.04-x86_64-base", "1.2", "gz"),), **_APPLIANCE_TEAM),
    dict(image_id="GJ5vp8gIxhZ1w1MQF16R6MIcNoq", title="ubuntu-12.04-x86_64-base",
         description="Ubuntu 12.04 LTS base image with cloud-init and security updates.",
         os="Ubuntu", os_version="12.04", arch="x86_64", version="1.3", format="qcow2",
         disks_bus="virtio", tag="ubuntu-12.04", bytes=2 * _GiB, inbound_ports=(22, 80, 443),
         created="2014-02-20T08:30:00Z", image_created="2013-05-01T18:40:00Z", valid_days=365,
         locations=(_web("ubuntu-12.04-x86_64-base", "1.3", "gz"),), **_APPLIANCE_TEAM),
    dict(title="ubuntu-14.04-x86_64-base", description="Ubuntu 14.04 LTS base image.",
         os="Ubuntu", os_version="14.04", arch="x86_64", version="1.0", format="qcow2",
         disks_bus="virtio", tag="ubuntu-14.04", bytes=2 * _GiB, inbound_ports=(22,),
         created="2014-05-15T13:05:09Z", valid_days=540,
         locations=(_web("ubuntu-14.04-x86_64-base", "1.0", "gz"),), **_APPLIANCE_TEAM),
    # CentOS endorsed by two different people: both entries are listed.
    dict(title="centos-6.5-x86_64-base", description="CentOS 6.5 minimal base image.",
         os="CentOS", os_version="6.5", arch="x86_64", version="1.1", format="raw",
         disks_bus="virtio", tag="centos-6.5", bytes=3 * _GiB, inbound_ports=(22,),
         created="2014-01-10T07:45:00Z", valid_days=300,
         locations=(_web("centos-6.5-x86_64-base", "1.1", "gz"),), **_APPLIANCE_TEAM),
    dict(title="centos-6.5-x86_64-base", description="CentOS 6.5 minimal base image.",
         os="CentOS", os_version="6.5", arch="x86_64", version="1.1", format="raw",
         disks_bus="virtio", tag="centos-6.5", bytes=3 * _GiB, inbound_ports=(22,),
         created="2014-02-01T16:00:00Z", image_created="2014-01-10T07:45:00Z", valid_days=200,
         locations=(_web("centos-6.5-x86_64-base", "1.1", "gz"),), **_LAL),
    # Available from the web and from a site's pdisk.
    dict(title="debian-7.4-x86_64-base", description="Debian 7.4 (wheezy) base image.",
         os="Debian", os_version="7.4", arch="x86_64", version="1.0", format="raw",
         disks_bus="virtio", tag="debian-7", bytes=2 * _GiB, inbound_ports=(22,),
         created="2014-03-20T10:00:00Z", valid_days=400,
         locations=(_web("debian-7.4-x86_64-base", "1.0", "bz2"),
                    "pdisk:cloud.lal.example.org:8445:5b7bd1b6-6ac5-4fd4-9b8b-58ff0a0d3b4d"),
         compression="bz2", **_LAL),
    # Only in a site's pdisk (location=pdisk), a grid worker node appliance.
    dict(title="sl-6.4-x86_64-grid-wn", description="Scientific Linux 6.4 EMI grid worker node.",
         os="SL", os_version="6.4", arch="x86_64", version="2.0", format="qcow2",
         disks_bus="virtio", image_type="grid", bytes=6 * _GiB, inbound_ports=(22, 2811),
         created="2014-04-02T09:30:00Z", valid_days=250, compression="",
         locations=("pdisk:cloud.lal.example.org:8445:0d1f6c4e-1d2e-4a39-8c5e-6f3e2a9b7c10",),
         **_LAL),
    dict(title="fedora-20-x86_64-base", description="Fedora 20 base image.",
         os="Fedora", os_version="20", arch="x86_64", version="1.0", format="qcow2",
         disks_bus="virtio", bytes=2 * _GiB, inbound_ports=(22,),
         created="2014-01-05T12:00:00Z", valid_days=-60,
         locations=(_web("fedora-20-x86_64-base", "1.0", "gz"),), **_APPLIANCE_TEAM),
    dict(title="sl-6.4-x86_64-base", description="Scientific Linux 6.4 base image.",
         os="SL", os_version="6.4", arch="x86_64", version="1.0", format="qcow2",
         disks_bus="ide", bytes=3 * _GiB, inbound_ports=(22,),
         created="2013-04-11T15:20:00Z", valid_days=120,
         deprecated="Superseded by sl-6.5-x86_64-base.",
         locations=(_web("sl-6.4-x86_64-base", "1.0", "gz"),), **_APPLIANCE_TEAM),
    dict(title="sl-6.5-x86_64-base", description="Scientific Linux 6.5 base image.",
         os="SL", os_version="6.5", arch="x86_64", version="1.0", format="qcow2",
         disks_bus="virtio", tag="sl-6.5", bytes=3 * _GiB, inbound_ports=(22, 8080),
         created="2014-02-28T11:11:11Z", valid_days=330,
         locations=(_web("sl-6.5-x86_64-base", "1.0", "gz"),), **_APPLIANCE_TEAM),
)


def _seed_entries(now: datetime) -> List[CatalogueEntry]:
    entries = []
    for seed in _SEEDS:
        fields = dict(seed)
        fields["valid"] = now + timedelta(days=fields.pop("valid_days"))
        for name in ("created", "image_created"):
            if name in fields:
                fields[name] = parse_time(fields[name])
        checksums = fields.pop("checksums", None)
        if checksums is not None:
            entries.append(CatalogueEntry(image_id=image_id_from_sha1(checksums["SHA-1"]),
                                          checksums=checksums, **fields))
        else:
            entries.append(new_entry(**fields))
    return entries
