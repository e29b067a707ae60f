"""The driver on Libcloud's own contract, against the local cloud over real sockets.

What code written by others leans on: ownership (a driver acts on its own VMs only), the
Connection contract (``driver.connection``, ``user_agent_append``, proxies, ``conn_class``),
``libcloud.security``, the constructor's positional arguments, Libcloud's exception classes,
``wait_until_running``'s signature and ``attach_volume``'s ``device``.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading
import time
import warnings

import libcloud.security
import pytest
from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError, LibcloudError, MalformedResponseError, ProviderError
from libcloud.common.types import ServiceUnavailableError as LibcloudServiceUnavailableError
from libcloud.compute.base import Node, NodeLocation, StorageVolume
from libcloud.compute.drivers.dummy import DummyNodeDriver
from libcloud.compute.providers import get_driver
from libcloud.compute.types import DeploymentError, KeyPairDoesNotExistError, KeyPairError, NodeState
from libcloud.test import MockHttp

from stratuslab_lc_plugin import __version__, errors
from stratuslab_lc_plugin.driver import StratusLabNodeDriver
from stratuslab_lc_plugin.errors import ServiceUnavailableError, StratusLabError
from tests.conftest import LOCATION
from tests.netkit import ConnectProxy, Hostile

pytestmark = pytest.mark.timeout(120)

Driver = get_driver("stratuslab")


def wait_running(driver, node, timeout=30.0):
    ((fresh, _),) = driver.wait_until_running([node], wait_period=0.05, timeout=timeout)
    return fresh


@pytest.fixture
def two_locations(write_config):
    """One driver over two locations (alpha, beta) of the shared cloud."""
    path = write_config("[default]\nselected_section = alpha\n[alpha]" + LOCATION + "[beta]" + LOCATION)
    with Driver("default", stratuslab_user_config=path) as driver:
        yield driver


@pytest.fixture
def cleanup():
    made = []
    yield made
    for item in made:
        try:
            item.destroy()
        except LibcloudError:
            pass


def vm_ids(driver, location=None):
    return {n.id for n in driver.list_nodes(ex_location=location)}


# -- ownership: never act on the wrong VM ----------------------------------------------------


def test_a_node_of_another_driver_type_is_refused_and_nothing_is_destroyed(driver, cleanup):
    ours = driver.create_node(name="mine", size="t1.micro", image=driver.list_images()[0])
    cleanup.append(ours)
    dummy = DummyNodeDriver(0).list_nodes()[1]
    dummy.id = ours.id  # even with the id of one of our VMs
    for action in (driver.destroy_node, driver.reboot_node, driver.stop_node, driver.start_node,
                   driver.ex_suspend_node, driver.ex_shutdown_node):
        with pytest.raises(ValueError, match="belongs to a Dummy Node Provider driver.*nothing was sent"):
            action(dummy)
    assert ours.id in vm_ids(driver)


def test_a_bare_node_needs_its_location_when_there_are_several(two_locations, cleanup):
    beta_vm = two_locations.create_node(name="in-beta", size="t1.micro", image=two_locations.list_images()[0],
                                        location="beta")
    cleanup.append(beta_vm)
    alpha_before = vm_ids(two_locations, "alpha")
    bare = Node(id=beta_vm.id, name=None, state=None, public_ips=[], private_ips=[], driver=two_locations)
    with pytest.raises(ValueError, match=r"does not say which location.*2 \(alpha, beta\).*ex_location"):
        two_locations.destroy_node(bare)
    assert vm_ids(two_locations, "alpha") == alpha_before
    assert beta_vm.id in vm_ids(two_locations, "beta")
    with pytest.raises(ValueError, match="is in location beta, not alpha"):
        two_locations.destroy_node(beta_vm, ex_location="alpha")
    assert two_locations.destroy_node(bare, ex_location=NodeLocation("beta", "beta", "", two_locations))
    cleanup.clear()


def test_with_one_location_a_bare_node_works(driver, cleanup):
    node = driver.create_node(name="bare", size="t1.micro", image=driver.list_images()[0])
    cleanup.append(node)
    bare = Node(id=node.id, name=None, state=None, public_ips=[], private_ips=[], driver=driver)
    wait_running(driver, bare)
    assert bare.state == NodeState.RUNNING  # the given node was updated
    assert driver.destroy_node(bare)
    cleanup.clear()


def test_another_stratuslab_driver_of_another_account_is_refused(driver, write_config, cleanup):
    node = driver.create_node(name="owned", size="t1.micro", image=driver.list_images()[0])
    cleanup.append(node)
    location = node.extra["location"]
    path = write_config("[default]\nselected_section = %s\n[%s]" % (location, location)
                        + LOCATION.replace("username = {user}", "username = someone-else"))
    other = Driver("default", stratuslab_user_config=path)
    with pytest.raises(ValueError, match="another StratusLab driver.*nothing was sent"):
        other.destroy_node(node)
    same = Driver("default", stratuslab_user_config=driver.config.source)
    assert node.id in vm_ids(same)  # a driver of the same cloud and account may act on it


@pytest.mark.parametrize("node_id", ["7; rm -rf /", "-1", "1.5", "", "0x10", "99999999999"])
def test_ids_that_are_not_vm_numbers_are_refused(driver, node_id):
    node = Node(id=node_id, name="x", state=None, public_ips=[], private_ips=[], driver=driver)
    with pytest.raises(ValueError, match="not a StratusLab node id"):
        driver.destroy_node(node)


def test_volumes_of_others_and_bad_ids_are_refused(driver, two_locations):
    dummy_volume = StorageVolume(id="9c5a2c03-8243-4a1b-a248-0f0d22d948c2", name="v", size=1, driver=DummyNodeDriver(0))
    with pytest.raises(ValueError, match="belongs to a Dummy Node Provider driver"):
        driver.destroy_volume(dummy_volume)
    with pytest.raises(ValueError, match="not a StratusLab volume id"):
        driver.destroy_volume(StorageVolume(id="../../etc", name="v", size=1, driver=driver))
    bare = StorageVolume(id="9c5a2c03-8243-4a1b-a248-0f0d22d948c2", name="v", size=1, driver=two_locations)
    with pytest.raises(ValueError, match="does not say which location.*ex_location"):
        two_locations.destroy_volume(bare)
    with pytest.raises(TypeError, match="must be a Libcloud StorageVolume"):
        driver.destroy_volume("9c5a2c03-8243-4a1b-a248-0f0d22d948c2")


# -- Libcloud's connection contract ---------------------------------------------------------


def test_driver_connection_is_the_default_locations_compute_connection(driver):
    connection = driver.connection
    assert isinstance(connection, StratusLabNodeDriver.connectionCls)
    assert connection.driver is driver
    assert (connection.location_id, connection.service) == (driver.config.default_location, "compute")
    assert connection.host == "127.0.0.1" and connection.secure
    assert driver.list_nodes() is not None
    assert driver.connection.connection is not None  # it was the connection used


def test_user_agent_names_the_driver_and_carries_appended_tokens(cloud, tmp_path):
    import libcloud

    with Hostile(cloud) as server:
        server.rpc("one.vmpool.info", [True, "<VM_POOL></VM_POOL>", 0])
        server.set("pdisk GET", "[]", Content_Type="application/json")
        server.set("marketplace", "<metadata></metadata>", Content_Type="application/xml")
        path = tmp_path / "ua.cfg"
        path.write_text("[default]\nendpoint = %s/one-proxy/xmlrpc\nmarketplace_endpoint = %s/marketplace\n"
                        "username = u\npassword = p\nca_certs_path = %s\n" % (server.url, server.url, cloud.ca_path))
        path.chmod(0o600)
        driver = Driver("default", stratuslab_user_config=str(path))
        driver.connection.user_agent_append("x/1")
        driver.list_nodes()
        driver.list_volumes()
        driver.list_images()
    agents = {key: headers.get("User-Agent") for key, _, _, headers in server.seen}
    expected = "libcloud/%s (StratusLab) stratuslab-lc-plugin/%s (x/1)" % (libcloud.__version__, __version__)
    assert agents == {"one.vmpool.info": expected, "pdisk GET": expected, "marketplace": expected}


def test_proxy_url_sends_every_service_through_the_proxy(cloud, driver):
    with ConnectProxy() as proxy:
        proxied = Driver("default", stratuslab_user_config=cloud.config_path, proxy_url=proxy.url)
        proxied.list_nodes()
        proxied.list_volumes()
        proxied.list_images()
        port = int(cloud.url.rsplit(":", 1)[1])
        assert len(proxy.tunnels) >= 3  # one connection per service (keep-alive within each)
        assert set(proxy.tunnels) == {("127.0.0.1", port)}


def test_set_http_proxy_takes_effect_for_every_connection(cloud):
    with ConnectProxy("me:s3cret") as proxy:
        driver = Driver("default", stratuslab_user_config=cloud.config_path)
        driver.list_nodes()
        assert proxy.tunnels == []
        driver.connection.set_http_proxy(proxy.url.replace("http://", "http://me:s3cret@"))
        driver.list_nodes()
        driver.list_volumes()
        assert len(proxy.tunnels) == 2 and proxy.refused == 0
        driver.connection.set_http_proxy(None)
        driver.list_nodes()
        assert len(proxy.tunnels) == 2


class OneMock(MockHttp):
    """Answers one.vmpool.info of a location that does not exist on any network."""

    def _one_proxy_pswd_xmlrpc(self, method, url, body, headers):
        import xmlrpc.client

        assert b"one.vmpool.info" in body
        pool = ("<VM_POOL><VM><ID>42</ID><UID>0</UID><GID>0</GID><UNAME>mock</UNAME><GNAME>g</GNAME>"
                "<NAME>mocked</NAME><STATE>3</STATE><LCM_STATE>3</LCM_STATE><STIME>0</STIME><ETIME>0</ETIME>"
                "<TEMPLATE></TEMPLATE></VM></VM_POOL>")
        answer = xmlrpc.client.dumps(([True, pool, 0],), methodresponse=True)
        return 200, answer, {"Content-Type": "text/xml"}, "OK"


def test_mockhttp_on_connection_class_intercepts(tmp_path, monkeypatch):
    config = tmp_path / "mock.cfg"
    config.write_text("[default]\nendpoint = https://cloud.invalid/one-proxy/xmlrpc\nusername = u\npassword = p\n")
    config.chmod(0o600)
    monkeypatch.setattr(StratusLabNodeDriver.connectionCls, "conn_class", OneMock)
    driver = Driver("default", stratuslab_user_config=str(config))
    (node,) = driver.list_nodes()
    assert (node.id, node.name, node.state) == ("42", "mocked", NodeState.RUNNING)


def test_libcloud_positional_and_ansible_style_constructors(cloud, write_config):
    path = write_config("[default]\nselected_section = local\n[local]" + LOCATION)
    positional = Driver("local", "x", True, "", 443, stratuslab_user_config=path)
    assert positional.list_nodes() is not None
    named = Driver("local", secret="x", host="", port=443, stratuslab_user_config=path)
    assert named.connection.host == "127.0.0.1"  # not the empty host, not port 443
    ansible = Driver(key="local", secret="x", secure=True, host="ignored.example", path="/x",
                     stratuslab_user_config=path)
    assert ansible.list_nodes() is not None
    assert (ansible.key, ansible.secret) == ("local", "x")


def test_timeout_none_means_libclouds_default(cloud):
    import libcloud.http

    driver = Driver("default", stratuslab_user_config=cloud.config_path, timeout=None)
    assert driver.connection.timeout == libcloud.http.DEFAULT_REQUEST_TIMEOUT
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        Driver("default", stratuslab_user_config=cloud.config_path, timeout=0)


# -- libcloud.security, as for Libcloud's own drivers ---------------------------------------


@pytest.fixture
def no_ca_config(write_config):
    return write_config("[default]\nselected_section = n\n[n]" + LOCATION.replace("ca_certs_path = {ca}", ""))


def libclouds_own_connection_works(url: str) -> bool:
    """Whether a plain Libcloud Connection (as its own drivers use) verifies ``url``."""
    from libcloud.common.base import Connection

    connection = Connection(url=url, timeout=10)
    connection.connect()
    try:
        connection.request("/marketplace/metadata")
        return True
    except Exception as exc:  # noqa: BLE001 - any TLS failure means "does not verify"
        return "certificate" not in str(exc).lower() and "ssl" not in str(exc).lower()


def driver_works(path: str) -> bool:
    try:
        Driver("default", stratuslab_user_config=path).list_images()
        return True
    except ServiceUnavailableError as exc:
        assert "TLS failure" in str(exc) and "ca_certs_path" in str(exc)  # what to set, too
        return False


def test_ca_certs_path_of_libcloud_security_is_used_without_ca_certs_path(cloud, no_ca_config, monkeypatch):
    monkeypatch.setattr(libcloud.security, "CA_CERTS_PATH", libcloud.security.CA_CERTS_PATH)
    assert not driver_works(no_ca_config) and not libclouds_own_connection_works(cloud.url)
    libcloud.security.CA_CERTS_PATH = cloud.ca_path
    assert driver_works(no_ca_config) and libclouds_own_connection_works(cloud.url)


def test_verify_ssl_cert_false_with_libclouds_warning(cloud, no_ca_config, monkeypatch):
    monkeypatch.setattr(libcloud.security, "VERIFY_SSL_CERT", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert driver_works(no_ca_config)
    assert any(libcloud.security.VERIFY_SSL_DISABLED_MSG in str(w.message) for w in caught)


def test_a_locations_own_settings_win(cloud, write_config, monkeypatch, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_text(open(libcloud.security.CA_CERTS_PATH).read() if libcloud.security.CA_CERTS_PATH else "")
    monkeypatch.setattr(libcloud.security, "VERIFY_SSL_CERT", False)
    wrong_ca = write_config("[default]\nselected_section = w\n[w]"
                            + LOCATION.replace("ca_certs_path = {ca}", "ca_certs_path = %s" % other_ca))
    assert not driver_works(wrong_ca)  # ca_certs_path wins over VERIFY_SSL_CERT = False
    monkeypatch.setattr(libcloud.security, "VERIFY_SSL_CERT", True)
    unverified = write_config("[default]\nselected_section = u\n[u]"
                              + LOCATION.replace("ca_certs_path = {ca}", "verify_ssl = false"))
    with pytest.warns(UserWarning, match="not verified for location u"):
        assert driver_works(unverified)


SSL_CERT_FILE_CHECK = """
import json, sys
import stratuslab_lc_plugin
from libcloud.compute.providers import get_driver
from libcloud.common.base import Connection
ok = {}
try:
    get_driver("stratuslab")("default", stratuslab_user_config=sys.argv[1]).list_images()
    ok["driver"] = True
