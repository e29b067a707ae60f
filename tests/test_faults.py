"""The fault matrix: each injected fault kind x the operations it can hit -> the documented outcome.

Faults are injected by the local cloud's HTTPS front (``LocalCloud(faults=...)``,
``cloud.faults``); the driver talks to it over real HTTPS. Outcomes are checked on the
server's own state (its VM pool and pdisk tables), not only on what the driver says:

- reads (vm.info, vmpool.info, Marketplace, pdisk GETs) survive one drop or 502/503 and
  succeed; a 500, a garbled answer or a ONE error is raised at once, never retried;
- writes are never sent twice blindly: create_node, create_volume and attach_volume
  look up what a lost answer may have done, so they end with exactly one resource;
- other writes (destroy, detach, VM actions) raise ServiceUnavailableError after a lost
  answer, without retrying;
- every call against a dead, silent or slow endpoint ends within the timeout with an
  error naming the location.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState, StorageVolumeState

from stratuslab_lc_plugin.emulator import LocalCloud, lifecycle
from stratuslab_lc_plugin.emulator.faults import Fault, FaultSet
from stratuslab_lc_plugin.errors import ProtocolError, ServiceError, ServiceUnavailableError
from stratuslab_lc_plugin.services.pdisk import DiskRecord
from stratuslab_lc_plugin.driver.volume import _new_disk
from tests.test_compute import wait_for

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 3.0
RETRIES = 2
INTERNAL = 0x2000


@pytest.fixture(scope="module")
def fcloud(tmp_path_factory):
    with LocalCloud(state_dir=str(tmp_path_factory.mktemp("faults")), delays=0.02, guests=False) as cloud:
        yield cloud


@pytest.fixture
def faults(fcloud):
    fcloud.faults.clear()
    yield fcloud.faults
    fcloud.faults.clear()


def make_driver(cloud, timeout=TIMEOUT, **kwargs):
    kwargs.setdefault("retries", RETRIES)
    kwargs.setdefault("retry_delay", 0.01)
    return get_driver("stratuslab")("default", stratuslab_user_config=cloud.config_path, timeout=timeout, **kwargs)


@pytest.fixture
def fdriver(fcloud, faults):
    return make_driver(fcloud)


@pytest.fixture(scope="module")
def image_id(fcloud):
    return make_driver(fcloud).list_images()[0].id


@pytest.fixture(scope="module")
def running(fcloud, image_id):
    """A running node and a volume of the fault cloud, shared by the read and attach tests."""
    driver = make_driver(fcloud)
    node = wait_for(driver, driver.create_node(name="fault-target", size="t1.micro", image=image_id), NodeState.RUNNING)
    volume = driver.create_volume(1, "fault-target")
    return node, volume


def unique(prefix: str) -> str:
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def vms_named(cloud, name):
    """Every VM of that name the cloud ever made, in any state (the server's truth)."""
    return [vm for vm in list(cloud.pool.vms.values()) if vm.name == name]


def disks_tagged(cloud, tag):
    with cloud.store.transaction() as db:
        return [row["uuid"] for row in db.execute("SELECT uuid FROM pdisk_disks WHERE tag = ?", (tag,))]


def mounts_of(cloud, disk_uuid):
    with cloud.store.transaction() as db:
        return [row["vm_id"] for row in db.execute("SELECT vm_id FROM pdisk_mounts WHERE disk_uuid = ?", (disk_uuid,))]


def hits(faults):
    return [f.hits for f in faults]


# -- the fault specification ------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, target, kind, count, seconds",
    [
        ("one.vm.allocate=drop-after:1", "one.vm.allocate", "drop-after", 1, 0.0),
        ("one.vmpool.info=http-503", "one.vmpool.info", "http-503", None, 0.0),
        ("marketplace=delay-2.5:3", "marketplace", "delay", 3, 2.5),
        ("POST /disks=drop-before", "POST /disks", "drop-before", None, 0.0),
        ("DELETE  /disks/*/mounts/* = malformed:2", "DELETE /disks/*/mounts/*", "malformed", 2, 0.0),
        ("one=one-error", "one", "one-error", None, 0.0),
    ],
)
def test_fault_specs_parse(spec, target, kind, count, seconds):
    fault = Fault.parse(spec)
    assert (fault.target, fault.kind, fault.count, fault.seconds) == (target, kind, count, seconds)
    assert Fault.parse(fault.spec) == fault


