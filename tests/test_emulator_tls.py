"""The local cloud's certificate authority with key material it finds on disk: what it can
sign with is reused, anything else is replaced rather than crashing the cloud's start."""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from stratuslab_lc_plugin.emulator.tls import CertificateAuthority


def write_self_signed_ca(directory: str, key, algorithm) -> bytes:
    """A CA pair as ``ca.pem`` / ``ca-key.pem``; returns the certificate's PEM."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some other CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, algorithm))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    for file_name, data in (("ca.pem", cert_pem), ("ca-key.pem", key_pem)):
        path = os.path.join(directory, file_name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(data)
    return cert_pem


def issuer_of_server_cert(ca: CertificateAuthority) -> x509.Name:
    cert_path, _ = ca.server_pair()
    with open(cert_path, "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read()).issuer


def test_an_ed25519_ca_on_disk_is_replaced_by_one_that_signs(tmp_path):
    # Ed25519 keys have no public numbers and sign without SHA-256: such a CA can neither
    # be compared the way RSA and EC keys are nor issue the cloud's certificates.
    directory = str(tmp_path / "tls")
    foreign = write_self_signed_ca(directory, ed25519.Ed25519PrivateKey.generate(), None)

    ca = CertificateAuthority(directory)

    assert ca.ca_pem() != foreign
    with open(ca.ca_key_path, "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert issuer_of_server_cert(ca) == x509.load_pem_x509_certificate(ca.ca_pem()).subject


def test_an_rsa_ca_on_disk_is_kept(tmp_path):
    directory = str(tmp_path / "tls")
    foreign = write_self_signed_ca(directory, rsa.generate_private_key(65537, 2048),
                                   hashes.SHA256())

    ca = CertificateAuthority(directory)

    assert ca.ca_pem() == foreign
    assert issuer_of_server_cert(ca).rfc4514_string() == "CN=some other CA"


def test_a_ca_key_of_another_certificate_is_replaced(tmp_path):
    directory = str(tmp_path / "tls")
    write_self_signed_ca(directory, ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    with open(os.path.join(directory, "ca.pem"), "rb") as handle:
        first_cert = handle.read()
    write_self_signed_ca(str(tmp_path / "other"), ec.generate_private_key(ec.SECP256R1()),
                         hashes.SHA256())
    os.replace(str(tmp_path / "other" / "ca-key.pem"), os.path.join(directory, "ca-key.pem"))

    ca = CertificateAuthority(directory)

    assert ca.ca_pem() != first_cert
    assert issuer_of_server_cert(ca).rfc4514_string() != "CN=some other CA"
