"""The driver as tools that pick a Libcloud provider by name drive it, against the local cloud.

Each test follows one tool's own code path (read in its sources; see README.rst, "Used
from other tools"): how it builds the driver, what it calls with which arguments, and what
it reads back. The tools themselves are not installed here (Salt alone pulls in some forty
packages); README.rst says how to run each of them for real.
"""

from __future__ import annotations

import base64
import email
import gzip
import json
import warnings

import paramiko
import pytest
from libcloud.compute.base import Node, NodeAuthSSHKey, NodeLocation, NodeSize
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState, Provider

import stratuslab_lc_plugin  # noqa: F401 - registers where .pth files are not processed
from stratuslab_lc_plugin.errors import KeyPairExistsError, KeyPairNotFoundError
from tests.keys import key_factory  # noqa: F401 - pytest fixture

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def front(cloud):
    """What a user of these tools types in their configuration: user, password, front end."""
    user, password = next(iter(cloud.users.items()))
    host_port = cloud.url.split("://", 1)[1]
    return {
        "key": user, "secret": password, "host": host_port.split(":")[0], "port": host_port.split(":")[1],
        "host_port": host_port, "path": "/one-proxy/xmlrpc",
        "ex_pdisk_endpoint": cloud.url + "/pdisk", "ex_marketplace_endpoint": cloud.url + "/marketplace",
        "ex_ca_certs_path": cloud.ca_path,
    }