@pytest.mark.parametrize(
    "spec, complaint",
    [
        ("one.vm.allocate", "TARGET=KIND"),
        ("one.vm.allocate=explode", "KIND must be one of"),
        ("one.vm.allocate=drop-after:0", "COUNT"),
        ("one.vm.allocate=drop-after:x", "COUNT"),
        ("marketplace=delay-soon", "delay-SECONDS"),
        ("pdisk=one-error", "ONE targets"),
        ("POST disks=http-500", "route"),
        ("nonsense=http-500", "TARGET must be"),
    ],
)
def test_bad_fault_specs_are_refused_with_the_reason(spec, complaint):
    with pytest.raises(ValueError, match=complaint):
        Fault.parse(spec)
    with pytest.raises(ValueError):
        LocalCloud(faults=[spec])  # refused before anything starts


def test_routes_match_one_segment_per_star_and_ignore_trailing_slashes():
    fault = Fault.parse("DELETE /disks/*/mounts/*=http-500")
    assert fault.matches("pdisk", "DELETE", "/disks/abc/mounts/abc_1/", None)
    assert not fault.matches("pdisk", "DELETE", "/disks/abc/", None)
    assert not fault.matches("pdisk", "GET", "/disks/abc/mounts/abc_1", None)
    assert not fault.matches("one", "DELETE", "/disks/abc/mounts/abc_1", None)
    assert Fault.parse("* /disks=http-500").matches("pdisk", "GET", "/disks/", None)


def test_fault_counts_are_exact_under_concurrency():
    faults = FaultSet(["one.vm.info=http-503:250"])
    taken = []
    body = b"<?xml version='1.0'?><methodCall><methodName>one.vm.info</methodName></methodCall>"

    def worker():
        for _ in range(100):
            taken.append(faults.take("one", "POST", "/xmlrpc", body))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(1 for t in taken if t is not None) == 250
    assert [f.hits for f in faults] == [250] and next(iter(faults)).remaining == 0


def test_serve_takes_repeatable_faults_and_refuses_bad_ones(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "stratuslab_lc_plugin.emulator", "--state-dir", str(tmp_path),
         "--fault", "one.vm.allocate=drop-after:1", "--fault", "one.vm.info=sideways"],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2 and "sideways" in bad.stderr and "KIND must be one of" in bad.stderr


