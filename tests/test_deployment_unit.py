"""DeploymentMixin.deploy_node with a scripted compute side and real SSH guests.

The nodes come from :class:`tests.deploy_fakes.FakeComputeDriver`; the SSH servers are the
local cloud's guests (:class:`GuestManager`) on loopback addresses, so every deployment below
really connects, authenticates, uploads and runs commands.
"""

from __future__ import annotations

import os
import socket

import paramiko
import pytest
from libcloud.compute.base import Node, NodeAuthSSHKey, NodeImage, NodeLocation
from libcloud.compute.deployment import (
    Deployment,
    FileDeployment,
    MultiStepDeployment,
    ScriptDeployment,
    SSHKeyDeployment,
)
from libcloud.compute.types import DeploymentError, NodeState

from stratuslab_lc_plugin.driver import deployment as deployment_module
from stratuslab_lc_plugin.errors import NodeDeploymentError
from stratuslab_lc_plugin.ssh.client import DeploymentSSHClient
from stratuslab_lc_plugin.emulator.guests import GuestManager
from stratuslab_lc_plugin.errors import ServiceUnavailableError
from stratuslab_lc_plugin.ssh.keys import SSHKeyError, load_private_key

# tests/ is on sys.path (setup.cfg: [tool:pytest] pythonpath = tests).
from deploy_fakes import FakeCatalogue, FakeComputeDriver, FakeConfig, FakeLocationConfig
from keys import KEY_VARIANTS, key_factory  # noqa: F401 (pytest fixture)

pytestmark = pytest.mark.timeout(60)

FAST = {"wait_period": 0.05, "timeout": 30}
TTYLINUX = "ttylinux"  # FakeCatalogue: no SFTP


@pytest.fixture
def guests(tmp_path):
    with GuestManager(str(tmp_path / "cloud"), FakeCatalogue()) as manager:
        yield manager


@pytest.fixture
def ed_key(key_factory):
    return key_factory("ed25519")


@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "payload.txt"
    path.write_text("payload\n")
    path.chmod(0o640)
    return str(path)


def make_driver(guests, key, **options) -> FakeComputeDriver:
    config = FakeConfig({"local": FakeLocationConfig(key.private_path)})
    return FakeComputeDriver(config, guests=guests, **options)


def file_and_script(payload: str) -> MultiStepDeployment:
    return MultiStepDeployment([
        FileDeployment(payload, "conf/app/payload.txt"),
        ScriptDeployment("#!/bin/sh\nset -e\ncat conf/app/payload.txt\necho \"$0\"\n", delete=True),
    ])


def image(image_id: str) -> NodeImage:
    return NodeImage(image_id, image_id, None)


@pytest.mark.parametrize("kind,fmt", KEY_VARIANTS)
def test_default_key_of_the_location_every_type_and_format(guests, key_factory, payload, kind, fmt):
    key = key_factory(kind, fmt)
    driver = make_driver(guests, key)
    task = file_and_script(payload)
    node = driver.deploy_node(deploy=task, **FAST)
    script = task.steps[1]
    assert script.exit_status == 0
    home = guests.guest_home(int(node.id))
    assert script.stdout.splitlines() == ["payload", os.path.join(home, script.name)]
    uploaded = os.path.join(home, "conf", "app", "payload.txt")
    assert open(uploaded).read() == "payload\n"
    assert os.stat(uploaded).st_mode & 0o777 == 0o640  # FileDeployment keeps permissions
    assert not os.path.exists(os.path.join(home, script.name))  # delete=True
    assert driver._config.asked[0] is None  # deploy_node asked for the default location


@pytest.mark.parametrize("image_id", ["centos", TTYLINUX])
def test_without_sftp_everything_goes_over_exec(guests, key_factory, payload, image_id):
    key = key_factory("rsa")
    extra_key = key_factory("ecdsa")
    driver = make_driver(guests, key)
    task = MultiStepDeployment([file_and_script(payload), SSHKeyDeployment(extra_key.public_line + "\n")])
    node = driver.deploy_node(deploy=task, image=image(image_id), **FAST)
    assert task.steps[0].steps[1].stdout.startswith("payload\n")
    # SSHKeyDeployment appended the key: it now opens the guest, as on a real VM.
    client = DeploymentSSHClient(node.public_ips[0], node.extra["ssh_port"],
                                 keys=[load_private_key(extra_key.private_path)], timeout=10)
    client.connect()
    try:
        assert client.run("cat .ssh/authorized_keys")[0].count("\n") == 2
        assert client._use_sftp() is (image_id != TTYLINUX)
    finally:
        client.close()


