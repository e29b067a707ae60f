"""SSH key pairs kept on this machine, for Libcloud's key-pair API.

StratusLab keeps no keys on the server: a VM gets the public key that ``create_node`` puts
in its context. Tools written for EC2 or OpenStack (ElastiCluster...) still manage key pairs
by name (``import_key_pair_from_file``, ``create_node(ex_keyname=...)``), so the driver
offers the same API over a directory of its own: ``<name>.pub`` holds the OpenSSH public
line, ``<name>`` the private key when the driver made the pair. The directory is created
0700 and every file 0600; a name is never overwritten, and only files of this store are
ever removed. Key files named by the configuration (``user_public_key_file``) are offered
too, read-only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = ["KEY_NAME", "KeyStore", "StoredKey", "fingerprint", "parse_public_line"]

#: Key pair names: what is safe as a file name and in a VM's context.
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_TYPES = ("ed25519", "rsa", "ecdsa")
_PUBLIC_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")


@dataclass(frozen=True)
class StoredKey:
    """One key pair: its name, OpenSSH public line and where it lives."""

    name: str
    public_key: str
    fingerprint: str
    public_path: str
    private_path: Optional[str]  # None when only the public half is known
    read_only: bool = False  # named by the configuration, not a file of the store


def parse_public_line(text: str) -> Tuple[str, bytes, str]:
    """``(type, key blob, comment)`` of an OpenSSH public key line; ValueError otherwise."""
    parts = text.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in _PUBLIC_TYPES:
        raise ValueError("not an OpenSSH public key line (expected e.g. 'ssh-ed25519 AAAA... comment')")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key's base64 part is damaged") from None
    length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4:4 + length].decode("ascii", "replace") != parts[0]:
        raise ValueError("the key's type (%s) does not match its data" % parts[0])
    return parts[0], blob, parts[2] if len(parts) > 2 else ""


def fingerprint(public_line: str) -> str:
    """The MD5 fingerprint (``aa:bb:...``), as EC2 and OpenStack give for imported keys."""
    _, blob, _ = parse_public_line(public_line)
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 - a fingerprint, not a security check
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


class KeyStore:
    """Key pairs in ``directory``, plus read-only ones from configured public key files."""

    def __init__(self, directory: str, configured: Iterable[str] = ()) -> None:
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self._configured = list(dict.fromkeys(configured))

    # -- reading ----------------------------------------------------------------------

    def list(self) -> List[StoredKey]:
        keys = {key.name: key for key in self._configured_keys()}
        try:
            names = sorted(entry[:-4] for entry in os.listdir(self.directory) if entry.endswith(".pub"))
        except FileNotFoundError:
            names = []
        for name in names:
            if KEY_NAME.fullmatch(name):
                stored = self._read(name)
                if stored is not None:
                    keys[name] = stored  # the store's own pair wins over a configured file
        return sorted(keys.values(), key=lambda key: key.name)

    def get(self, name: str) -> Optional[StoredKey]:
        """The key pair ``name``, or None."""
        self.check_name(name)
        return self._read(name) or next((key for key in self._configured_keys() if key.name == name), None)

    def get_configured(self, path: str) -> Optional[StoredKey]:
        """The read-only key pair of the configured key file ``path``, unless the store's own
        pair of the same name hides it (or the file cannot be read)."""
        key = next((key for key in self._configured_keys() if key.public_path == path), None)
        if key is None or self._read(key.name) is not None:
            return None
        return key

    # -- writing ----------------------------------------------------------------------

    def create(self, name: str, key_type: str = "ed25519") -> Tuple[StoredKey, str]:
        """Make a new key pair; returns it and its private key (OpenSSH format)."""
        self.check_name(name)
        if key_type not in _KEY_TYPES:
            raise ValueError("ex_key_type must be one of %s, not %r" % (", ".join(_KEY_TYPES), key_type))
        private = _generate(key_type)
        private_text = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode("ascii")
        public_line = "%s %s" % (
            private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode("ascii"), name,
        )
        private_path = self._path(name)
        self._write_new(private_path, private_text, name)  # the private file claims the name
        try:
            self._write_new(private_path + ".pub", public_line + "\n", name)
        except BaseException:
            os.unlink(private_path)  # ours, written just above
            raise
        return StoredKey(name, public_line, fingerprint(public_line), private_path + ".pub", private_path), private_text

    def import_public(self, name: str, public_line: str) -> StoredKey:
        """Keep the public key ``public_line`` under ``name``."""
        self.check_name(name)
        line = public_line.strip()
        if "\n" in line:
            raise ValueError("key_material must be one OpenSSH public key line")
        parse_public_line(line)
        self._write_new(self._path(name) + ".pub", line + "\n", name)
        return StoredKey(name, line, fingerprint(line), self._path(name) + ".pub", None)

    def delete(self, name: str) -> bool:
        """Remove the store's files of ``name``; False when it has none."""
        self.check_name(name)
        removed = False
        for path in (self._path(name), self._path(name) + ".pub"):
            try:
                os.unlink(path)
                removed = True
            except FileNotFoundError:
                pass
        return removed

    # -- the pieces -------------------------------------------------------------------

    @staticmethod
    def check_name(name: object) -> str:
        if not isinstance(name, str) or not KEY_NAME.fullmatch(name):
            raise ValueError(
                "%r is not a usable key pair name: 1 to 64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit" % (name,)
            )
        return name

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _read(self, name: str) -> Optional[StoredKey]:
        public_path = self._path(name) + ".pub"
        try:
            with open(public_path, encoding="utf-8") as handle:
                line = handle.read().strip()
            print_ = fingerprint(line)
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        private_path = self._path(name)
        return StoredKey(name, line, print_, public_path, private_path if os.path.exists(private_path) else None)

    def _configured_keys(self) -> List[StoredKey]:
        keys = []
        for path in self._configured:
            name = os.path.basename(path)
            name = name[: -len(".pub")] if name.endswith(".pub") else name
            try:
                with open(path, encoding="utf-8") as handle:
                    line = handle.read().strip().splitlines()[0]
                keys.append(StoredKey(name, line, fingerprint(line), path, _private_twin(path), read_only=True))
            except (OSError, ValueError, IndexError, UnicodeDecodeError):
                continue  # a missing or unreadable key file is simply not offered
        return [key for key in keys if KEY_NAME.fullmatch(key.name)]

    def _write_new(self, path: str, text: str, name: str) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            raise FileExistsError("key pair %r already exists in %s" % (name, self.directory)) from None
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)


def _private_twin(public_path: str) -> Optional[str]:
    private = public_path[: -len(".pub")] if public_path.endswith(".pub") else None
    return private if private and os.path.exists(private) else None


def _generate(key_type: str) -> Union[ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]:
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP256R1())
