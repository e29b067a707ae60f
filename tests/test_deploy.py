"""deploy_node end to end: the driver, the local cloud and real SSH to its guests."""

from __future__ import annotations

import paramiko
import pytest
from libcloud.compute.base import NodeAuthSSHKey
from libcloud.compute.deployment import (
    FileDeployment,
    MultiStepDeployment,
    ScriptDeployment,
    SSHKeyDeployment,
)
from libcloud.compute.types import DeploymentError

from stratuslab_lc_plugin.errors import ScriptFailedError, SSHKeyError
from tests.keys import key_factory  # noqa: F401 - pytest fixture

pytestmark = pytest.mark.timeout(120)


def image_named(driver, fragment):
    return next(i for i in driver.list_images() if fragment in i.name)


@pytest.fixture
def ubuntu(driver):
    return image_named(driver, "ubuntu")


@pytest.fixture
def created(driver):
    """Nodes a test creates, destroyed at its end whatever happened."""
    nodes = []
    yield nodes
    for node in nodes:
        try:
            driver.destroy_node(node)
        except Exception:  # noqa: BLE001 - already gone
            pass


def multi_step(tmp_path):
    payload = tmp_path / "payload.txt"
    payload.write_text("payload from the test\n")
    script = ScriptDeployment("#!/bin/sh\ncat payload.txt\necho \"user=$(id -un)\"\n", name="check.sh")
    return script, MultiStepDeployment([FileDeployment(str(payload), "payload.txt"), script])


@pytest.mark.parametrize("kind, fmt", [("ed25519", "openssh"), ("rsa", "pem"), ("ecdsa", "pkcs8")])
def test_multi_step_deployment_with_each_key_type(driver, ubuntu, created, key_factory, tmp_path, kind, fmt):
    key = key_factory(kind, fmt)
    script, deployment = multi_step(tmp_path)
    node = driver.deploy_node(
        name="deploy-%s" % kind, size="t1.micro", image=ubuntu, deploy=deployment,
        ssh_key=key.private_path, wait_period=0.1, timeout=60,
    )
    created.append(node)
    assert script.exit_status == 0, script.stderr
    assert "payload from the test" in script.stdout
    assert "user=" in script.stdout


def test_key_given_as_text_with_a_passphrase(driver, ubuntu, created, key_factory):
    key = key_factory("rsa", "pkcs8", password="s3cret")
    script = ScriptDeployment("echo ok")
    node = driver.deploy_node(
        name="deploy-text", size="t1.micro", image=ubuntu, deploy=script,
        ssh_key=key.private_text, ssh_key_password="s3cret", wait_period=0.1, timeout=60,
    )
    created.append(node)
    assert script.stdout.strip() == "ok"


def test_default_key_comes_from_the_configuration(driver, ubuntu, created):
    script = ScriptDeployment("echo default-key")
    node = driver.deploy_node(name="deploy-default", size="t1.micro", image=ubuntu, deploy=script,
                              wait_period=0.1, timeout=60)
    created.append(node)
    assert script.stdout.strip() == "default-key"


def test_guest_without_sftp_gets_files_over_exec(driver, created, key_factory, tmp_path):
    ttylinux = image_named(driver, "ttylinux")
    key = key_factory("ed25519")
    script, deployment = multi_step(tmp_path)
    node = driver.deploy_node(name="deploy-ttylinux", size="t1.micro", image=ttylinux, deploy=deployment,
                              ssh_key=key.private_path, wait_period=0.1, timeout=60)
    created.append(node)
    assert "payload from the test" in script.stdout


def test_ssh_key_deployment_then_login_with_the_new_key(driver, ubuntu, created, key_factory):
    first, second = key_factory("ed25519", name="first"), key_factory("ed25519", name="second")
    node = driver.deploy_node(name="deploy-keys", size="t1.micro", image=ubuntu,
                              deploy=SSHKeyDeployment(second.public_line),
                              ssh_key=first.private_path, wait_period=0.1, timeout=60)
    created.append(node)
    script = ScriptDeployment("echo second key works")
    driver.ex_deploy_node(node, script, ssh_key=second.private_path, wait_period=0.1, timeout=30)
    assert script.stdout.strip() == "second key works"


def test_wrong_key_says_which_key(driver, ubuntu, created, key_factory):
    right, wrong = key_factory("ed25519", name="right"), key_factory("ed25519", name="wrong")
    node = driver.create_node(name="deploy-wrong", size="t1.micro", image=ubuntu,
                              auth=NodeAuthSSHKey(right.public_line))
    created.append(node)
    with pytest.raises(DeploymentError) as caught:
        driver.ex_deploy_node(node, ScriptDeployment("true"), ssh_key=wrong.private_path,
                              wait_period=0.1, timeout=30, max_tries=1)
    message = str(caught.value)
    assert "auth" in message.lower() and "wrong" in message
    assert caught.value.node.id == node.id
    assert isinstance(caught.value.value, paramiko.AuthenticationException)


def test_failing_script_reports_status_and_output(driver, ubuntu, created, key_factory):
    key = key_factory("ed25519")
    script = ScriptDeployment("#!/bin/sh\necho about to fail\necho broken >&2\nexit 3\n", name="fail.sh")
    with pytest.raises(DeploymentError) as caught:
        driver.deploy_node(name="deploy-fail", size="t1.micro", image=ubuntu, deploy=script,
                           ssh_key=key.private_path, wait_period=0.1, timeout=60)
    created.append(caught.value.node)
    message = str(caught.value)
    assert "3" in message and "about to fail" in message and "broken" in message
    failure = caught.value.value
    assert isinstance(failure, ScriptFailedError) and failure.exit_status == 3
    assert "broken" in failure.stderr and str(failure) in message


def test_bad_key_fails_before_any_node_is_created(driver, ubuntu, tmp_path):
    before = {n.id for n in driver.list_nodes()}
    bogus = tmp_path / "not-a-key"
    bogus.write_text("this is not a key\n")
    with pytest.raises(SSHKeyError):
        driver.deploy_node(name="deploy-bogus", size="t1.micro", image=ubuntu,
                           deploy=ScriptDeployment("true"), ssh_key=str(bogus))
    assert {n.id for n in driver.list_nodes()} == before


def test_refused_credentials_end_the_wait_at_once(driver, ubuntu, created, write_config):
    from libcloud.common.types import InvalidCredsError
    from libcloud.compute.providers import get_driver

    from tests.conftest import LOCATION

    node = driver.create_node(name="deploy-creds", size="t1.micro", image=ubuntu)
    created.append(node)
    path = write_config("[default]\nselected_section = local\n[local]"
                        + LOCATION.replace("password = {password}", "password = not-the-password"))
    refused = get_driver("stratuslab")("default", stratuslab_user_config=path)
    with pytest.raises(DeploymentError) as caught:
        refused.ex_deploy_node(node, ScriptDeployment("true"), timeout=120, wait_period=0.1)
    assert "reading its state failed" in str(caught.value)
    assert "within" not in str(caught.value)  # it did not wait for the timeout
    assert isinstance(caught.value.original_error, InvalidCredsError)
    assert caught.value.value is caught.value.original_error