@pytest.mark.parametrize("kind,fmt", [("ed25519", "openssh"), ("rsa", "pem"), ("ecdsa", "pkcs8")])
def test_encrypted_key_given_as_path_or_text(guests, key_factory, kind, fmt):
    key = key_factory(kind, fmt, "phrase")
    other = key_factory("ed25519", name="config-default")
    driver = make_driver(guests, other)
    for ssh_key in (key.private_path, key.private_text):
        task = ScriptDeployment("echo hi")
        driver.deploy_node(deploy=task, ssh_key=ssh_key, ssh_key_password="phrase", **FAST)
        assert task.stdout == "hi\n"
        # No auth given: the node was created with the public half of ssh_key.
        assert driver.created[-1]["auth"].pubkey.split()[:2] == key.public_line.split()[:2]


def test_location_and_pub_suffix_of_the_default_key(guests, key_factory):
    key = key_factory("ed25519", name="site_key")
    config = FakeConfig({"local": FakeLocationConfig("/nonexistent"),
                         "lal": FakeLocationConfig(key.public_path, key.public_path)})
    driver = FakeComputeDriver(config, guests=guests)
    node = driver.deploy_node(deploy=ScriptDeployment("true"), location=NodeLocation("lal", "LAL", "FR", None), **FAST)
    assert config.asked[0] == "lal"
    assert node.extra["location"] == "lal"


def test_published_ssh_port_is_used_unless_the_caller_chose_one(tmp_path, ed_key):
    with GuestManager(str(tmp_path / "cloud"), preferred_port=0) as guests:
        driver = make_driver(guests, ed_key)
        node = driver.deploy_node(deploy=ScriptDeployment("true"), **FAST)
        assert node.extra["ssh_port"] != 22
        closed = free_port()
        with pytest.raises(NodeDeploymentError) as error:
            driver.deploy_node(deploy=ScriptDeployment("true"), ssh_port=closed, wait_period=0.05, timeout=1)
    assert error.value.phase == "connect"
    assert "could not connect to SSH at 127.1.250." in str(error.value)
    assert ":%d within 1 s" % closed in str(error.value)
    assert "refused" in str(error.value).lower()


def test_wrong_key_is_an_authentication_error_naming_the_key(guests, key_factory):
    right = key_factory("ed25519")
    wrong = key_factory("rsa", "pkcs8", name="wrong")
    driver = make_driver(guests, right)
    with pytest.raises(DeploymentError) as error:
        driver.deploy_node(deploy=ScriptDeployment("true"), ssh_key=wrong.private_path,
                           auth=NodeAuthSSHKey(right.public_line), **FAST)
    message = str(error.value)
    assert error.value.phase == "auth"
    assert "SSH authentication failed" in message and "user root" in message
    assert "key file %s (ssh-rsa SHA256:" % wrong.private_path in message
    assert wrong.private_text.splitlines()[1] not in message
    # As in Libcloud, .value and .original_error are the exception behind the failure.
    assert isinstance(error.value.original_error, paramiko.AuthenticationException)
    assert error.value.value is error.value.original_error
    # The node is left running for inspection; the caller destroys it.
    assert error.value.node.id in [n.id for n in driver.list_nodes() if n.state == NodeState.RUNNING]
    assert driver.destroy_node(error.value.node)


def test_alternate_usernames_are_tried(guests, ed_key):
    driver = make_driver(guests, ed_key)
    task = ScriptDeployment("echo $USER")
    driver.deploy_node(deploy=task, ssh_username="ubuntu", ssh_alternate_usernames=["root"], **FAST)
    assert task.stdout == "root\n"


