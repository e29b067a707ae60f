"""Key loading for deploy_node: every type and format, as files and as text, on this paramiko."""

from __future__ import annotations

import os
import shutil
import subprocess

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec

from stratuslab_lc_plugin.ssh.keys import (
    SSHKeyError,
    is_key_material,
    load_private_key,
    load_private_keys,
    private_key_path,
)

# tests/ is on sys.path (setup.cfg: [tool:pytest] pythonpath = tests).
from keys import KEY_VARIANTS, key_factory  # noqa: F401 (pytest fixture)


def public_part(line: str) -> str:
    return " ".join(line.split()[:2])


@pytest.mark.parametrize("kind,fmt", KEY_VARIANTS)
@pytest.mark.parametrize("password", [None, "pass phrase"])
def test_every_variant_loads_from_file_and_text(key_factory, kind, fmt, password):
    key = key_factory(kind, fmt, password)
    from_file = load_private_key(key.private_path, password)
    from_text = load_private_key(key.private_text, password)
    assert from_file.public_line == from_text.public_line == public_part(key.public_line)
    assert from_file.source == "key file %s" % key.private_path
    assert from_text.source == "key given as text"
    # The key must sign for real, not only parse.
    signature = from_file.pkey.sign_ssh_data(b"data")
    public = type(from_file.pkey)(data=from_file.pkey.asbytes())
    assert public.verify_ssh_sig(b"data", paramiko.Message(signature.asbytes()))


def test_public_key_path_means_its_private_key(key_factory):
    key = key_factory("ed25519")
    assert load_private_key(key.public_path).public_line == public_part(key.public_line)


def test_only_a_literal_pub_suffix_is_removed():
    assert private_key_path("/k/bob_key.pub") == "/k/bob_key"
    assert private_key_path("/k/pub.key") == "/k/pub.key"
    assert private_key_path("~/x.pub") == os.path.expanduser("~/x")


@pytest.mark.parametrize("fmt", ["openssh", "pem", "pkcs8"])
def test_encrypted_key_errors_name_the_file_and_never_the_material(key_factory, fmt):
    key = key_factory("rsa", fmt, "right")
    with pytest.raises(SSHKeyError) as missing:
        load_private_key(key.private_path)
    assert "is encrypted" in str(missing.value) and key.private_path in str(missing.value)
    with pytest.raises(SSHKeyError) as wrong:
        load_private_key(key.private_path, "wrong")
    assert "wrong ssh_key_password" in str(wrong.value)
    with pytest.raises(SSHKeyError) as text:
        load_private_key(key.private_text, "wrong")
    message = str(text.value)
    assert "key given as text" in message
    body_line = key.private_text.splitlines()[2]
    assert body_line not in message


def test_password_for_a_clear_key_is_ignored(key_factory):
    key = key_factory("ecdsa", "pem")
    assert load_private_key(key.private_path, "unused").key_type == "ecdsa-sha2-nistp256"


def test_missing_unreadable_public_and_garbage_files(tmp_path, key_factory):
    with pytest.raises(SSHKeyError, match="does not exist") as missing:
        load_private_key(str(tmp_path / "nope"))
    assert missing.value.path == str(tmp_path / "nope")
    public = tmp_path / "only_public"
    public.write_text(key_factory("ed25519").public_line)
    with pytest.raises(SSHKeyError, match="holds a public key"):
        load_private_key(str(public))
    garbage = tmp_path / "garbage"
    garbage.write_text("hello\n")
    with pytest.raises(SSHKeyError, match="not a private key"):
        load_private_key(str(garbage))
    broken = tmp_path / "broken"
    broken.write_text("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(SSHKeyError, match="not a readable private key"):
        load_private_key(str(broken))


def test_unsupported_curves_and_dsa_are_explained(tmp_path):
    p224 = ec.generate_private_key(ec.SECP224R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(SSHKeyError, match="curve"):
        load_private_key(p224)
    dsa_pem = dsa.generate_private_key(key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()).decode()
    if hasattr(paramiko, "DSSKey"):  # paramiko 3: DSA still works
        assert load_private_key(dsa_pem).key_type == "ssh-dss"
    else:
        with pytest.raises(SSHKeyError, match="DSA"):
            load_private_key(dsa_pem)


def test_indented_text_and_lists(key_factory):
    key = key_factory("ed25519")
    indented = "\n".join("    " + line for line in key.private_text.splitlines())
    assert is_key_material(indented)
    assert not is_key_material(key.private_path)
    keys = load_private_keys([key.private_path, indented])
    assert keys[0].public_line == keys[1].public_line


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="ssh-keygen (openssh-client) is not installed")
@pytest.mark.parametrize("kind,options", [
    ("ed25519", []), ("rsa", ["-b", "2048", "-m", "PEM"]), ("ecdsa", ["-m", "PKCS8"]),
])
def test_keys_made_by_ssh_keygen(tmp_path, kind, options):
    path = str(tmp_path / ("id_" + kind))
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "secret", "-f", path] + options, check=True)
    loaded = load_private_key(path, "secret")
    with open(path + ".pub") as handle:
        assert loaded.public_line == public_part(handle.read())