def wait_running(driver, node_id, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node = next(n for n in driver.list_nodes() if n.id == node_id)
        if node.state == NodeState.RUNNING:
            return node
        time.sleep(0.05)
    raise AssertionError("node %s not running" % node_id)


# -- ElastiCluster (elasticluster/providers/libcloud_provider.py) ---------------------------


def test_elasticluster_key_pairs_create_node_and_ssh(front, tmp_path, key_factory):
    key = key_factory("rsa", "pem", name="elasticluster")
    options = {  # every [cloud/...] key of its configuration, as strings
        "key": front["key"], "secret": front["secret"], "host": front["host"], "port": front["port"],
        "path": front["path"], "ex_pdisk_endpoint": front["ex_pdisk_endpoint"],
        "ex_marketplace_endpoint": front["ex_marketplace_endpoint"], "ex_ca_certs_path": front["ex_ca_certs_path"],
        "ex_keypairs_dir": str(tmp_path / "keypairs"), "timeout": "60",
    }
    driver_class = get_driver(getattr(Provider, "stratuslab".upper()))
    driver = driver_class(**options)

    key_name = "elasticluster-key"
    if key_name not in [k.name for k in driver.list_key_pairs()]:
        assert driver.import_key_pair_from_file(name=key_name, key_file_path=key.public_path)
    key_pair = driver.get_key_pair(key_name)
    assert key_pair.public_key.split()[:2] == key.public_line.split()[:2]

    size = next(s for s in driver.list_sizes() if s.name == "m1.small" or s.id == "m1.small")
    image_id = next(i.id for i in driver.list_images() if i.extra["os"] == "Ubuntu")
    image = driver.get_image(image_id)
    user_data = "#!/bin/sh\necho elasticluster was here\n"
    with pytest.warns(UserWarning, match="create_node ignores accelerator_count, login, username") as caught:
        node = driver.create_node(
            name="compute001", size=size, image=image, security_groups="default", ex_userdata=user_data,
            username="root", auth=NodeAuthSSHKey(key.public_line), ex_keyname=key_name,
            login="ubuntu", accelerator_count=0,  # leftovers of its node configuration
        )
    assert {w.filename for w in caught if "create_node ignores" in str(w.message)} == {__file__}  # the caller's line
    try:
        node = wait_running(driver, node.id)
        assert node.state == NodeState.RUNNING and node.extra["key_name"] == key_name
        addresses = node.public_ips + node.private_ips
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(addresses[0], port=node.extra["ssh_port"], username="root",
                       pkey=paramiko.RSAKey.from_private_key_file(key.private_path), timeout=20,
                       allow_agent=False, look_for_keys=False)
        try:
            _, stdout, _ = client.exec_command("echo ok")
            assert stdout.read().strip() == b"ok"
        finally:
            client.close()
        context = driver._services(node.extra["location"]).one.vm(int(node.id)).context
        message = email.message_from_bytes(gzip.decompress(base64.b64decode(context["CLOUD_INIT_USER_DATA"])))
        parts = [part.get_payload(decode=True) for part in message.walk() if not part.is_multipart()]
        assert parts == [user_data.encode()]  # ex_userdata reached the VM as cloud-init user data
    finally:
        node.destroy()


def test_create_node_refuses_what_stratuslab_cannot_give(driver):
    image = driver.list_images()[0]
    with pytest.raises(ValueError, match="no security groups"):
        driver.create_node(name="x", size="t1.micro", image=image, security_groups=["web"])
    with pytest.raises(ValueError, match="networks"):
        driver.create_node(name="x", size="t1.micro", image=image, networks=["net-1"])
    with pytest.raises(TypeError, match="ex_netwrok"):
        driver.create_node(name="x", size="t1.micro", image=image, ex_netwrok="local")


# -- Ansible's Libcloud inventory (contrib/inventory/apache-libcloud.py) ----------------------


def test_ansible_inventory_constructor_and_node_fields(front, driver):
    made = driver.create_node(name="inventory-node", size="t1.micro", image=driver.list_images()[0])
    try:
        # libcloud.ini: provider = STRATUSLAB, key, secret, host, path, secure: all strings.
        Driver = get_driver(getattr(Provider, "STRATUSLAB"))
        conn = Driver(key=front["key"], secret=front["secret"], secure="True", host=front["host_port"],
                      path=front["path"], ex_ca_certs_path=front["ex_ca_certs_path"],
                      ex_marketplace_endpoint=front["ex_marketplace_endpoint"])
        inventory = {}
        for node in conn.list_nodes():
            if node.state == 0:  # the script's own filter
                continue
            dest = node.public_ips[0]
            inventory.setdefault(node.name, []).append(dest)
            if node.extra["key_name"]:
                inventory.setdefault("key_" + node.extra["key_name"], []).append(dest)
            if node.extra["security_group"]:
                inventory.setdefault("sg_" + node.extra["security_group"][0], []).append(dest)
            for name, value in node.extra["tags"].items():
                inventory.setdefault("tag_%s_%s" % (name, value), []).append(dest)
        assert made.public_ips[0] in inventory["inventory-node"]
        host_vars = {"ec2_" + k: v for k, v in vars(made).items() if isinstance(v, (int, bool, str))}
        assert host_vars["ec2_id"] == made.id
    finally:
        made.destroy()


def test_ansible_string_secure_false_means_http(front):
    with pytest.warns(UserWarning, match="plain HTTP"):
        driver = get_driver("stratuslab")(key="u", secret="p", secure="False", host="cloud.example.org", path="/x")
    assert driver.config.location().endpoint.startswith("http://cloud.example.org/")
    with pytest.raises(ValueError, match="secure must be true or false"):
        get_driver("stratuslab")(key="u", secret="p", secure="maybe", host="h")


# -- Salt's libcloud_compute execution module ----------------------------------------------


def _simple_node(node):  # salt/modules/libcloud_compute.py, _simple_node and friends
    return {"id": node.id, "name": node.name, "state": str(node.state), "public_ips": node.public_ips,
            "private_ips": node.private_ips,
            "size": {"id": node.size.id, "name": node.size.name, "ram": node.size.ram, "disk": node.size.disk,
                     "bandwidth": node.size.bandwidth, "price": node.size.price, "extra": node.size.extra}
            if node.size else {}, "extra": node.extra}


def test_salt_profile_calls_and_serialisation(front, tmp_path):
    profile = {"driver": "stratuslab", "key": front["key"], "secret": front["secret"], "host": front["host"],
               "port": int(front["port"]), "path": front["path"], "ex_ca_certs_path": front["ex_ca_certs_path"],
               "ex_marketplace_endpoint": front["ex_marketplace_endpoint"],
               "ex_pdisk_endpoint": front["ex_pdisk_endpoint"], "ex_keypairs_dir": str(tmp_path / "keys")}
    args = profile.copy()
    del args["driver"]
    args["secure"] = profile.get("secure", True)
    conn = get_driver(profile["driver"])(**args)
    pub = {"__pub_fun": "libcloud_compute.reboot_node", "__pub_jid": "20261201", "__pub_pid": 1, "__pub_tgt": "m"}

    location = next(loc for loc in conn.list_locations() if loc.id == front["host"])
    assert conn.list_sizes(location=location) and conn.list_images(location=location)
    # Salt's module has no create_node of its own (libcloud_compute.extra can call any method).
    key = conn.create_key_pair("salt-made")
    assert key.private_key and "PRIVATE KEY" in key.private_key
    node = conn.create_node(name="salted", size="t1.micro", image=conn.list_images()[0], ex_keyname="salt-made")
    try:
        node = wait_running(conn, node.id)
        found = [n for n in conn.list_nodes(**pub) if n.id == node.id]
        assert len(found) == 1 and conn.reboot_node(found[0], **pub)
        json.dumps([_simple_node(n) for n in conn.list_nodes()])  # plain types all through
        volume = conn.create_volume(1, "salt-volume", location, snapshot=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the server chooses the device
            assert conn.attach_volume(found[0], volume, device="/dev/vdb")
        assert conn.detach_volume(volume) and conn.destroy_volume(volume)
        imported = conn.import_key_pair_from_string("salt-imported", key.public_key)
        assert {"salt-made", "salt-imported"} <= {k.name for k in conn.list_key_pairs()}
        json.dumps({"name": imported.name, "fingerprint": imported.fingerprint, "extra": imported.extra})
        assert conn.delete_key_pair(conn.get_key_pair("salt-imported"))
        with pytest.raises(KeyPairNotFoundError):
            conn.get_key_pair("salt-imported")
        with pytest.raises(KeyPairExistsError):
            conn.create_key_pair("salt-made")
    finally:
        conn.destroy_node(node, **pub)


# -- StackStorm's Libcloud pack (actions/lib/actions.py) -----------------------------------


def test_stackstorm_positional_credentials_and_stub_objects(front, tmp_path, key_factory):
    cls = get_driver("stratuslab")
    extra_kwargs = {"host": front["host"], "port": int(front["port"]), "path": front["path"],
                    "ex_ca_certs_path": front["ex_ca_certs_path"],
                    "ex_marketplace_endpoint": front["ex_marketplace_endpoint"],
                    "ex_keypairs_dir": str(tmp_path / "keys")}
    driver = cls(*[front["key"], front["secret"]], region=None, **extra_kwargs)
    # import_public_ssh_key, then create_vm with ex_keyname among its keyword parameters
    imported = driver.import_key_pair_from_string(name="st2", key_material=key_factory("ed25519").public_line)
    assert imported.name == "st2"
    image = [i for i in driver.list_images() if i.id == driver.list_images()[0].id][0]
    size = NodeSize(id="t1.micro", name=None, ram=None, disk=None, bandwidth=None, price=None, driver=cls)
    location = NodeLocation(id=front["host"], name=None, country=None, driver=cls)
    node = driver.create_node(name="st2-vm", size=size, image=image, location=location, ex_keyname="st2")
    stub = Node(id=node.id, name=None, state=None, public_ips=None, private_ips=None, driver=driver)
    wait_running(driver, node.id)
    assert driver.ex_stop_node(node=stub) is True
    assert driver.destroy_node(node=stub) is True
