"""A user's program, type-checked with ``mypy --strict`` by ``tox -e typing``: the public API
of the driver (its methods, ``ex_`` ones included, ``.failures``, key pairs and errors) and
of the testing helpers must need no cast and no ``type: ignore``. It is never run by the
tests."""

from __future__ import annotations

from typing import Dict, List, Optional

from libcloud.compute.base import KeyPair, Node, NodeAuthSSHKey, StorageVolume
from libcloud.compute.deployment import ScriptDeployment
from libcloud.compute.providers import get_driver

from stratuslab_lc_plugin import STRATUSLAB
from stratuslab_lc_plugin.driver import NodeList, StratusLabNodeDriver, StratusLabNodeSize
from stratuslab_lc_plugin.errors import (
    ConfigurationError,
    NodeDeploymentError,
    ScriptFailedError,
    ServiceUnavailableError,
    StratusLabError,
)
from stratuslab_lc_plugin.testing import driver_for, local_cloud, nothing_left_behind


def open_driver(config: str) -> StratusLabNodeDriver:
    driver = get_driver(STRATUSLAB)("default", stratuslab_user_config=config, timeout=30)
    assert isinstance(driver, StratusLabNodeDriver)
    return driver


def report(driver: StratusLabNodeDriver) -> Dict[str, str]:
    nodes: NodeList[Node] = driver.list_nodes(ex_partial=True)
    failed: Dict[str, str] = {location: str(error) for location, error in nodes.failures.items()}
    for node in nodes:
        print(node.id, node.name, node.state, node.extra["location"])
    volumes: NodeList[StorageVolume] = driver.list_volumes(ex_location="default")
    print(len(volumes), [size.cpu for size in driver.list_sizes() if isinstance(size, StratusLabNodeSize)])
    return failed


def launch(driver: StratusLabNodeDriver, public_key: str) -> Optional[Node]:
    key: KeyPair = driver.import_key_pair_from_string("mine", public_key)
    image = driver.list_images()[0]
    try:
        node = driver.create_node(name="typed", size="t1.micro", image=image, ex_keyname=key.name,
                                  ex_network="public", ex_context={"role": "web"}, ex_userdata="#!/bin/sh\n")
    except ServiceUnavailableError as error:
        print(error.location, error.operation, error.timed_out, error.client_token, error.http_code)
        return None
    running: List[Node] = [n for n, _ in driver.wait_until_running([node], wait_period=1, timeout=120)]
    same = driver.ex_get_node(node.id, node.extra["location"])
    print(same.state, running)
    return node


def deploy(driver: StratusLabNodeDriver, key_path: str) -> None:
    script = ScriptDeployment("uname -a")
    try:
        node = driver.deploy_node(deploy=script, ssh_key=key_path, name="deployed", size="t1.micro",
                                  image=driver.list_images()[0], auth=NodeAuthSSHKey(open(key_path + ".pub").read()))
    except NodeDeploymentError as error:
        cause = error.value
        if isinstance(cause, ScriptFailedError):
            print(cause.exit_status, cause.stderr)
        print(error.phase, error.node.id)
        driver.destroy_node(error.node)
        return
    driver.reboot_node(node)
    driver.destroy_node(node, ex_location=node.extra["location"])


def smoke_test() -> None:
    """A user's own test without pytest: a local cloud, a driver for it, nothing left behind."""
    with local_cloud(delays=0, faults=["one.vm.allocate=http-503:1"]) as cloud:
        with nothing_left_behind(driver_for(cloud, timeout=30), cloud) as driver:
            node = driver.create_node(name="smoke", size="m1.small", image=driver.list_images()[0])
            ((running, addresses),) = driver.wait_until_running(
                [node], ex_on_poll=lambda seen: print(seen.extra["state_label"]))
            print(running.state, addresses, cloud.config_path)


def main() -> None:
    try:
        driver = open_driver("stratuslab-user.cfg")
    except ConfigurationError as error:
        print(error.path, error.line, error.key)
        return
    with driver:
        try:
            report(driver)
            launch(driver, "ssh-ed25519 AAAA me")
            deploy(driver, "id_ed25519")
        except StratusLabError as error:
            print(error.location, error.code, error.remote_message)
        for pair in driver.list_key_pairs():
            driver.delete_key_pair(pair)


if __name__ == "__main__":
    main()