except Exception as exc:
    ok["driver"] = "TLS failure" not in str(exc) and repr(exc)
c = Connection(url=sys.argv[2], timeout=10)
c.connect()
try:
    c.request("/marketplace/metadata")
    ok["libcloud"] = True
except Exception as exc:
    ok["libcloud"] = False
print(json.dumps(ok))
"""


@pytest.mark.parametrize("variable, works", [("SSL_CERT_FILE", True), ("REQUESTS_CA_BUNDLE", False)])
def test_environment_ca_files_as_for_libclouds_own_drivers(cloud, no_ca_config, variable, works):
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    env[variable] = cloud.ca_path
    out = subprocess.run([sys.executable, "-c", SSL_CERT_FILE_CHECK, no_ca_config, cloud.url], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"driver": works, "libcloud": works}


# -- errors ---------------------------------------------------------------------------------


LIBCLOUD_BASES = {
    "StratusLabError": (LibcloudError,),
    "ConfigurationError": (LibcloudError, ValueError),
    "SSHKeyError": (LibcloudError, ValueError),
    "ServiceError": (ProviderError, BaseHTTPError),
    "AuthenticationError": (InvalidCredsError, ProviderError, BaseHTTPError),
    "AccessDeniedError": (InvalidCredsError, ProviderError, BaseHTTPError),
    "NotFoundError": (ProviderError, BaseHTTPError),
    "InvalidStateError": (ProviderError, BaseHTTPError),
    "InUseError": (ProviderError, BaseHTTPError),
    "RedirectRefusedError": (ProviderError, BaseHTTPError),
    "ServiceUnavailableError": (LibcloudServiceUnavailableError, ProviderError, BaseHTTPError),
    "ProtocolError": (MalformedResponseError, ProviderError, BaseHTTPError),
    "ScriptFailedError": (LibcloudError,),
    "KeyPairNotFoundError": (KeyPairDoesNotExistError, KeyPairError),
    "KeyPairExistsError": (KeyPairError,),
    "NodeDeploymentError": (DeploymentError,),
}


def test_every_public_exception_is_the_matching_libcloud_one():
    assert set(errors.__all__) == set(LIBCLOUD_BASES)
    for name, bases in LIBCLOUD_BASES.items():
        cls = getattr(errors, name)
        assert issubclass(cls, bases), name


@pytest.mark.parametrize("name", [n for n in errors.__all__ if n not in ("NodeDeploymentError", "ScriptFailedError")])
def test_value_message_and_str_stay_one_text(name):
    cls = getattr(errors, name)
    error = cls("loc: it broke", name="k") if name.startswith("KeyPair") else cls("loc: it broke")
    error.add_detail("; and more")
    assert str(error) == error.value == error.message == error.args[0] == "loc: it broke; and more"
    assert repr(error) == "<%s: loc: it broke; and more>" % name
    if isinstance(error, ProviderError):
        assert error.http_code in (None, 401, 403, 503)


def test_remote_errors_carry_location_operation_code_and_http_code(driver):
    with pytest.raises(errors.NotFoundError) as caught:
        driver.ex_get_node("987654")
    error = caught.value
    assert (error.location, error.operation, error.code, error.http_code) == (
        driver.config.default_location, "one.vm.info", 0x0400, 200)
    assert error.remote_message and error.remote_message in str(error)
    with pytest.raises(errors.NotFoundError) as caught:
        driver.ex_get_volume("00000000-0000-4000-8000-000000000000")
    assert (caught.value.code, caught.value.http_code, caught.value.operation) == (404, 404, "get_volume")


def test_wait_until_running_takes_what_libclouds_takes(driver, cleanup):
    image = driver.list_images()[0]
    nodes = [driver.create_node(name="w%d" % i, size="t1.micro", image=image) for i in range(2)]
    cleanup.extend(nodes)
    # A generator and positional arguments, as the base class's signature allows.
    result = driver.wait_until_running((n for n in nodes), 0.05, 60, "public_ips", True, None)
    assert [n.id for n, _ in result] == [n.id for n in nodes]
    assert all(ips for _, ips in result)
    assert all(n.state == NodeState.RUNNING and n.public_ips for n in nodes)  # updated in place
    signature = inspect.signature(StratusLabNodeDriver.wait_until_running)
    base = inspect.signature(libcloud.compute.base.NodeDriver.wait_until_running)
    ours, theirs = list(signature.parameters), list(base.parameters)
    assert ours[:len(theirs)] == theirs  # Libcloud's parameters, in Libcloud's order
    assert all(name.startswith("ex_") for name in ours[len(theirs):])


def test_wait_until_running_stops_at_once_for_a_destroyed_node(driver):
    node = driver.create_node(name="gone", size="t1.micro", image=driver.list_images()[0])
    driver.destroy_node(node)
    started = time.monotonic()
    with pytest.raises(StratusLabError, match="^local: wait_until_running: node %s: (it disappeared|it entered state"
                                              " terminated)" % node.id):
        driver.wait_until_running([node], wait_period=0.05, timeout=600)
    assert time.monotonic() - started < 60  # not the 600 s timeout


def test_wait_until_running_shows_each_poll_and_lets_the_caller_give_up(driver, cleanup):
    node = driver.create_node(name="watched", size="t1.micro", image=driver.list_images()[0])
    cleanup.append(node)
    seen = []

    class GiveUp(Exception):
        pass

    def on_poll(fresh):
        seen.append(fresh.id)
        raise GiveUp

    with pytest.raises(GiveUp):  # unchanged, not wrapped
        driver.wait_until_running([node], wait_period=0.01, timeout=600, ex_on_poll=on_poll)
    assert seen == [node.id]
    states = []
    driver.wait_until_running([node], wait_period=0.01, timeout=600,
                              ex_on_poll=lambda fresh: states.append(fresh.state))
    assert states[-1] == NodeState.RUNNING and node.state == NodeState.RUNNING


def test_attach_volume_accepts_a_device_and_says_which_one_the_server_chose(driver, cleanup):
    node = driver.create_node(name="attach", size="t1.micro", image=driver.list_images()[0])
    cleanup.append(node)
    wait_running(driver, node)
    volume = driver.create_volume(1, "with-device")
    with pytest.warns(UserWarning, match="chose device vdz .* not /dev/vdb") as caught:
        assert driver.attach_volume(node, volume, device="/dev/vdb")
    assert [w.filename for w in caught] == [__file__]  # the caller's line, not the driver's
    assert volume.extra["device"] == "vdz"
    driver.detach_volume(volume)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert driver.attach_volume(node, volume, "/dev/vdz")  # what the server chooses: no warning
    driver.detach_volume(volume)
    driver.destroy_volume(volume)


def test_close_stops_the_worker_threads(two_locations):
    def workers():
        return [t for t in threading.enumerate() if t.name.startswith("stratuslab-alpha")]

    two_locations.list_nodes()
    assert workers()
    two_locations.close()
    assert not workers()
    assert two_locations.list_nodes() is not None  # still usable: threads are made again
    two_locations.close()
