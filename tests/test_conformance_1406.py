"""The original StratusLab 14.06 software, unchanged, against the local cloud.

The local cloud is only useful if code that works against it works against a real
StratusLab 14.06 site. The best witness available is the original Python 2.7 client and
Libcloud driver: here they run in a Python 2.7 interpreter (``tests/legacy``) against a
local cloud over verified HTTPS, and every call is checked against what the cloud then
holds (ONE documents, pdisk records), read directly over the cloud's own protocols.

Skipped, with the reason, when Python 2.7 or the 14.06 packages cannot be had (no
interpreter, no access to the package index); ``STRATUSLAB_REQUIRE_LEGACY=1`` turns that
skip into a failure, for CI.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Callable, Dict, List, Optional

import pytest

from legacy import harness

pytestmark = pytest.mark.timeout(300)

TTYLINUX = "BN1EEkPiBx87_uLj2-sdybSI-Xb"
USERS = {"alice": "s3cr%t:pa ss", "bob": "b0b-pass"}
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
DCTERMS = "{http://purl.org/dc/terms/}"
#: libcloud 0.14 NodeState names, lower case (see old_driver.py)
RUNNING, PENDING, TERMINATED, UNKNOWN = "running", "pending", "terminated", "unknown"
BUILTIN_SIZES = {
    "t1.micro": (1, 512, 512), "m1.small": (1, 1536, 1536), "m1.medium": (1, 3072, 3072),
    "m1.large": (2, 6144, 6144), "m1.xlarge": (4, 8192, 8192), "c1.medium": (2, 1536, 1536),
    "c1.xlarge": (4, 6144, 6144),
}
#: seconds per life-cycle step: short, and each state still observable
DELAY = 0.05


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cloud(legacy, tmp_path_factory):
    from stratuslab_lc_plugin.emulator import LocalCloud

    state_dir = tmp_path_factory.mktemp("conformance-cloud")
    with LocalCloud(state_dir=str(state_dir), delays=DELAY, users=USERS, guests=False) as running:
        yield running


@pytest.fixture(scope="module")
def neighbour(cloud) -> int:
    """Bob's VM, made before any other: VM ids start at 0, and 14.06 turns a created node
    id 0 into None (libcloud 0.14's Node does ``str(id) if id else None``), a client bug
    that a real, long-running site never showed. It also shows that users stay apart."""
    vm_id = client(cloud, "bob").one(
        "vm.allocate", harness.vm_template(harness.localhost_url(cloud.url), TTYLINUX, "neighbour"))
    assert vm_id == 0
    return vm_id


def client(cloud, user: str) -> harness.CloudClient:
    return harness.CloudClient(cloud.url, cloud.ca_path, user, USERS[user])


@pytest.fixture(scope="module")
def alice(cloud):
    return client(cloud, "alice")


@pytest.fixture(scope="module")
def config(cloud, tmp_path_factory):
    """A 14.06-style file: two locations of the same cloud (alice, bob), a user-defined
    instance type, the cloud's public key as default key, ``localhost`` URLs."""
    url = harness.localhost_url(cloud.url)
    path = tmp_path_factory.mktemp("conformance-config") / "stratuslab-user.cfg"
    return harness.write_config(
        str(path),
        [harness.Section("local", url, "alice", USERS["alice"], title="Local StratusLab cloud",
                         country="ZZ"),
         harness.Section("other", url, "bob", USERS["bob"])],
        selected="local",
        defaults={"user_public_key_file": cloud.public_key_path},
        instance_types={"conf.tiny": (1, 256, 128)},
    )


@pytest.fixture(scope="module")
def old(legacy, cloud, config, neighbour):
    with legacy.driver(config, cloud.ca_path) as driver:
        yield driver


@pytest.fixture
def stratus(legacy, cloud, config, neighbour):
    """``stratus("describe-instance", "-n")`` runs the 14.06 command with ``-c CONFIG``."""

    def run(command: str, *args: str):
        return legacy.stratus(command, ["-c", config, *args], cloud.ca_path)

    return run


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

def wait_for(what: str, probe: Callable[[], object], timeout: float = 15.0, every: float = 0.05):
    """Poll ``probe`` until it returns something true; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for %s (last: %r)" % (what, value))
        time.sleep(every)


class Vm:
    """The parts of a ONE VM document the checks read."""

    def __init__(self, xml_text: str) -> None:
        self.root = ET.fromstring(xml_text)

    def text(self, path: str) -> Optional[str]:
        element = self.root.find(path)
        return None if element is None else element.text

    @property
    def state(self) -> tuple:
        return int(self.text("STATE")), int(self.text("LCM_STATE"))

    def disks(self) -> List[Dict[str, str]]:
        return [{child.tag: child.text for child in disk} for disk in self.root.findall("TEMPLATE/DISK")]

    def context(self) -> Dict[str, str]:
        return {child.tag: child.text for child in self.root.find("TEMPLATE/CONTEXT")}


def vm(cloud_client: harness.CloudClient, vm_id) -> Vm:
    return Vm(cloud_client.one("vm.info", int(vm_id)))


def vm_state(cloud_client: harness.CloudClient, vm_id) -> tuple:
    return vm(cloud_client, vm_id).state


ACTIVE_RUNNING, SUSPENDED, DONE = (3, 3), 5, 6


def ok(done) -> str:
    """The stdout of a finished 14.06 command, failing with its output when it failed."""
    assert done.returncode == 0, "exit %s\nstdout:\n%s\nstderr:\n%s" % (
        done.returncode, done.stdout, done.stderr)
    return done.stdout


def describe_rows(text: str) -> Dict[str, List[str]]:
    """``stratus-describe-instance`` table -> {vm id: [state, vcpu, memory, cpu%, host/ip, name]}."""
    rows = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0].isdigit():
            rows[fields[0]] = fields[1:]
    return rows


def describe_volumes(text: str) -> Dict[str, Dict[str, str]]:
    """``stratus-describe-volumes`` output -> {uuid: {key: value}}."""
    volumes: Dict[str, Dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith(":: DISK "):
            current = volumes.setdefault(line.split()[-1], {})
        elif current is not None and ":" in line:
            key, _, value = line.strip().partition(":")
            current[key.strip()] = value.strip()
    return volumes


def marketplace_ids(cloud) -> set:
    import ssl
    import urllib.request

    request = urllib.request.Request(cloud.url + "/marketplace/metadata",
                                     headers={"Accept": "application/xml"})
    context = ssl.create_default_context(cafile=cloud.ca_path)
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        root = ET.fromstring(response.read())
    return {d.find(DCTERMS + "identifier").text for d in root.iter(RDF + "Description")
            if d.find(DCTERMS + "identifier") is not None}


def public_key_text(cloud) -> str:
    with open(cloud.public_key_path) as handle:
        return handle.read().strip()


def fresh_public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode("ascii") + " conformance@example.org"


# ---------------------------------------------------------------------------------------
# the 14.06 Libcloud driver
# ---------------------------------------------------------------------------------------

def test_list_locations(old):
    locations = {loc["id"]: loc for loc in old.call("list_locations")}
    assert old.default_location == "local"
    assert locations == {
        "local": {"id": "local", "name": "Local StratusLab cloud", "country": "ZZ"},
        "other": {"id": "other", "name": "other", "country": "unknown"},
    }


def test_list_sizes(old):
    sizes = {s["id"]: (s["cpu"], s["ram"], s["disk"]) for s in old.call("list_sizes")}
    assert sizes == dict(BUILTIN_SIZES, **{"conf.tiny": (1, 256, 128)})


def test_list_images_is_the_cloud_marketplace(old, cloud):
    answer = old.answer("list_images")
    images = answer["result"]
    # The 14.06 driver prints a failure and returns [] (lcdrv _get_marketplace_images).
    assert images, "list_images returned nothing; the 14.06 driver printed: %r" % answer["output"]
    assert {image["id"] for image in images} == marketplace_ids(cloud)
    by_id = {image["id"]: image["name"] for image in images}
    assert by_id[TTYLINUX].startswith("A 32-bit ttylinux")


def test_node_life_cycle(old, alice, cloud, neighbour):
    key = fresh_public_key()
    node = old.call("create_node", name="conformance-node", size="m1.small", image=TTYLINUX,
                    public_key=key)
    node_id = int(node["id"])
    assert node_id != neighbour
    assert node["location"] == "local"

    # What the cloud holds is what 14.06 asked for.
    created = vm(alice, node_id)
    assert created.text("NAME") == "conformance-node"
    assert created.text("UNAME") == "alice"
    assert (created.text("TEMPLATE/CPU"), created.text("TEMPLATE/VCPU"),
            created.text("TEMPLATE/MEMORY")) == ("1", "1", "1536")
    disks = created.disks()
    assert disks[0]["SOURCE"] == harness.localhost_url(cloud.url) + "/marketplace/metadata/" + TTYLINUX
    assert any(d.get("TYPE") == "swap" and d.get("SIZE") == "1536" for d in disks)
    assert created.context()["PUBLIC_KEY"].strip() == key
    assert node["public_ips"] == [created.text("TEMPLATE/NIC/IP")]
    assert node["public_ips"][0].startswith("127.1.")

    # node.state asks the cloud each time: pending/starting, then running.
    assert old.call("node_state", node=node["handle"]) in (PENDING, RUNNING)
    wait_for("node.state running", lambda: old.call("node_state", node=node["handle"]) == RUNNING)
    assert vm_state(alice, node_id) == ACTIVE_RUNNING

    # list_nodes covers every location, each with its own user's VMs.
    listed = {(n["location"], n["id"]): n for n in old.call("list_nodes", with_state=True)}
    mine = listed[("local", str(node_id))]
    assert mine["name"] == "conformance-node"
    assert mine["state"] == RUNNING
    assert mine["public_ips"] == node["public_ips"]
    assert mine["image"] == TTYLINUX
    assert (int(mine["size"]["cpu"]), int(mine["size"]["ram"]), int(mine["size"]["disk"])) == (1, 1536, 1536)
    assert ("other", str(neighbour)) in listed
    assert ("local", str(neighbour)) not in listed
    assert ("other", str(node_id)) not in listed

    # A state the 14.06 driver does not map reads as unknown, and back.
    alice.one("vm.action", "suspend", node_id)
    wait_for("VM suspended in the cloud", lambda: vm_state(alice, node_id)[0] == SUSPENDED)
    assert old.call("node_state", node=node["handle"]) == UNKNOWN
    alice.one("vm.action", "resume", node_id)
    wait_for("node.state running again", lambda: old.call("node_state", node=node["handle"]) == RUNNING)

    assert old.call("destroy_node", node=node["handle"]) is True
    wait_for("VM done in the cloud", lambda: vm_state(alice, node_id)[0] == DONE)
    assert old.call("node_state", node=node["handle"]) == TERMINATED
    assert ("local", str(node_id)) not in {(n["location"], n["id"]) for n in old.call("list_nodes")}


def test_create_node_with_the_configured_key_in_another_location(old, cloud):
    bob = client(cloud, "bob")
    node = old.call("create_node", name="bob-node", size="conf.tiny", image=TTYLINUX, location="other")
    assert node["location"] == "other"
    created = vm(bob, node["id"])
    assert created.text("UNAME") == "bob"
    assert created.text("TEMPLATE/MEMORY") == "256"
    assert created.context()["PUBLIC_KEY"].strip() == public_key_text(cloud)
    assert any(d.get("TYPE") == "swap" and d.get("SIZE") == "128" for d in created.disks())
    wait_for("bob's node running", lambda: old.call("node_state", node=node["handle"]) == RUNNING)
    assert old.call("destroy_node", node=node["handle"]) is True
    wait_for("bob's VM done", lambda: vm_state(bob, node["id"])[0] == DONE)


def test_volume_life_cycle(old, alice):
    volume = old.call("create_volume", size=2, name="conformance-vol")
    uuid = volume["id"]
    status, disk = alice.pdisk("GET", "disks/%s/" % uuid)
    assert status == 200
    assert (disk["owner"], disk["size"], disk["tag"], disk["visibility"], disk["count"]) == (
        "alice", "2", "conformance-vol", "PRIVATE", "0")

    listed = {v["id"]: v for v in old.call("list_volumes")}
    assert listed[uuid]["name"] == "conformance-vol"
    assert listed[uuid]["size"] == 2

    node = old.call("create_node", name="with-volume", size="t1.micro", image=TTYLINUX)
    wait_for("node running", lambda: old.call("node_state", node=node["handle"]) == RUNNING)
    host = vm(alice, node["id"]).text("HISTORY_RECORDS/HISTORY/HOSTNAME")
    assert host and old.call("node_host", node=node["handle"]) == host

    attached = old.call("attach_volume", node=node["handle"], volume=uuid)
    assert attached["result"] is True and attached["volume"]["node"] == node["id"]
    status, mounts = alice.pdisk("GET", "disks/%s/mounts/" % uuid)
    assert status == 200
    assert [str(m["vmId"]) for m in mounts] == [node["id"]]
    assert alice.pdisk("GET", "disks/%s/" % uuid)[1]["count"] == "1"

    detached = old.call("detach_volume", volume=uuid)
    assert detached["result"] is True and detached["volume"]["node"] is None
    assert alice.pdisk("GET", "disks/%s/" % uuid)[1]["count"] == "0"

    assert old.call("destroy_volume", volume=uuid) is True
    assert alice.pdisk("GET", "disks/%s/" % uuid)[0] == 404
    assert uuid not in {v["id"] for v in old.call("list_volumes")}
    assert old.call("destroy_node", node=node["handle"]) is True


def test_old_driver_reports_cloud_errors(old):
    # pdisk refuses sizes outside 1..1024 GiB (400); 14.06 raises with the server's message.
    with pytest.raises(harness.LegacyCallError) as failure:
        old.call("create_volume", size=4096, name="too-big")
    assert "1024" in failure.value.error


# ---------------------------------------------------------------------------------------
# the 14.06 stratus-* commands
# ---------------------------------------------------------------------------------------

def test_run_describe_kill_instance(stratus, alice, neighbour, tmp_path):
    ids_file = tmp_path / "ids"
    key_file = tmp_path / "key.pub"
    key_file.write_text(fresh_public_key() + "\n")
    out = ok(stratus("run-instance", "-t", "c1.medium", "--vm-name", "cli-node", "-o", str(ids_file),
                     "-k", str(key_file), "--context", "COLOUR=blue#SIZE_HINT=7", "--volatile-disk", "3",
                     TTYLINUX))
    vm_id = ids_file.read_text().strip()
    assert "Machine 1 (vm ID: %s)" % vm_id in out
    created = vm(alice, vm_id)
    assert (created.text("NAME"), created.text("TEMPLATE/CPU"), created.text("TEMPLATE/MEMORY")) == (
        "cli-node", "2", "1536")
    context = created.context()
    assert (context["COLOUR"], context["SIZE_HINT"]) == ("blue", "7")
    assert context["PUBLIC_KEY"].strip() == key_file.read_text().strip()
    assert any(d.get("TYPE") == "fs" and d.get("SIZE") == "3072" for d in created.disks())
    ip = created.text("TEMPLATE/NIC/IP")
    assert "Public ip: %s" % ip in out

    def described_state():
        rows = describe_rows(ok(stratus("describe-instance", vm_id)))
        return rows.get(vm_id, ["?"])[0] == "Running" and rows[vm_id]

    row = wait_for("describe-instance Running", described_state)
    assert row[-2:] == [ip, "cli-node"]
    listing = describe_rows(ok(stratus("describe-instance", "-n")))
    assert vm_id in listing and str(neighbour) not in listing

    ok(stratus("kill-instance", vm_id))
    wait_for("VM done", lambda: vm_state(alice, vm_id)[0] == DONE)
    assert describe_rows(ok(stratus("describe-instance", vm_id)))[vm_id][0] == "Done"


def test_run_instance_network_size_and_number_options(stratus, alice):
    out = ok(stratus("run-instance", "-q", "--local-ip", "--cpu", "2", "--ram", "1024", "--swap", "256",
                     "-n", "2", TTYLINUX))
    started = dict(line.split(", ") for line in out.strip().splitlines())
    assert len(started) == 2
    for vm_id, ip in started.items():
        created = vm(alice, vm_id)
        assert created.text("TEMPLATE/NIC/NETWORK") == "local"
        assert created.text("TEMPLATE/NIC/IP") == ip and ip.startswith("127.2.")
        assert (created.text("TEMPLATE/CPU"), created.text("TEMPLATE/MEMORY")) == ("2", "1024")
        assert any(d.get("TYPE") == "swap" and d.get("SIZE") == "256" for d in created.disks())
    # (Not ``-i FILE``: 14.06's kill-instance dies on it with "'Runner' object has no
    # attribute 'vmIds'" unless ids are also given as arguments.)
    ok(stratus("kill-instance", *started))
    for vm_id in started:
        wait_for("VM %s done" % vm_id, lambda: vm_state(alice, vm_id)[0] == DONE)


def test_volume_commands(stratus, alice, cloud):
    private = ok(stratus("create-volume", "-s", "2", "-t", "cli-private")).split()[-1]
    public = ok(stratus("create-volume", "-s", "1", "-t", "cli-public", "--public")).split()[-1]
    assert alice.pdisk("GET", "disks/%s/" % private)[1]["visibility"] == "PRIVATE"
    assert alice.pdisk("GET", "disks/%s/" % public)[1]["visibility"] == "PUBLIC"

    volumes = describe_volumes(ok(stratus("describe-volumes")))
    assert volumes[private] == {"count": "0", "owner": "alice", "tag": "cli-private", "size": "2"}
    assert volumes[public]["tag"] == "cli-public"
    assert set(describe_volumes(ok(stratus("describe-volumes", private)))) == {private}
    assert set(describe_volumes(ok(stratus("describe-volumes", "--filter", "tag:cli-pub.*")))) == {public}

    # Boot from the marketplace image with the volume as an extra disk.
    out = ok(stratus("run-instance", "-q", "--persistent-disk", private, TTYLINUX))
    vm_id = out.split(",")[0].strip()
    sources = [d.get("SOURCE") for d in vm(alice, vm_id).disks()]
    assert "pdisk:%s/pdisk/%s" % (harness.localhost_url(cloud.url), private) in sources
    ok(stratus("kill-instance", vm_id))
    wait_for("VM done", lambda: vm_state(alice, vm_id)[0] == DONE)

    out = ok(stratus("delete-volume", private, public))
    assert "DELETED %s" % private in out and "DELETED %s" % public in out
    assert alice.pdisk("GET", "disks/%s/" % private)[0] == 404
    assert alice.pdisk("GET", "disks/%s/" % public)[0] == 404

    again = stratus("delete-volume", private)
    assert again.returncode != 0
    assert "404" in again.stdout + again.stderr
    assert "does not exist" in again.stdout + again.stderr


def test_credentials_and_sections_from_the_command_line(stratus, neighbour):
    bobs = str(neighbour)
    # -S picks bob's section; -u/-p override the file's credentials.
    assert bobs in describe_rows(ok(stratus("describe-instance", "-n", "-S", "other")))
    assert bobs in describe_rows(ok(stratus("describe-instance", "-n", "-u", "bob", "-p", USERS["bob"])))
    assert bobs not in describe_rows(ok(stratus("describe-instance", "-n")))

    wrong = stratus("describe-instance", "-n", "-p", "not-the-password")
    assert wrong.returncode != 0
    assert "Unauthorized" in wrong.stdout + wrong.stderr
    wrong = stratus("describe-volumes", "--pdisk-password", "not-the-password")
    assert wrong.returncode != 0
    assert "401" in wrong.stdout + wrong.stderr
