"""ComputeMixin against the local cloud: real HTTPS, real XML-RPC, real Marketplace XML."""

from __future__ import annotations

import time
import unittest

import pytest
from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import Node, NodeAuthPassword, NodeAuthSSHKey, NodeImage, NodeLocation, NodeSize
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState
from libcloud.test import compute as libcloud_compute_tests

from stratuslab_lc_plugin.driver import NodeList
from stratuslab_lc_plugin.errors import (
    ConfigurationError,
    InvalidStateError,
    NotFoundError,
    ServiceUnavailableError,
)
from tests.conftest import LOCATION

pytestmark = pytest.mark.timeout(120)


def wait_for(driver, node, state, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        fresh = driver.ex_get_node(node.id, node.extra["location"])
        if fresh.state == state:
            return fresh
        if time.monotonic() > deadline:
            raise AssertionError("node %s is %s (%s), not %s" % (node.id, fresh.state, fresh.extra["state_label"], state))
        time.sleep(0.05)


@pytest.fixture
def image(driver):
    return driver.list_images()[0]


@pytest.fixture
def running_node(driver, image):
    node = driver.create_node(name="running", size="t1.micro", image=image)
    node = wait_for(driver, node, NodeState.RUNNING)
    yield node
    driver.destroy_node(node)


def node_ids(driver):
    return {n.id for n in driver.list_nodes()}


# -- registration, locations, sizes -------------------------------------------------------


def test_get_driver_returns_our_class():
    from stratuslab_lc_plugin.driver import StratusLabNodeDriver

    assert get_driver("stratuslab") is StratusLabNodeDriver


def test_locations_come_from_the_configuration(driver):
    locations = driver.list_locations()
    assert [(loc.id, loc.country) for loc in locations] == [("local", "ZZ")]
    assert all(isinstance(loc, NodeLocation) for loc in locations)


def test_sizes_are_the_builtins_plus_instance_types(write_config):
    path = write_config("""
        [default]
        selected_section = here
        [here]
    """ + LOCATION + """
        [instance_types]
        tiny = 1, 256, 0
        m1.small = 2, 2048, 1024
    """)
    driver = get_driver("stratuslab")("default", stratuslab_user_config=path)
    sizes = {s.id: s for s in driver.list_sizes()}
    assert {"t1.micro", "m1.small", "m1.medium", "m1.large", "m1.xlarge", "c1.medium", "c1.xlarge", "tiny"} == set(sizes)
    large = sizes["m1.large"]
    assert (large.ram, large.cpu, large.extra["swap"], large.extra["cpu"]) == (6144, 2, 6144, 2)
    assert (sizes["t1.micro"].extra["swap"], sizes["tiny"].extra["swap"]) == (512, 0)
    assert (sizes["m1.small"].ram, sizes["m1.small"].cpu) == (2048, 2)  # overridden
    # Libcloud's OpenNebula driver too: an instance type does not fix a disk (the image does).
    assert all(isinstance(s.ram, int) and s.disk is None for s in sizes.values())


# -- images ---------------------------------------------------------------------------------


def test_images_are_the_valid_marketplace_entries(driver, cloud):
    images = driver.list_images()
    assert images and all(isinstance(i, NodeImage) for i in images)
    valid = {e.image_id for e in cloud.catalogue.entries() if cloud.catalogue.entry(e.image_id) is not None}
    assert {i.id for i in images} == valid
    assert len(valid) < len({e.image_id for e in cloud.catalogue.entries()})  # some are not valid
    image = images[0]
    for key in ("os", "os_version", "arch", "version", "format", "disks_bus", "endorser", "created",
                "valid_until", "locations", "inbound_ports", "checksums"):
        assert key in image.extra
    assert image.name


def test_get_image_and_unknown_image(driver):
    image = driver.list_images()[0]
    assert driver.get_image(image.id).id == image.id
    with pytest.raises(NotFoundError, match="AAAAAAAAAAAAAAAAAAAAAAAAAAA"):
        driver.get_image("A" * 27)
    with pytest.raises(ValueError, match="not a Marketplace image id"):
        driver.get_image("not-an-id")


# -- node lifecycle ---------------------------------------------------------------------------


def test_create_node_lists_and_destroys(driver, image):
    node = driver.create_node(name="lifecycle", size="m1.small", image=image)
    assert isinstance(node, Node)
    assert node.name == "lifecycle"
    assert node.state in (NodeState.PENDING, NodeState.STARTING, NodeState.RUNNING)
    assert node.public_ips and node.public_ips[0].startswith("127.1.")
    assert node.private_ips == []
    assert node.extra["location"] == "local"
    assert node.size.id == "m1.small" and node.size.ram == 1536
    assert node.image.id == image.id
    node = wait_for(driver, node, NodeState.RUNNING)
    assert node.extra["host"]
    listed = {n.id: n for n in driver.list_nodes()}
    assert listed[node.id].state == NodeState.RUNNING
    assert driver.destroy_node(node) is True
    assert node.id not in node_ids(driver)


def test_node_state_makes_no_remote_call(driver, running_node, monkeypatch):
    nodes = driver.list_nodes()
    services = driver._services()

    def refuse(*args, **kwargs):
        raise AssertionError("a remote call was made")

    monkeypatch.setattr(services.one, "call", refuse)
    assert [n.state for n in nodes if n.id == running_node.id] == [NodeState.RUNNING]


def test_reboot_stop_start_suspend_shutdown(driver, running_node):
    assert driver.reboot_node(running_node) is True
    assert driver.stop_node(running_node) is True
    wait_for(driver, running_node, NodeState.STOPPED)
    assert driver.start_node(running_node) is True
    wait_for(driver, running_node, NodeState.RUNNING)
    assert driver.ex_suspend_node(running_node) is True
    wait_for(driver, running_node, NodeState.SUSPENDED)
    assert driver.start_node(running_node) is True
    wait_for(driver, running_node, NodeState.RUNNING)
    assert driver.ex_shutdown_node(running_node) is True
    assert running_node.id not in node_ids(driver) or wait_for(driver, running_node, NodeState.TERMINATED)


def test_wrong_state_says_which_state_allows_it(driver, image):
    node = driver.create_node(name="early", size="t1.micro", image=image)
    try:
        fresh = driver.ex_get_node(node.id)
        if fresh.state == NodeState.RUNNING:
            pytest.skip("the node ran before the test could act")  # pragma: no cover
        with pytest.raises(InvalidStateError, match="reboot needs a RUNNING VM"):
            driver.reboot_node(node)
    finally:
        driver.destroy_node(node)


def test_unknown_node(driver):
    with pytest.raises(NotFoundError, match="local: one.vm.info failed"):
        driver.ex_get_node("999999")
    with pytest.raises(ValueError, match="not a StratusLab node id"):
        driver.ex_get_node("abc")


def test_client_token_makes_create_node_idempotent(driver, image):
    first = driver.create_node(name="token", size="t1.micro", image=image, ex_client_token="tok-123")
    try:
        again = driver.create_node(name="token", size="t1.micro", image=image, ex_client_token="tok-123")
        assert again.id == first.id
        assert first.extra["client_token"] == "tok-123"
    finally:
        driver.destroy_node(first)


def test_create_node_renders_context_network_and_disks(driver, image, cloud):
    node = driver.create_node(
        name='quote"d name', size="t1.micro", image=image, ex_network="local",
        ex_context={"role": "worker"}, ex_volatile_disk=2,
        auth=NodeAuthSSHKey("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ0 test@host"),
    )
    try:
        assert node.name == 'quote"d name'
        assert node.public_ips == [] and node.private_ips[0].startswith("127.2.")
        disks = node.extra["disks"]
        assert [d["type"] for d in disks][1:] == ["swap", "fs"]
        assert disks[2]["size"] == 2048
        assert [d["id"] for d in disks] == [0, 1, 2]
    finally:
        driver.destroy_node(node)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"size": "m9.huge"}, ValueError, "unknown size 'm9.huge'"),
        ({"image": "not an image"}, ValueError, "neither a Marketplace image id"),
        ({"name": "x" * 129}, ValueError, "129 characters long; OpenNebula allows 128"),
        ({"name": "a & b"}, ValueError, "must not contain <, > or &"),
        ({"ex_context": {"k": "x]]>y"}}, ValueError, "must not contain"),
        ({"ex_context": {"path": "C:\\temp\\"}}, ValueError, "must not end with a backslash"),
        ({"ex_context": {"empty": ""}}, ValueError, "must not be empty"),
        ({"ex_requirements": "HOSTNAME = \\"}, ValueError, "ex_requirements must not end with a backslash"),
        ({"ex_network": "dmz"}, ValueError, "ex_network must be one of public, local, private"),
        ({"ex_context": {"bad key": "v"}}, ValueError, "ex_context key 'bad key'"),
        ({"ex_volatile_disk": 0}, ValueError, "ex_volatile_disk is a size in GiB"),
        ({"auth": NodeAuthPassword("secret")}, ValueError, "SSH keys only"),
        ({"ex_disks_bus": "usb"}, ValueError, "ex_disks_bus must be one of"),
        ({"ex_persistent_volumes": ["nope"]}, ValueError, "'nope' is not a StratusLab volume id"),
        ({"location": "nowhere"}, ConfigurationError, "nowhere"),
        ({"image": "A" * 27}, NotFoundError, "AAAA"),
    ],
)
def test_bad_arguments_create_nothing(driver, image, kwargs, error, message):
    before = node_ids(driver)
    arguments = {"name": "bad", "size": "t1.micro", "image": image}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        driver.create_node(**arguments)
    assert node_ids(driver) == before


