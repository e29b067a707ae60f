"""The local cloud listens on loopback only, by construction.

Whoever logs in to a VM's SSH guest runs commands on this machine, so no socket of the
cloud may be reachable from elsewhere: the HTTPS front needs an explicit flag (and then
warns) for any other address, the guests bind loopback addresses only, and a VM cannot
ask for an address outside the cloud's loopback networks.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import time
import xmlrpc.client

import pytest
from cryptography import x509
from libcloud.compute.base import NodeAuthSSHKey
from libcloud.compute.providers import get_driver

from stratuslab_lc_plugin.emulator import LocalCloud
from stratuslab_lc_plugin.emulator.guests import GuestManager

# tests/ is on sys.path (setup.cfg: [tool:pytest] pythonpath = tests).
from keys import key_factory  # noqa: F401 (pytest fixture)
from test_emulator_front import _serve, _wait_for_config
from test_emulator_one import NO_NETWORK, One, template

pytestmark = pytest.mark.timeout(120)


def machine_address() -> str:
    """A non-loopback IPv4 address of this machine, else one of TEST-NET-1."""
    try:
        with open("/proc/net/fib_trie") as handle:
            lines = handle.read().splitlines()
    except OSError:
        lines = []
    for previous, line in zip(lines, lines[1:]):
        if "/32 host LOCAL" in line:
            address = previous.split()[-1]
            if not ipaddress.ip_address(address).is_loopback:
                return address
    return "192.0.2.2"


def listening_addresses() -> list:
    """(address, port) of every TCP socket this process listens on, from /proc/net/tcp{,6}."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_address, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(packed)
            if width == 32 and address.ipv4_mapped:
                address = address.ipv4_mapped
            found.append((address, int(hex_port, 16)))
    return found


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with LocalCloud(state_dir=str(tmp_path_factory.mktemp("loopback")), delays=0.02,
                    users={"alice": "alice-pw"}) as running:
        yield running


def test_no_socket_of_the_cloud_listens_beyond_loopback(cloud, key_factory):
    driver = get_driver("stratuslab")("default", stratuslab_user_config=cloud.config_path)
    image = next(i for i in driver.list_images() if "ubuntu" in i.name)
    key = key_factory("ed25519")
    nodes = [driver.create_node(name="net-%s" % net, size="t1.micro", image=image,
                                auth=NodeAuthSSHKey(key.public_line), ex_network=net)
             for net in ("public", "local", "private")]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(
            [n for n in driver.list_nodes() if n.state == "running"]) < len(nodes):
        time.sleep(0.1)
    ports = {cloud.port} | {cloud.guests.port_of(int(n.id)) for n in nodes}
    assert None not in ports
    listening = listening_addresses()
    ours = [(a, p) for a, p in listening if p in ports]
    assert len(ours) >= 4  # the front and the three guests were really seen
    assert [(a, p) for a, p in listening if not a.is_loopback] == []


@pytest.mark.parametrize("nic", [
    'NIC = [ IP = "%s" ]' % machine_address(),                               # no network
    'NIC = [ network_uname=oneadmin, network = "public", IP = "%s" ]' % machine_address(),
    'NIC = [ IP = "127.0.0.1" ]',                                            # the front's
    'NIC = [ IP = "0.0.0.0" ]',
])
def test_an_address_outside_the_loopback_networks_is_refused_at_allocate(cloud, nic):
    alice = One(cloud, "alice", "alice-pw")
    before = alice.pool()[1].count("<VM>")
    assert alice.allocate(template(nic=nic)) == NO_NETWORK
    assert alice.pool()[1].count("<VM>") == before


def test_an_address_of_a_network_without_naming_it_takes_that_lease(cloud):
    alice = One(cloud, "alice", "alice-pw")
    vm_id = alice.new_vm(nic='NIC = [ IP = "127.2.3.4" ]')
    nic = alice.doc(vm_id).find("TEMPLATE/NIC")
    assert (nic.findtext("NETWORK"), nic.findtext("IP")) == ("local", "127.2.3.4")
    assert alice.allocate(template(nic='NIC = [ IP = "127.2.3.4" ]')) == NO_NETWORK  # taken


def test_a_guest_never_binds_beyond_loopback(tmp_path, key_factory):
    key = key_factory("ed25519")
    with GuestManager(str(tmp_path)) as guests:
        assert guests.vm_running(1, machine_address(), key.public_line, None) is None
        assert guests.port_of(1) is None
    assert [a for a, _ in listening_addresses() if not a.is_loopback] == []


@pytest.mark.parametrize("host", ["0.0.0.0", machine_address(), "::1", "example.org", ""])
def test_the_front_refuses_other_addresses_unless_allowed(host):
    with pytest.raises(ValueError, match="loopback|IPv4|not an IP"):
        LocalCloud(host=host)


def test_empty_passwords_are_refused():
    with pytest.raises(ValueError, match="empty password"):
        LocalCloud(users={"alice": "a", "bob": ""})


def test_serve_refuses_non_loopback_hosts_and_empty_passwords(tmp_path):
    for extra, expected in ((["--host", "0.0.0.0"], "--allow-non-loopback"),
                            (["--host", machine_address()], "not a loopback address"),
                            (["--user", "alice:"], "empty password")):
        process = _serve(str(tmp_path / "refused"), *extra)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 2 and expected in err, err
    assert not os.path.exists(tmp_path / "refused")


def test_serve_on_another_address_needs_the_flag_and_warns(tmp_path):
    address = machine_address()
    try:
        probe = socket.socket()
        probe.bind((address, 0))
        probe.close()
    except OSError:
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    state_dir = str(tmp_path / "exposed")
    process = _serve(state_dir, "--host", address, "--allow-non-loopback", "--user", "alice:pw")
    try:
        parser = _wait_for_config(process, os.path.join(state_dir, "stratuslab-user.cfg"))
        endpoint = parser.get("local", "endpoint")
        assert endpoint.startswith("https://%s:" % address)
        # The certificate names the address, so clients elsewhere can verify it.
        context = ssl.create_default_context(cafile=parser.get("local", "ca_certs_path"))
        proxy = xmlrpc.client.ServerProxy(
            endpoint.replace("https://", "https://alice:pw@").replace("/one-proxy/", "/one-proxy/pswd/"),
            context=context)
        assert proxy.one.vmpool.info("s", -3, -1, -1, -1)[0] is True
        with open(os.path.join(state_dir, "tls", "server.pem"), "rb") as handle:
            names = x509.load_pem_x509_certificate(handle.read()).extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
        assert ipaddress.ip_address(address) in names
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert "WARNING" in err and "runs commands on this" in err and address in err
    assert process.returncode == 0
