"""The local cloud's own certificate authority.

Clients must verify TLS for real (a driver that only works with verification off is not
ready for a real site), so the cloud issues: a CA, a server certificate valid for
``127.0.0.1`` and ``localhost`` (IP and DNS subject alternative names: Python 2.7's
``ssl.match_hostname`` ignores IP SANs, so the 14.06 client needs the DNS name), and
client certificates (CN = user name) for the ``/cert/`` routes. Everything is kept in a
directory and reused when present, so a restarted cloud keeps its identity.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from typing import TYPE_CHECKING, Iterable, Optional, Sequence, Set, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .statedir import private_dir, write_private

if TYPE_CHECKING:  # cryptography >= 40 names these unions; older releases work at run time
    from cryptography.hazmat.primitives.asymmetric.types import (CertificatePublicKeyTypes,
                                                                 PrivateKeyTypes, PublicKeyTypes)

__all__ = ["CertificateAuthority"]

_VALIDITY = datetime.timedelta(days=3650)
# Keys a CA found on disk may have: those that sign certificates with SHA-256 (Ed25519
# and Ed448 sign without a separate hash, X25519 and others do not sign at all).
_SHA256_SIGNING_KEYS = (rsa.RSAPrivateKey, dsa.DSAPrivateKey, ec.EllipticCurvePrivateKey)
_CASigningKey = Union[rsa.RSAPrivateKey, dsa.DSAPrivateKey, ec.EllipticCurvePrivateKey]


def _key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "StratusLab Local Cloud"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


class CertificateAuthority:
    """CA material in ``directory``: ``ca.pem``, ``ca-key.pem``, ``server.pem``,
    ``server-key.pem`` and ``users/<name>.pem`` + ``users/<name>-key.pem``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        private_dir(directory)
        self.ca_path = os.path.join(directory, "ca.pem")
        self.ca_key_path = os.path.join(directory, "ca-key.pem")
        self.server_cert_path = os.path.join(directory, "server.pem")
        self.server_key_path = os.path.join(directory, "server-key.pem")
        self._ca_cert, self._ca_key = self._load_or_create_ca()

    # -- CA ------------------------------------------------------------------------------

    def _load_or_create_ca(self) -> Tuple[x509.Certificate, _CASigningKey]:
        loaded = self._load_pair(self.ca_path, self.ca_key_path)
        if loaded is not None and isinstance(loaded[1], _SHA256_SIGNING_KEYS):
            return loaded[0], loaded[1]
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name("StratusLab Local Cloud CA")
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + _VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                             False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        write_private(self.ca_key_path, _key_pem(key))
        write_private(self.ca_path, cert.public_bytes(serialization.Encoding.PEM))
        # A new CA invalidates every certificate issued by an earlier one.
        for stale in (self.server_cert_path, self.server_key_path):
            if os.path.exists(stale):
                os.unlink(stale)
        return cert, key

    @staticmethod
    def _load_pair(cert_path: str, key_path: str) -> Optional[Tuple[x509.Certificate, PrivateKeyTypes]]:
        """The certificate and its private key, or None when either is missing, unreadable
        or they do not belong together."""
        try:
            with open(cert_path, "rb") as handle:
                cert = x509.load_pem_x509_certificate(handle.read())
            with open(key_path, "rb") as handle:
                key = serialization.load_pem_private_key(handle.read(), password=None)
        except (OSError, ValueError, TypeError):
            return None
        if _public_der(cert.public_key()) != _public_der(key.public_key()):
            return None
        return cert, key

    def _issue(self, common_name: str, server: bool, cert_path: str, key_path: str,
               addresses: Sequence[str] = ()) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(common_name))
                   .issuer_name(self._ca_cert.subject)
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + _VALIDITY)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self._ca_key.public_key()), critical=False))
        if server:
            names = [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", *addresses)]
            builder = builder.add_extension(x509.SubjectAlternativeName(
                names + [x509.DNSName("localhost")]), critical=False).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        write_private(key_path, _key_pem(key))
        write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))

    # -- public API ------------------------------------------------------------------------

    def server_pair(self, addresses: Iterable[str] = ()) -> Tuple[str, str]:
        """(certificate path, key path) of the server certificate for ``127.0.0.1``,
        ``localhost`` and ``addresses``, issued when missing or not naming them all."""
        wanted = sorted({str(ipaddress.ip_address(a)) for a in addresses} - {"127.0.0.1"})
        pair = self._load_pair(self.server_cert_path, self.server_key_path)
        if pair is None or not set(wanted) <= _ip_names(pair[0]):
            self._issue("localhost", True, self.server_cert_path, self.server_key_path, wanted)
        return self.server_cert_path, self.server_key_path

    def client_pair(self, user: str) -> Tuple[str, str]:
        """(certificate path, key path) for ``user`` (CN = user name), issued when missing."""
        users_dir = os.path.join(self.directory, "users")
        private_dir(users_dir)
        stem = user if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", user) and not user.startswith(".") \
            else "u-" + user.encode("utf-8").hex()[:120]
        cert_path = os.path.join(users_dir, stem + ".pem")
        key_path = os.path.join(users_dir, stem + "-key.pem")
        pair = self._load_pair(cert_path, key_path)
        if pair is None or common_name(pair[0]) != user:
            self._issue(user, False, cert_path, key_path)
        return cert_path, key_path

    def ca_pem(self) -> bytes:
        """The CA certificate in PEM form (what clients trust)."""
        return self._ca_cert.public_bytes(serialization.Encoding.PEM)


def _public_der(key: Union[PublicKeyTypes, CertificatePublicKeyTypes]) -> bytes:
    # Every key type serialises to SubjectPublicKeyInfo; not every one has public numbers.
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _ip_names(cert: x509.Certificate) -> Set[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(a) for a in names.get_values_for_type(x509.IPAddress)}


def common_name(cert: x509.Certificate) -> Optional[str]:
    """The subject CN of a certificate, or None."""
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None