def test_failing_script_stops_the_deployment_with_its_output(guests, ed_key, tmp_path):
    driver = make_driver(guests, ed_key)
    lines = "".join("echo line%d\n" % i for i in range(50))
    failing = ScriptDeployment(lines + "echo broken >&2\nexit 3\n", name="setup.sh")
    never = ScriptDeployment("touch never-ran")
    with pytest.raises(NodeDeploymentError) as error:
        driver.deploy_node(deploy=MultiStepDeployment([ScriptDeployment("true"), failing, never]), **FAST)
    message = str(error.value)
    assert error.value.phase == "step"
    assert "script setup.sh exited with status 3" in message
    assert "line49" in message and "line10" not in message  # only the tail
    assert "stderr (end):\n  broken" in message
    assert error.value.exit_status == 3 and "line0" in error.value.stdout
    assert never.exit_status is None
    assert not os.path.exists(os.path.join(guests.guest_home(int(error.value.node.id)), "never-ran"))


def test_script_timeout_and_local_step_errors(guests, ed_key, tmp_path):
    driver = make_driver(guests, ed_key)
    with pytest.raises(NodeDeploymentError) as timed_out:
        driver.deploy_node(deploy=ScriptDeployment("echo started; sleep 30", name="slow.sh", timeout=0.5), **FAST)
    assert "script slow.sh did not finish within 0.5 s" in str(timed_out.value)
    assert "started" in str(timed_out.value)
    with pytest.raises(NodeDeploymentError) as missing:
        driver.deploy_node(deploy=FileDeployment(str(tmp_path / "absent"), "x"), **FAST)
    assert "file upload %s -> x failed" % (tmp_path / "absent") in str(missing.value)


def test_a_step_cut_off_by_a_lost_connection_is_retried(guests, ed_key):
    class DropsOnce(Deployment):
        calls = 0

        def run(self, node, client):
            DropsOnce.calls += 1
            if DropsOnce.calls == 1:
                client.client.get_transport().close()
                raise paramiko.SSHException("SSH session not active")
            client.run("true")
            return node

    driver = make_driver(guests, ed_key)
    driver.deploy_node(deploy=DropsOnce(), **FAST)
    assert DropsOnce.calls == 2


def test_node_in_error_state_fails_at_once_with_its_state(guests, ed_key):
    driver = make_driver(guests, ed_key, final_state=NodeState.ERROR)
    with pytest.raises(NodeDeploymentError) as error:
        driver.deploy_node(deploy=ScriptDeployment("true"), wait_period=0.05, timeout=600)
    assert error.value.phase == "wait"
    assert "while waiting for it to run: it entered state error" in str(error.value)
    assert driver._nodes[error.value.node.id]["polls"] == 2  # no waiting for the timeout


def test_waiting_times_out_with_the_last_state(guests, ed_key):
    driver = make_driver(guests, ed_key, polls_until_running=10**6)
    with pytest.raises(NodeDeploymentError) as pending:
        driver.deploy_node(deploy=ScriptDeployment("true"), wait_period=0.05, timeout=0.3)
    assert "not running with an address within 0.3 s (last state: pending)" in str(pending.value)
    no_ip = make_driver(guests, ed_key, with_address=False)
    with pytest.raises(NodeDeploymentError) as error:
        no_ip.deploy_node(deploy=ScriptDeployment("true"), wait_period=0.05, timeout=0.3)
    assert "last state: running, but no IPv4 address in public_ips" in str(error.value)


def test_a_vanished_node_ends_the_wait_and_poll_errors_do_not(guests, ed_key):
    config = FakeConfig({"local": FakeLocationConfig(ed_key.private_path)})

    class Vanishing(FakeComputeDriver):
        def ex_get_node(self, node_id, location=None):
            node = super().ex_get_node(node_id, location)
            self._nodes.pop(node_id)  # gone by the next poll
            return node

    with pytest.raises(NodeDeploymentError) as error:
        Vanishing(config, guests=guests, polls_until_running=5).deploy_node(
            deploy=ScriptDeployment("true"), wait_period=0.05, timeout=600)
    assert "it disappeared (last state: pending)" in str(error.value)

    class Flaky(FakeComputeDriver):
        failures = 2

        def ex_get_node(self, node_id, location=None):
            if self.failures:
                self.failures -= 1
                raise ServiceUnavailableError("service down for a moment")
            return super().ex_get_node(node_id, location)

    flaky = Flaky(config, guests=guests)
    task = ScriptDeployment("echo up")
    flaky.deploy_node(deploy=task, **FAST)
    assert (flaky.failures, task.stdout) == (0, "up\n")