def test_missing_public_key_file_is_named(write_config, image):
    path = write_config("""
        [default]
        selected_section = here
        [here]
    """ + LOCATION.replace("user_public_key_file = {key}", "user_public_key_file = /nonexistent/key.pub"))
    driver = get_driver("stratuslab")("default", stratuslab_user_config=path)
    with pytest.raises(ConfigurationError, match=r"/nonexistent/key.pub.*|user_public_key_file"):
        driver.create_node(name="nokey", size="t1.micro", image=image)


# -- errors of the services ----------------------------------------------------------------


def test_wrong_password_is_invalid_creds(write_config):
    path = write_config("""
        [default]
        selected_section = here
        [here]
    """ + LOCATION.replace("password = {password}", "password = wrong%password"))
    driver = get_driver("stratuslab")("default", stratuslab_user_config=path)
    with pytest.raises(InvalidCredsError) as caught:
        driver.list_nodes()
    assert "here" in str(caught.value) and "wrong%password" not in str(caught.value)


def test_untrusted_certificate_names_the_location(write_config):
    path = write_config("""
        [default]
        selected_section = here
        [here]
    """ + LOCATION.replace("ca_certs_path = {ca}\n", ""))
    driver = get_driver("stratuslab")("default", stratuslab_user_config=path)
    with pytest.raises(ServiceUnavailableError, match="here: compute service .* TLS failure"):
        driver.list_nodes()


