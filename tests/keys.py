"""SSH key pairs for tests, in every type and file format deploy_node accepts.

Keys are generated with ``cryptography`` (no ``ssh-keygen`` needed) and written 0600 like real
key files. ``key_factory`` is a pytest fixture; import it into a test module to use it::

    from keys import key_factory  # noqa: F401 (pytest fixture; tests/ is on sys.path)

    def test_x(key_factory):
        key = key_factory("rsa", "pem", password="secret")
        key.private_path, key.public_line, key.private_text
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

KINDS = ("ed25519", "rsa", "ecdsa")
FORMATS = ("openssh", "pem", "pkcs8")

# Every (kind, format) pair that exists: Ed25519 has no "traditional" PEM form, its PEM is PKCS#8.
KEY_VARIANTS = [(kind, fmt) for kind in KINDS for fmt in FORMATS if (kind, fmt) != ("ed25519", "pem")]


@dataclass(frozen=True)
class GeneratedKey:
    kind: str
    fmt: str
    password: Optional[str]
    private_path: str
    public_path: str
    private_text: str
    public_line: str


def generate_private_key(kind: str):
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError("unknown key kind %r" % kind)


def private_key_text(key, fmt: str, password: Optional[str] = None) -> str:
    formats = {
        "openssh": serialization.PrivateFormat.OpenSSH,
        "pem": serialization.PrivateFormat.TraditionalOpenSSL,
        "pkcs8": serialization.PrivateFormat.PKCS8,
    }
    if isinstance(key, ed25519.Ed25519PrivateKey) and fmt == "pem":
        fmt = "pkcs8"
    if not password:
        encryption = serialization.NoEncryption()
    elif fmt == "openssh" and hasattr(serialization.PrivateFormat.OpenSSH, "encryption_builder"):
        # bcrypt with few rounds: the default 16 costs about half a second per load.
        encryption = serialization.PrivateFormat.OpenSSH.encryption_builder().kdf_rounds(2).build(
            password.encode()
        )
    else:
        encryption = serialization.BestAvailableEncryption(password.encode())
    return key.private_bytes(serialization.Encoding.PEM, formats[fmt], encryption).decode("ascii")


def public_key_line(key, comment: str = "test@stratuslab-lc") -> str:
    raw = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return "%s %s" % (raw.decode("ascii"), comment)


def write_key_pair(
    directory: str, kind: str, fmt: str = "openssh", password: Optional[str] = None, name: Optional[str] = None
) -> GeneratedKey:
    key = generate_private_key(kind)
    name = name or "id_%s_%s%s" % (kind, fmt, "_enc" if password else "")
    private_path = os.path.join(directory, name)
    private_text = private_key_text(key, fmt, password)
    public_line = public_key_line(key)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(private_text)
    with open(private_path + ".pub", "w") as handle:
        handle.write(public_line + "\n")
    return GeneratedKey(kind, fmt, password, private_path, private_path + ".pub", private_text, public_line)


@pytest.fixture(scope="session")
def key_factory(tmp_path_factory) -> Callable[..., GeneratedKey]:
    """``key_factory(kind, fmt="openssh", password=None, name=None)`` -> :class:`GeneratedKey`.

    Cached per session by its arguments (RSA generation is the slow part), so tests that
    ask for the same key get the same files.
    """
    directory = str(tmp_path_factory.mktemp("sshkeys"))
    cache: Dict[Tuple, GeneratedKey] = {}

    def make(kind: str, fmt: str = "openssh", password: Optional[str] = None, name: Optional[str] = None):
        spec = (kind, fmt, password, name)
        if spec not in cache:
            cache[spec] = write_key_pair(directory, kind, fmt, password, name)
        return cache[spec]

    return make