def test_serve_applies_its_faults(tmp_path):
    config = tmp_path / "stratuslab-user.cfg"
    process = subprocess.Popen(
        [sys.executable, "-m", "stratuslab_lc_plugin.emulator", "--state-dir", str(tmp_path), "--delay", "0.02",
         "--fault", "one.vm.allocate=drop-after:1", "--fault", "GET /disks=http-503:1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not config.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        driver = get_driver("stratuslab")("default", stratuslab_user_config=str(config), timeout=TIMEOUT, retry_delay=0.01)
        node = driver.create_node(name="served", size="t1.micro", image=driver.list_images()[0])
        assert [n.id for n in driver.list_nodes() if n.name == "served"] == [node.id]
        assert driver.list_volumes() == []
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert "injected fault:        one.vm.allocate=drop-after:1" in out
    assert "injected fault:        GET /disks=http-503:1" in out


# -- reads --------------------------------------------------------------------------------

READS = {
    "list_nodes": ("one.vmpool.info", lambda d, node, volume: d.list_nodes()),
    "ex_get_node": ("one.vm.info", lambda d, node, volume: d.ex_get_node(node.id)),
    "list_images": ("marketplace", lambda d, node, volume: d.list_images()),
    "get_image": ("marketplace", lambda d, node, volume: d.get_image(d.list_images()[0].id)),
    "list_volumes": ("GET /disks", lambda d, node, volume: d.list_volumes()),
    "ex_get_volume": ("GET /disks/*", lambda d, node, volume: d.ex_get_volume(volume.id)),
}
ONE_READS = [name for name, (target, _) in READS.items() if target.startswith("one.")]


def run_read(driver, running, operation):
    node, volume = running
    result = READS[operation][1](driver, node, volume)
    assert result  # a real answer, not an empty one
    return result


@pytest.mark.parametrize("kind", ["drop-before", "drop-after", "http-502", "http-503"])
@pytest.mark.parametrize("operation", sorted(READS))
def test_reads_survive_one_transient_failure(fdriver, faults, running, operation, kind):
    faults.add("%s=%s:1" % (READS[operation][0], kind))
    run_read(fdriver, running, operation)
    assert hits(faults) == [1]


@pytest.mark.parametrize("operation", sorted(READS))
def test_reads_give_up_after_the_configured_retries_naming_the_location(fdriver, faults, running, operation):
    faults.add("%s=http-503" % READS[operation][0])
    with pytest.raises(ServiceUnavailableError) as caught:
        run_read(fdriver, running, operation)
    assert caught.value.location == "local" and str(caught.value).startswith("local: ")
    assert "HTTP 503" in str(caught.value)
    assert hits(faults) == [RETRIES + 1]


@pytest.mark.parametrize("operation", sorted(READS))
def test_reads_are_not_retried_after_an_internal_error(fdriver, faults, running, operation):
    faults.add("%s=http-500" % READS[operation][0])
    with pytest.raises(ServiceError) as caught:
        run_read(fdriver, running, operation)
    assert not isinstance(caught.value, ServiceUnavailableError)
    assert caught.value.code == 500 and caught.value.location == "local"
    assert hits(faults) == [1]


@pytest.mark.parametrize("operation", sorted(READS))
def test_garbled_reads_are_protocol_errors_naming_location_and_operation(fdriver, faults, running, operation):
    faults.add("%s=malformed" % READS[operation][0])
    with pytest.raises(ProtocolError) as caught:
        run_read(fdriver, running, operation)
    assert caught.value.location == "local" and caught.value.operation
    assert caught.value.operation in str(caught.value)
    assert hits(faults) == [1]


@pytest.mark.parametrize("operation", ONE_READS)
def test_one_errors_on_reads_are_raised_with_their_code(fdriver, faults, running, operation):
    faults.add("%s=one-error" % READS[operation][0])
    with pytest.raises(ServiceError) as caught:
        run_read(fdriver, running, operation)
    assert caught.value.code == INTERNAL and "Internal error" in caught.value.remote_message
    assert hits(faults) == [1]


def test_a_short_delay_is_only_slow(fdriver, faults, running):
    faults.add("one.vmpool.info=delay-0.2")
    run_read(fdriver, running, "list_nodes")
    assert hits(faults) == [1]


@pytest.mark.parametrize("operation", ["list_nodes", "list_images", "list_volumes"])
def test_a_silent_service_ends_the_call_within_the_timeout(fcloud, faults, running, operation):
    faults.add("%s=delay-60" % READS[operation][0])
    driver = make_driver(fcloud, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as caught:
        run_read(driver, running, operation)
    assert time.monotonic() - started < 0.5 + 5
    assert caught.value.timed_out and "timed out" in str(caught.value) and caught.value.location == "local"


# -- writes that look up what a lost answer did ---------------------------------------------

RECOVERED = ["drop-before", "drop-after", "http-502", "http-503", "malformed"]


@pytest.mark.parametrize("kind", RECOVERED)
def test_create_node_after_a_lost_answer_makes_exactly_one_vm(fcloud, fdriver, faults, image_id, kind):
    faults.add("one.vm.allocate=%s:1" % kind)
    name = unique("lost-" + kind)
    node = fdriver.create_node(name=name, size="t1.micro", image=image_id)
    assert [str(vm.id) for vm in vms_named(fcloud, name)] == [node.id]
    assert hits(faults) == [1]


def test_create_node_survives_an_allocate_whose_answers_are_always_lost(fcloud, fdriver, faults, image_id):
    faults.add("one.vm.allocate=drop-after")
    name = unique("always-lost")
    node = fdriver.create_node(name=name, size="t1.micro", image=image_id)
    assert [str(vm.id) for vm in vms_named(fcloud, name)] == [node.id]
    assert hits(faults) == [1]  # found by its token: never sent twice


@pytest.mark.parametrize("kind", ["drop-before", "http-503"])
def test_create_node_gives_up_after_one_retry_when_nothing_was_made(fcloud, fdriver, faults, image_id, kind):
    faults.add("one.vm.allocate=%s" % kind)
    name = unique("never")
    with pytest.raises(ServiceUnavailableError) as caught:
        fdriver.create_node(name=name, size="t1.micro", image=image_id)
    assert caught.value.client_token in str(caught.value) and "local" in str(caught.value)
    assert vms_named(fcloud, name) == []
    assert hits(faults) == [2]


@pytest.mark.parametrize("kind", ["http-500", "one-error"])
def test_create_node_is_not_retried_after_an_error_answer(fcloud, fdriver, faults, image_id, kind):
    faults.add("one.vm.allocate=%s:1" % kind)
    name = unique("refused")
    with pytest.raises(ServiceError) as caught:
        fdriver.create_node(name=name, size="t1.micro", image=image_id)
    assert not isinstance(caught.value, ServiceUnavailableError)
    assert vms_named(fcloud, name) == []
    assert hits(faults) == [1]


def test_create_node_that_timed_out_is_not_retried_and_its_token_finds_the_vm(fcloud, faults, image_id):
    faults.add("one.vm.allocate=delay-2:1")
    driver = make_driver(fcloud, timeout=1.0)
    name = unique("slow")
    with pytest.raises(ServiceUnavailableError) as caught:
        driver.create_node(name=name, size="t1.micro", image=image_id)
    error = caught.value
    assert error.timed_out and "ex_client_token=%r" % error.client_token in str(error)
    deadline = time.monotonic() + 30
    while not vms_named(fcloud, name):  # the server finishes the allocation it was given
        assert time.monotonic() < deadline
        time.sleep(0.05)
    node = driver.create_node(name=name, size="t1.micro", image=image_id, ex_client_token=error.client_token)
    assert [str(vm.id) for vm in vms_named(fcloud, name)] == [node.id]
    assert hits(faults) == [1]


@pytest.mark.parametrize("kind", RECOVERED)
def test_create_volume_after_a_lost_answer_makes_exactly_one_disk(fcloud, fdriver, faults, kind):
    faults.add("POST /disks=%s:1" % kind)
    name = unique("vol-" + kind)
    volume = fdriver.create_volume(2, name)
    assert disks_tagged(fcloud, name) == [volume.id]
    assert (volume.name, volume.size) == (name, 2)
    assert hits(faults) == [1]


def test_create_volume_does_not_adopt_an_older_disk_with_the_same_tag(fcloud, fdriver, faults):
    name = unique("same-tag")
    older = fdriver.create_volume(2, name)
    faults.add("POST /disks=drop-before:1")
    newer = fdriver.create_volume(2, name)
    assert newer.id != older.id and sorted(disks_tagged(fcloud, name)) == sorted([older.id, newer.id])


def test_create_volume_is_not_retried_after_an_error_answer(fcloud, fdriver, faults):
    faults.add("POST /disks=http-500:1")
    name = unique("vol-refused")
    with pytest.raises(ServiceError) as caught:
        fdriver.create_volume(1, name)
    assert not isinstance(caught.value, ServiceUnavailableError)
    assert disks_tagged(fcloud, name) == [] and hits(faults) == [1]


def test_create_volume_against_a_dead_pdisk_makes_nothing(fcloud, fdriver, faults):
    faults.add("POST /disks=drop-before")
    name = unique("vol-dead")
    with pytest.raises(ServiceUnavailableError, match="^local: .*create_volume"):
        fdriver.create_volume(1, name)
    assert disks_tagged(fcloud, name) == [] and hits(faults) == [2]


@pytest.mark.parametrize("kind", RECOVERED)
def test_attach_after_a_lost_answer_attaches_once(fcloud, fdriver, faults, running, kind):
    node, _ = running
    volume = fdriver.create_volume(1, unique("attach-" + kind))
    faults.add("POST /disks/*/mounts=%s:1" % kind)
    try:
        assert fdriver.attach_volume(node, volume) is True
        assert mounts_of(fcloud, volume.id) == [node.id]
        assert volume.extra["device"] and volume.state == StorageVolumeState.INUSE
        assert hits(faults) == [1]
    finally:
        faults.clear()
        fdriver.detach_volume(volume)
        fdriver.destroy_volume(volume)


def test_attach_is_not_retried_after_an_error_answer(fcloud, fdriver, faults, running):
    node, _ = running
    volume = fdriver.create_volume(1, unique("attach-refused"))
    faults.add("POST /disks/*/mounts=http-500:1")
    with pytest.raises(ServiceError):
        fdriver.attach_volume(node, volume)
    assert mounts_of(fcloud, volume.id) == [] and hits(faults) == [1]
    fdriver.destroy_volume(volume)


# -- other writes: sent once, outcome reported as unknown -------------------------------------


def test_destroy_node_after_a_lost_answer_is_reported_not_retried(fcloud, fdriver, faults, image_id):
    node = fdriver.create_node(name=unique("destroy"), size="t1.micro", image=image_id)
    faults.add("one.vm.action=drop-after:1")
    with pytest.raises(ServiceUnavailableError, match="^local: .*one.vm.action"):
        fdriver.destroy_node(node)
    assert hits(faults) == [1]
    assert fcloud.pool.get(int(node.id)).state == lifecycle.DONE  # it did happen


@pytest.mark.parametrize("kind, happened", [("drop-before", False), ("drop-after", True), ("http-503", False)])
def test_destroy_volume_after_a_lost_answer_is_reported_not_retried(fcloud, fdriver, faults, kind, happened):
    volume = fdriver.create_volume(1, unique("gone-" + kind))
    faults.add("DELETE /disks/*=%s:1" % kind)
    with pytest.raises(ServiceUnavailableError, match="^local: .*destroy_volume"):
        fdriver.destroy_volume(volume)
    assert hits(faults) == [1]
    assert (disks_tagged(fcloud, volume.name) == []) is happened


def test_detach_after_a_lost_answer_is_reported_not_retried(fcloud, fdriver, faults, running):
    node, _ = running
    volume = fdriver.create_volume(1, unique("detach"))
    fdriver.attach_volume(node, volume)
    faults.add("DELETE /disks/*/mounts/*=drop-after:1")
    with pytest.raises(ServiceUnavailableError, match="^local: .*detach_volume"):
        fdriver.detach_volume(volume)
    assert hits(faults) == [1] and mounts_of(fcloud, volume.id) == []
    fdriver.destroy_volume(volume)


def test_a_fault_on_a_whole_service_hits_each_of_its_calls(fdriver, faults, running):
    faults.add("pdisk=http-502:2")
    assert fdriver.list_volumes()
    assert fdriver.ex_get_volume(running[1].id)
    assert hits(faults) == [2]


# -- dead and silent endpoints --------------------------------------------------------------


@pytest.fixture
def dead_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections (the kernel's backlog) and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


ENDPOINT_CALLS = {
    "list_nodes": lambda d: d.list_nodes(),
    "ex_get_node": lambda d: d.ex_get_node(1),
    "list_images": lambda d: d.list_images(),
    "list_volumes": lambda d: d.list_volumes(),
    "create_volume": lambda d: d.create_volume(1, "never"),
    "create_node": lambda d: d.create_node(name="never", size="t1.micro", image="https://example.org/image.img"),
}


def endpoint_driver(fcloud, tmp_path, port, timeout):
    url = "https://127.0.0.1:%d" % port
    path = tmp_path / "unreachable.cfg"
    path.write_text(
        "[default]\nselected_section = unreachable\n[unreachable]\n"
        "endpoint = %s/one-proxy/xmlrpc\npdisk_endpoint = %s/pdisk\nmarketplace_endpoint = %s/marketplace\n"
        "username = u\npassword = p\nca_certs_path = %s\nuser_public_key_file = %s\n"
        % (url, url, url, fcloud.ca_path, fcloud.public_key_path)
    )
    path.chmod(0o600)
    return get_driver("stratuslab")("default", stratuslab_user_config=str(path), timeout=timeout, retry_delay=0.05)


@pytest.mark.parametrize("operation", sorted(ENDPOINT_CALLS))
@pytest.mark.parametrize("endpoint", ["dead", "silent"])
def test_calls_to_dead_or_silent_endpoints_end_within_the_timeout(
    fcloud, tmp_path, dead_port, silent_port, endpoint, operation
):
    timeout = 0.5
    driver = endpoint_driver(fcloud, tmp_path, dead_port if endpoint == "dead" else silent_port, timeout)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as caught:
        ENDPOINT_CALLS[operation](driver)
    assert time.monotonic() - started < timeout + 5
    assert caught.value.location == "unreachable" and str(caught.value).startswith("unreachable: ")
    if endpoint == "silent":
        assert "timed out" in str(caught.value)


# -- the rule that adopts a disk after a lost create_volume answer ------------------------------


class _Listing:
    """A pdisk client that only lists (the rule reads nothing else)."""

    def __init__(self, *disks) -> None:
        self.disks = [DiskRecord(uuid=u, tag=t, size=s, owner="me", count=c) for u, t, s, c in disks]

    def list_disks(self):
        return self.disks


def test_a_lost_create_volume_adopts_the_one_new_free_disk_of_that_tag_and_size():
    listing = _Listing(("old", "data", 2, 0), ("other-size", "data", 3, 0), ("in-use", "data", 2, 1),
                       ("other-tag", "logs", 2, 0), ("new", "data", 2, 0))
    assert _new_disk(listing, "data", 2, before={"old"}) == "new"
    assert _new_disk(listing, "data", 2, before={"old", "new"}) is None


def test_a_lost_create_volume_adopts_nothing_when_two_new_disks_qualify():
    listing = _Listing(("a", "data", 2, 0), ("b", "data", 2, 0))
    with pytest.raises(ServiceError, match="2 new volumes tagged 'data' of 2 GiB appeared meanwhile \\(a, b\\)"):
        _new_disk(listing, "data", 2, before=set())