def test_key_problems_are_reported_before_a_node_is_created(guests, key_factory, tmp_path):
    key = key_factory("ed25519", "openssh", "phrase")
    driver = make_driver(guests, key)
    with pytest.raises(SSHKeyError, match="is encrypted"):
        driver.deploy_node(deploy=ScriptDeployment("true"), **FAST)
    with pytest.raises(SSHKeyError, match="does not exist"):
        driver.deploy_node(deploy=ScriptDeployment("true"), ssh_key=str(tmp_path / "nope"), **FAST)
    assert driver.created == []


def test_missing_default_key_falls_back_to_agent_and_says_so(guests, key_factory, tmp_path, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys either
    public = key_factory("ed25519").public_path
    config = FakeConfig({"local": FakeLocationConfig(str(tmp_path / "id_missing"), public)})
    driver = FakeComputeDriver(config, guests=guests)
    with pytest.raises(NodeDeploymentError) as error:
        driver.deploy_node(deploy=ScriptDeployment("true"), max_tries=1, **FAST)
    assert error.value.phase == "auth"
    assert "the default key %s does not exist" % (tmp_path / "id_missing") in str(error.value)


def test_at_exit_function_is_registered_during_the_deployment_only(guests, ed_key, monkeypatch):
    calls = []
    monkeypatch.setattr(deployment_module.atexit, "register", lambda f, **kw: calls.append(("register", kw)))
    monkeypatch.setattr(deployment_module.atexit, "unregister", lambda f: calls.append(("unregister", f)))
    handler = object()
    driver = make_driver(guests, ed_key)
    node = driver.deploy_node(deploy=ScriptDeployment("true"), at_exit_func=handler, **FAST)
    assert calls == [("register", {"driver": driver, "node": calls[0][1]["node"]}), ("unregister", handler)]
    assert calls[0][1]["node"].id == node.id


def test_invalid_arguments(guests, ed_key):
    driver = make_driver(guests, ed_key)
    with pytest.raises(ValueError, match="ssh_interface"):
        driver.deploy_node(deploy=ScriptDeployment("true"), ssh_interface="ipv6")
    with pytest.raises(NotImplementedError):
        driver.deploy_node(deploy=ScriptDeployment("true"), auth="password")
    assert driver.created == []


def test_client_run_keeps_late_output_and_closes_stdin(guests, ed_key):
    driver = make_driver(guests, ed_key)
    node = driver.deploy_node(deploy=ScriptDeployment("true"), **FAST)
    client = DeploymentSSHClient(node.public_ips[0], node.extra["ssh_port"],
                                 keys=[load_private_key(ed_key.private_path)], timeout=10)
    client.connect()
    try:
        out, err, status = client.run("cat; head -c 200000 /dev/zero | tr '\\0' x; echo; echo e >&2; exit 5")
        assert (len(out), err, status) == (200001, "e\n", 5)
        assert client.put("a b/-c.txt", contents="text") == os.path.join(guests.guest_home(int(node.id)), "a b/-c.txt")
        client.delete("a b/-c.txt")
        assert client.run("ls 'a b'")[0] == ""
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_node_deployment_error_is_a_libcloud_deployment_error():
    node = Node("7", "n", NodeState.RUNNING, [], [], None)
    cause = OSError("connection reset")
    error = NodeDeploymentError(node, "boom", phase="step", original_exception=cause)
    assert isinstance(error, DeploymentError)
    assert (str(error), error.message, error.node, error.value, error.original_error) == ("boom", "boom", node, cause, cause)
    assert error.args == ("boom",)
    assert "phase=step" in repr(error)