def test_two_locations_are_listed_and_a_dead_one_is_named(write_config, driver, image):
    dead = LOCATION.replace("{url}/one-proxy", "https://127.0.0.1:9/one-proxy")
    path = write_config("[default]\nselected_section = one\n[one]" + LOCATION + "[two]" + LOCATION + "[dead]" + dead)
    multi = get_driver("stratuslab")("default", stratuslab_user_config=path, timeout=5, retries=0)
    node = driver.create_node(name="multi", size="t1.micro", image=image)
    try:
        with pytest.raises(ServiceUnavailableError, match="dead: compute service"):
            multi.list_nodes()
        partial = multi.list_nodes(ex_partial=True)
        assert isinstance(partial, NodeList)
        assert set(partial.failures) == {"dead"}
        located = {(n.extra["location"], n.id) for n in partial}
        assert ("one", node.id) in located and ("two", node.id) in located
        assert [n.id for n in multi.list_nodes(ex_location="two") if n.id == node.id] == [node.id]
        # the same VM id in two locations: two nodes, told apart by uuid
        same_id = [n for n in partial if n.id == node.id]
        assert len({n.uuid for n in same_id}) == 2
    finally:
        driver.destroy_node(node)


def test_timeout_must_be_positive(cloud):
    with pytest.raises(ValueError, match="timeout"):
        get_driver("stratuslab")("default", stratuslab_user_config=cloud.config_path, timeout=0)


# -- Libcloud's own generic driver tests -----------------------------------------------------


@pytest.fixture
def generic_driver(request, driver, image):
    node = driver.create_node(name="generic", size="t1.micro", image=image)
    wait_for(driver, node, NodeState.RUNNING)
    request.cls.driver = driver
    yield
    if node.id in node_ids(driver):
        driver.destroy_node(node)


@pytest.mark.usefixtures("generic_driver")
class TestLibcloudGeneric(libcloud_compute_tests.TestCaseMixin, unittest.TestCase):
    should_list_locations = True
    should_list_volumes = True

    def test_destroy_node_response(self):
        nodes = [n for n in self.driver.list_nodes() if n.name == "generic"]
        self.assertTrue(isinstance(self.driver.destroy_node(nodes[0]), bool))

    def test_reboot_node_response(self):
        nodes = [n for n in self.driver.list_nodes() if n.name == "generic" and n.state == NodeState.RUNNING]
        self.assertTrue(isinstance(self.driver.reboot_node(nodes[0]), bool))

    def test_create_node_response(self):
        super().test_create_node_response()
        for node in self.driver.list_nodes():
            if node.name == "node-name":
                self.driver.destroy_node(node)


def test_size_object_accepted(driver, image):
    size = NodeSize("t1.micro", "t1.micro", 512, 512, None, None, driver)
    node = driver.create_node(name="sizeobj", size=size, image=image)
    driver.destroy_node(node)
