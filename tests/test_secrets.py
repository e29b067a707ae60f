"""No secret in any message or log: passwords, Basic headers, session strings, key material.

A child process (this file run as a script) starts a local cloud whose users have unique
passwords holding ``%`` and ``:``, runs representative driver operations, and failing ones
(bad passwords, dead endpoints, injected faults, a broken configuration, the command
line), with ``LIBCLOUD_DEBUG`` pointed at a file and every logger at DEBUG into another.
It keeps the text of every error (message, repr, traceback) and warning. The test then
searches all of it, with the child's output, for each password in every form it could
take (plain, URL-quoted, ``%``-doubled, ``user:password``, Base64 as in a Basic header)
and for the lines of every private key involved.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import traceback
from urllib.parse import quote, quote_plus

import pytest

pytestmark = pytest.mark.timeout(180)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USERS = ("alice", "bob")


def _password(tag: str) -> str:
    return "%s%%pw:%s%%:%s" % (tag, secrets.token_urlsafe(9), secrets.token_hex(4))


def _needles(user: str, password: str) -> dict[str, str]:
    pair = "%s:%s" % (user, password)
    return {
        "password": password,
        "URL-quoted password": quote(password, safe=""),
        "form-quoted password": quote_plus(password),
        "%-doubled password": password.replace("%", "%%"),
        "user:password": pair,
        "Basic token": base64.b64encode(pair.encode()).decode(),
        "Base64 password": base64.b64encode(password.encode()).decode(),
    }


def _key_lines(path: str) -> list[str]:
    """The Base64 lines of a PEM or OpenSSH private key (its material, not its armour)."""
    with open(path, encoding="ascii") as handle:
        lines = [line.strip() for line in handle]
    return [line for line in lines if len(line) >= 16 and not line.startswith("-----")]


@pytest.fixture(scope="module")
def leak_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("secrets")
    passwords = {user: _password(user[0]) for user in USERS}
    passwords["wrong"] = _password("w")
    env = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        LIBCLOUD_DEBUG=str(work / "libcloud-debug.log"),
        STRATUSLAB_TEST_PASSWORDS=json.dumps(passwords),
    )
    env.pop("STRATUSLAB_USER_CONFIG", None)
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(work)],
        env=env, capture_output=True, text=True, timeout=170, cwd=str(work),
    )
    assert child.returncode == 0, child.stdout + child.stderr
    with open(work / "report.json", encoding="utf-8") as handle:
        report = json.load(handle)
    texts = {
        "stdout": child.stdout,
        "stderr": child.stderr,
        "LIBCLOUD_DEBUG file": (work / "libcloud-debug.log").read_text(encoding="utf-8", errors="replace"),
        "log records": (work / "records.log").read_text(encoding="utf-8", errors="replace"),
        "errors and warnings": "\n".join(report["errors"] + report["warnings"]),
    }
    return passwords, report, texts


def test_the_run_exercised_what_it_should(leak_run):
    _, report, texts = leak_run
    kinds = {error.split(":", 1)[0] for error in report["errors"]}
    expected = {"AuthenticationError", "ServiceUnavailableError", "ServiceError", "ProtocolError", "ConfigurationError"}
    assert expected <= kinds
    assert "UserWarning" in {w.split(":", 1)[0] for w in report["warnings"]}
    debug = texts["LIBCLOUD_DEBUG file"]
    # The debug log is on and holds requests, with the credentials header redacted.
    assert "curl" in debug and "one.vm.allocate" in debug and "/pdisk/pswd/disks" in debug
    assert "Authorization: <redacted>" in debug
    assert "stratuslab_lc_plugin.emulator" in texts["log records"] and "urllib3" in texts["log records"]
    assert report["operations"] >= 10 and report["key_files"]


def test_no_password_in_any_message_or_log(leak_run):
    passwords, report, texts = leak_run
    found = []
    for user, password in passwords.items():
        for form, needle in _needles(user if user in USERS else "alice", password).items():
            for where, text in texts.items():
                if needle in text:
                    found.append("%s's %s in %s" % (user, form, where))
    assert not found, found


def test_the_debug_connection_redacts_credentials_headers_and_proxy_passwords():
    from libcloud.utils.loggingconnection import LoggingConnection

    from stratuslab_lc_plugin.services.http import redacting

    connection = redacting(LoggingConnection)("127.0.0.1", 443)
    connection.http_proxy_used = True
    connection.proxy_scheme, connection.proxy_host, connection.proxy_port = "http", "proxy", 3128
    connection.proxy_username, connection.proxy_password = "pu", "proxy%secret"
    token = base64.b64encode(b"alice:pa%ss").decode()
    line = connection._log_curl("GET", "/x", None, {"Authorization": "Basic " + token, "Accept": "a/b"})
    assert token not in line and "proxy%secret" not in line
    assert "Authorization: <redacted>" in line and "Accept: a/b" in line
    assert redacting(redacting(LoggingConnection)) is redacting(LoggingConnection)


def test_no_key_material_in_any_message_or_log(leak_run):
    _, report, texts = leak_run
    found = []
    for path in report["key_files"]:
        for line in _key_lines(path):
            for where, text in texts.items():
                if line in text:
                    found.append("a line of %s in %s" % (os.path.basename(path), where))
    assert not found, found


def test_credential_errors_say_where_and_what_without_the_secret(tmp_path):
    from libcloud.common.types import InvalidCredsError
    from libcloud.compute.providers import get_driver

    from stratuslab_lc_plugin.emulator import LocalCloud
    from stratuslab_lc_plugin.errors import AccessDeniedError, AuthenticationError

    passwords = {user: _password(user[0]) for user in USERS}
    with LocalCloud(state_dir=str(tmp_path / "cloud"), users=passwords, delays=0.02, guests=False) as cloud:
        alice = get_driver("stratuslab")("default", stratuslab_user_config=cloud.config_path)
        node = alice.create_node(name="alices", size="t1.micro", image=alice.list_images()[0])
        text = open(cloud.config_path, encoding="utf-8").read()
        bob_config = tmp_path / "bob.cfg"
        bob_config.write_text(text.replace("username = alice", "username = bob").replace(passwords["alice"], passwords["bob"]))
        bob_config.chmod(0o600)
        bob = get_driver("stratuslab")("default", stratuslab_user_config=str(bob_config))
        with pytest.raises(AccessDeniedError) as denied:  # a valid user without rights: not bad credentials
            bob.ex_get_node(node.id)
        assert (denied.value.location, denied.value.operation) == ("local", "one.vm.info")
        wrong_config = tmp_path / "wrong.cfg"
        wrong_config.write_text(text.replace(passwords["alice"], passwords["bob"]))
        wrong_config.chmod(0o600)
        wrong = get_driver("stratuslab")("default", stratuslab_user_config=str(wrong_config))
        for call, operation in ((wrong.list_nodes, "one.vmpool.info"), (wrong.list_volumes, "list_volumes")):
            with pytest.raises(AuthenticationError) as refused:
                call()
            error = refused.value
            assert isinstance(error, InvalidCredsError)
            assert (error.location, error.operation, error.code) == ("local", operation, 401)
            assert str(error).startswith("local: ") and passwords["bob"] not in str(error) + repr(error)


# -- the child process ------------------------------------------------------------------------------


def _child(work: str) -> None:  # pragma: no cover - runs in the child process
    import contextlib
    import io
    import logging
    import time
    import warnings

    logging.basicConfig(
        filename=os.path.join(work, "records.log"), level=logging.DEBUG,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.captureWarnings(True)

    import libcloud  # noqa: F401 - reads LIBCLOUD_DEBUG
    from libcloud.compute.deployment import ScriptDeployment
    from libcloud.compute.providers import get_driver
    from libcloud.compute.types import NodeState

    import stratuslab_lc_plugin  # noqa: F401 - registers the driver
    from stratuslab_lc_plugin import cli
    from stratuslab_lc_plugin.emulator import LocalCloud

    passwords = json.loads(os.environ["STRATUSLAB_TEST_PASSWORDS"])
    errors: list[str] = []
    caught_warnings: list[str] = []
    operations = [0]

    def attempt(function, *args, **kwargs):
        operations[0] += 1
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                return function(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every error is collected
                text = (type(exc).__name__, exc, exc, traceback.format_exc(), exc.args)
                errors.append("%s: %s | %r | %s | %r" % text)
                return None
            finally:
                caught_warnings.extend("%s: %s" % (w.category.__name__, w.message) for w in seen)

    def config(name: str, body: str, mode: int = 0o600) -> str:
        path = os.path.join(work, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(body)
        os.chmod(path, mode)
        return path

    def wait_running(driver, node):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            fresh = driver.ex_get_node(node.id)
            if fresh.state == NodeState.RUNNING:
                return fresh
            time.sleep(0.05)
        raise AssertionError("node %s never ran" % node.id)

    users = {user: passwords[user] for user in USERS}
    with LocalCloud(state_dir=os.path.join(work, "cloud"), users=users, delays=0.02) as cloud:
        with open(cloud.config_path, encoding="utf-8") as handle:
            good = handle.read()
        section = good.split("[local]", 1)[1]
        client_cert, client_key = cloud.client_cert("alice")
        make = get_driver("stratuslab")

        def driver_for(path: str, **kwargs):
            kwargs.setdefault("timeout", 2.0)
            kwargs.setdefault("retry_delay", 0.01)
            return make("default", stratuslab_user_config=path, **kwargs)

        # -- what works -------------------------------------------------------------------
        alice = driver_for(cloud.config_path)
        image = attempt(lambda: next(i for i in alice.list_images() if "ubuntu" in i.name))
        node = attempt(alice.create_node, name="leak-check", size="t1.micro", image=image, ex_client_token="leak-1")
        node = attempt(wait_running, alice, node)
        volume = attempt(alice.create_volume, 1, "leak-check")
        attempt(alice.attach_volume, node, volume)
        attempt(alice.list_volumes)
        attempt(alice.list_nodes)
        attempt(alice.detach_volume, volume)
        attempt(alice.destroy_volume, volume)
        attempt(
            alice.deploy_node, name="leak-deploy", size="t1.micro", image=image,
            deploy=ScriptDeployment("#!/bin/sh\necho deployed\n"), ssh_key=cloud.private_key_path,
            wait_period=0.1, timeout=60,
        )
        for each in attempt(alice.list_nodes) or []:
            attempt(alice.destroy_node, each)
        cert_section = section.replace("password =", "pem_password =").replace("username =", "pem_username =")
        cert = config(
            "cert.cfg",
            "[default]\nselected_section = local\n[local]\n%spem_certificate = %s\npem_key = %s\n"
            % (cert_section, client_cert, client_key),
        )
        attempt(lambda: driver_for(cert).list_nodes())
        attempt(lambda: driver_for(cert).list_volumes())

        # -- what fails -------------------------------------------------------------------
        wrong = config("wrong.cfg", good.replace(passwords["alice"], passwords["wrong"]))
        attempt(lambda: driver_for(wrong).list_nodes())
        attempt(lambda: driver_for(wrong).list_volumes())
        attempt(lambda: driver_for(wrong).create_node(name="x", size="t1.micro", image=image))
        swapped = config("swapped.cfg", good.replace(passwords["alice"], passwords["bob"]))
        attempt(lambda: driver_for(swapped).create_volume(1, "x"))
        pdisk_wrong = config("pdisk.cfg", good.rstrip("\n") + "\npdisk_password = %s\n" % passwords["wrong"])
        attempt(lambda: driver_for(pdisk_wrong).list_volumes())
        dead = config("dead.cfg", good.replace(cloud.url, "https://127.0.0.1:1"))
        attempt(lambda: driver_for(dead, timeout=0.5).list_nodes())
        attempt(lambda: driver_for(dead, timeout=0.5).create_volume(1, "x"))
        exposed = config("exposed.cfg", good, mode=0o644)
        attempt(lambda: driver_for(exposed).list_locations())
        broken = config("broken.cfg", good.replace("password = ", "password ", 1))
        attempt(lambda: driver_for(broken))
        unsectioned = config("unsectioned.cfg", "password = %s\n" % passwords["alice"] + good)
        attempt(lambda: driver_for(unsectioned))
        for fault, call in (
            ("one.vmpool.info=http-503", lambda: alice.list_nodes()),
            ("one.vm.allocate=one-error:1", lambda: alice.create_node(name="x", size="t1.micro", image=image)),
            ("one.vm.allocate=drop-before", lambda: alice.create_node(name="x", size="t1.micro", image=image)),
            ("marketplace=malformed:1", lambda: alice.list_images()),
            ("POST /disks=drop-after:1", lambda: alice.destroy_volume(alice.create_volume(1, "lost"))),
            ("GET /disks=http-500:1", lambda: alice.list_volumes()),
        ):
            cloud.faults.clear()
            cloud.faults.add(fault)
            attempt(call)
        cloud.faults.clear()

        # -- the command line ---------------------------------------------------------------
        for argv in (["nodes", "--config", cloud.config_path], ["volumes", "--config", wrong],
                     ["images", "--config", dead], ["nodes", "--config", broken]):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                attempt(cli.main, argv)
            errors.append("cli %s: %s %s" % (argv[0], out.getvalue(), err.getvalue()))
        key_files = [cloud.private_key_path, client_key, cloud.ca.server_pair()[1]]

    with open(os.path.join(work, "report.json"), "w", encoding="utf-8") as handle:
        report = {"errors": errors, "warnings": caught_warnings, "operations": operations[0], "key_files": key_files}
        json.dump(report, handle)


if __name__ == "__main__":  # pragma: no cover
    _child(sys.argv[1])
