"""deploy_node's SSH path against a real OpenSSH server (Debian's ``openssh-server``).

Each test starts its own ``sshd`` on 127.0.0.1 and a free port, with a fresh host key and an
``authorized_keys`` holding only the test's key, then runs the code deploy_node uses. Files
and scripts go to absolute paths under the test's temporary directory, because the login is
a real user of this machine (root in CI). Skipped when ``/usr/sbin/sshd`` is missing.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import subprocess
import time

import pytest
from libcloud.compute.base import Node
from libcloud.compute.deployment import FileDeployment, MultiStepDeployment, ScriptDeployment
from libcloud.compute.types import NodeState

from stratuslab_lc_plugin.errors import NodeDeploymentError
from stratuslab_lc_plugin.ssh.deploy import deploy_over_ssh
from stratuslab_lc_plugin.ssh.keys import load_private_key

# tests/ is on sys.path (setup.cfg: [tool:pytest] pythonpath = tests).
from deploy_fakes import FakeComputeDriver, FakeConfig, FakeLocationConfig
from keys import generate_private_key, key_factory, private_key_text  # noqa: F401 (pytest fixture)

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself, so it must be started by absolute path

pytestmark = [
    pytest.mark.skipif(not os.path.exists(SSHD),
                       reason="OpenSSH server not installed (apt-get install openssh-server)"),
    pytest.mark.timeout(60),
]

USER = getpass.getuser()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """``start(public_line, sftp=True) -> port``: an sshd accepting only that key."""
    processes = []
    if os.geteuid() == 0:
        try:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        except OSError as exc:
            pytest.skip("sshd needs /run/sshd: %s" % exc)

    def start(public_line: str, sftp: bool = True) -> int:
        directory = tmp_path / ("sshd%d" % len(processes))
        directory.mkdir()
        host_key = directory / "ssh_host_ed25519_key"
        host_key.write_text(private_key_text(generate_private_key("ed25519"), "openssh"))
        host_key.chmod(0o600)
        (directory / "authorized_keys").write_text(public_line + "\n")
        port = free_port()
        lines = [
            "Port %d" % port,
            "ListenAddress 127.0.0.1",
            "HostKey %s" % host_key,
            "AuthorizedKeysFile %s" % (directory / "authorized_keys"),
            "PidFile none",
            "StrictModes no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UseDNS no",
        ]
        if sftp:
            lines.append("Subsystem sftp internal-sftp")
        config = directory / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        log = open(directory / "sshd.log", "wb")
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
        processes.append((process, log))
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("sshd did not start: %s" % (directory / "sshd.log").read_text())
                time.sleep(0.05)

    yield start
    for process, log in processes:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def file_and_script(tmp_path):
    source = tmp_path / "payload.txt"
    source.write_text("payload\n")
    target = tmp_path / "remote" / "sub" / "payload.txt"
    script = ScriptDeployment(
        "#!/bin/sh\nset -e\ncat %s\nid -un\n" % target, name=str(tmp_path / "deploy.sh"), delete=True
    )
    return MultiStepDeployment([FileDeployment(str(source), str(target)), script]), target, script


@pytest.mark.parametrize("kind,fmt", [("ed25519", "openssh"), ("rsa", "pem")])
def test_deploy_node_against_openssh(sshd, key_factory, tmp_path, kind, fmt):
    key = key_factory(kind, fmt)
    port = sshd(key.public_line)
    config = FakeConfig({"local": FakeLocationConfig(key.private_path)})
    driver = FakeComputeDriver(config, target=("127.0.0.1", port))
    task, target, script = file_and_script(tmp_path)
    node = driver.deploy_node(deploy=task, ssh_username=USER, wait_period=0.05, timeout=30)
    assert node.extra["ssh_port"] == port
    assert script.exit_status == 0
    assert script.stdout == "payload\n%s\n" % USER
    assert target.read_text() == "payload\n"
    assert not os.path.exists(script.name)


@pytest.mark.parametrize("sftp", [True, False], ids=["sftp", "exec-only"])
def test_key_text_pkcs8_and_a_server_without_sftp(sshd, key_factory, tmp_path, caplog, sftp):
    # PKCS#8 key text: the case that fails with Libcloud's own loader on paramiko >= 4.
    caplog.set_level(logging.DEBUG, logger="stratuslab_lc_plugin.ssh.client")
    key = key_factory("ecdsa", "pkcs8", "phrase")
    port = sshd(key.public_line, sftp=sftp)
    task, target, script = file_and_script(tmp_path)
    node = Node("1", "n", NodeState.RUNNING, ["127.0.0.1"], [], None)
    deploy_over_ssh(task, node, "127.0.0.1", port, usernames=[USER],
                    keys=[load_private_key(key.private_text, "phrase")], timeout=30, wait_period=0.05)
    assert script.stdout == "payload\n%s\n" % USER
    assert target.read_text() == "payload\n"
    assert ("no SFTP on 127.0.0.1:%d" % port in caplog.text) is not sftp


def test_openssh_refuses_another_key_and_scripts_can_fail(sshd, key_factory, tmp_path):
    right = key_factory("ed25519")
    wrong = key_factory("rsa", name="not-authorized")
    port = sshd(right.public_line)
    node = Node("1", "n", NodeState.RUNNING, ["127.0.0.1"], [], None)
    with pytest.raises(NodeDeploymentError) as refused:
        deploy_over_ssh(ScriptDeployment("true"), node, "127.0.0.1", port, usernames=[USER],
                        keys=[load_private_key(wrong.private_path)], timeout=30, max_tries=1)
    assert refused.value.phase == "auth"
    assert "key file %s (ssh-rsa" % wrong.private_path in str(refused.value)
    failing = ScriptDeployment("echo oops >&2; exit 9", name=str(tmp_path / "fail.sh"))
    with pytest.raises(NodeDeploymentError) as failed:
        deploy_over_ssh(failing, node, "127.0.0.1", port, usernames=[USER],
                        keys=[load_private_key(right.private_path)], timeout=30)
    assert "exited with status 9" in str(failed.value) and "oops" in str(failed.value)
