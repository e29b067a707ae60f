"""Private SSH keys for ``deploy_node``, loaded the same way on paramiko 3.x and 4.x/5.x.

Why this module exists: Libcloud's own key loader
(``ParamikoSSHClient._get_pkey_object``) names ``paramiko.DSSKey``, which paramiko 4 removed,
so every key given as text fails there on paramiko >= 4; and paramiko >= 4 cannot read PKCS#8
files (``BEGIN PRIVATE KEY``) at all. Here ``cryptography`` parses the usual formats (OpenSSH,
PEM PKCS#1 / SEC1, PKCS#8; encrypted or not) and the result becomes an in-memory paramiko
``PKey`` that the deployment SSH client uses directly. Libcloud is not patched, no key is
written to disk, and error messages name the key's file (or "key given as text"), type and
fingerprint, never its material.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Union

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from stratuslab_lc_plugin.errors import SSHKeyError

__all__ = [
    "LoadedKey",
    "SSHKeyError",
    "is_key_material",
    "private_key_path",
    "load_private_key",
    "load_private_keys",
]

KeySource = Union[str, bytes, "os.PathLike[str]"]

# Curves that both OpenSSH and paramiko's ECDSAKey know.
_SSH_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


@dataclass(frozen=True)
class LoadedKey:
    """A private key ready for paramiko, and how to name it in messages."""

    pkey: paramiko.PKey
    source: str  # "key file /path" or "key given as text"

    @property
    def key_type(self) -> str:
        return self.pkey.get_name()

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.pkey.asbytes()).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")

    @property
    def public_line(self) -> str:
        """The OpenSSH public key line, as it goes into ``authorized_keys`` or CONTEXT."""
        return "%s %s" % (self.pkey.get_name(), self.pkey.get_base64())

    def describe(self) -> str:
        return "%s (%s %s)" % (self.source, self.key_type, self.fingerprint)


def is_key_material(value: KeySource) -> bool:
    """True when ``value`` is the text of a key rather than a path to one.

    Libcloud's ``ssh_key`` argument means a path, but key text is what people paste from
    secret stores; a PEM/OpenSSH armour line cannot be part of a sane file name.
    """
    if isinstance(value, bytes):
        return b"-----BEGIN " in value
    return isinstance(value, str) and "-----BEGIN " in value


def private_key_path(path: str) -> str:
    """The private key file for ``path``, which may name the public half (``*.pub``).

    Only a literal ``.pub`` suffix is removed: the 14.06 driver stripped the characters
    ``.``, ``p``, ``u``, ``b`` from both ends, which mangled names like ``bob_key.pub``.
    """
    path = os.path.expanduser(path)
    if path.endswith(".pub"):
        return path[: -len(".pub")]
    return path


def load_private_keys(
    values: Union[KeySource, Sequence[KeySource]], password: Optional[str] = None
) -> List[LoadedKey]:
    """Load one key or a list of keys (Libcloud's ``ssh_key`` accepts both)."""
    if isinstance(values, (str, bytes, os.PathLike)):
        values = [values]
    return [load_private_key(value, password) for value in values]


def load_private_key(value: KeySource, password: Optional[str] = None) -> LoadedKey:
    """Load a private key from a file path or from key text.

    ``password`` decrypts an encrypted key; it is ignored for a key that is not encrypted,
    because Libcloud callers pass ``ssh_key_password`` without knowing which key is used.
    Raises :class:`SSHKeyError`.
    """
    if is_key_material(value):
        data = value if isinstance(value, bytes) else value.encode("utf-8")  # type: ignore[union-attr]
        return _load(data, password, "key given as text", None)
    path = private_key_path(os.fspath(value))  # type: ignore[arg-type]
    source = "key file %s" % path
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise SSHKeyError("SSH private key file %s does not exist" % path, path=path) from None
    except OSError as exc:
        raise SSHKeyError(
            "SSH private key file %s cannot be read: %s" % (path, exc.strerror or exc), path=path
        ) from None
    return _load(data, password, source, path)


def _load(data: bytes, password: Optional[str], source: str, path: Optional[str]) -> LoadedKey:
    data = _normalise(data)
    if data.split(None, 1)[:1] and data.split(None, 1)[0].startswith((b"ssh-", b"ecdsa-")):
        raise SSHKeyError(
            "%s holds a public key; deploy_node needs the private key" % source, path=path
        )
    key = _parse(data, password, source, path)
    return LoadedKey(pkey=_to_paramiko(key, source, path), source=source)


def _normalise(data: bytes) -> bytes:
    # Keys pasted into YAML or environment variables often carry indentation or CRLF;
    # neither PEM nor the OpenSSH armour cares about line layout, so strip each line.
    lines = [line.strip() for line in data.strip().splitlines()]
    return b"\n".join(lines) + b"\n"


def _parse(data: bytes, password: Optional[str], source: str, path: Optional[str]):
    secret = password.encode("utf-8") if password is not None else None
    loader: Any
    if b"BEGIN OPENSSH PRIVATE KEY" in data:
        loader = serialization.load_ssh_private_key
    elif b"-----BEGIN" in data:
        loader = serialization.load_pem_private_key
    else:
        raise SSHKeyError(
            "%s is not a private key in OpenSSH or PEM format" % source, path=path
        )
    try:
        try:
            return loader(data, secret)
        except TypeError:
            # cryptography raises TypeError for a password mismatch in either direction.
            if secret is None:
                raise SSHKeyError(
                    "%s is encrypted: give its passphrase as ssh_key_password" % source, path=path
                ) from None
            return loader(data, None)
    except SSHKeyError:
        raise
    except TypeError:
        raise SSHKeyError(
            "%s is encrypted: give its passphrase as ssh_key_password" % source, path=path
        ) from None
    except UnsupportedAlgorithm as exc:
        raise SSHKeyError("%s uses an unsupported algorithm: %s" % (source, exc), path=path) from None
    except ValueError as exc:
        if secret is not None and _looks_encrypted(data):
            raise SSHKeyError(
                "%s could not be decrypted: wrong ssh_key_password" % source, path=path
            ) from None
        raise SSHKeyError(
            "%s is not a readable private key (%s); supported: RSA, ECDSA and Ed25519 keys "
            "in OpenSSH, PEM (PKCS#1/SEC1) or PKCS#8 format" % (source, exc),
            path=path,
        ) from None


def _looks_encrypted(data: bytes) -> bool:
    if b"ENCRYPTED" in data:  # PKCS#8 "ENCRYPTED PRIVATE KEY" and legacy "Proc-Type: 4,ENCRYPTED"
        return True
    if b"BEGIN OPENSSH PRIVATE KEY" in data:
        body = b"".join(data.splitlines()[1:-1])
        try:
            raw = base64.b64decode(body)
        except ValueError:
            return False
        # openssh-key-v1\0, then the cipher name as an SSH string: "none" when clear.
        return b"\x00\x00\x00\x04none" not in raw[:40]
    return False


def _to_paramiko(key, source: str, path: Optional[str]) -> paramiko.PKey:
    if isinstance(key, rsa.RSAPrivateKey):
        return paramiko.RSAKey(key=key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, _SSH_CURVES):
            raise SSHKeyError(
                "%s uses the elliptic curve %s; SSH supports P-256, P-384 and P-521"
                % (source, key.curve.name),
                path=path,
            )
        return paramiko.ECDSAKey(vals=(key, key.public_key()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        # Ed25519Key has no constructor taking a key object on every paramiko version,
        # but all of them read the OpenSSH format from a file object.
        return paramiko.Ed25519Key(file_obj=io.StringIO(_openssh_text(key)))
    if isinstance(key, dsa.DSAPrivateKey):
        dss = getattr(paramiko, "DSSKey", None)
        if dss is None:
            raise SSHKeyError(
                "%s is a DSA key; paramiko %s (like current OpenSSH) no longer supports DSA: "
                "use an Ed25519, ECDSA or RSA key" % (source, paramiko.__version__),
                path=path,
            )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode("ascii")
        return dss(file_obj=io.StringIO(pem))
    raise SSHKeyError(
        "%s is a %s key; SSH deployment supports RSA, ECDSA and Ed25519 keys"
        % (source, type(key).__name__),
        path=path,
    )


def _openssh_text(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
