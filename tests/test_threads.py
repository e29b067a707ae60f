"""One driver object shared by 16 threads: nothing lost, nothing leaked, nothing duplicated.

Each thread creates a node and a volume, lists both (its own must be there), attaches
and detaches the volume, and destroys both, all at once on one driver object, against a
local cloud over real HTTPS. The cloud's own records are the judge: one VM and one disk
per name, every VM finalized, no disk or mount left. The second run does the same while
the cloud loses answers and fails requests now and then.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState

from stratuslab_lc_plugin.emulator import LocalCloud, lifecycle
from tests.test_compute import wait_for

pytestmark = pytest.mark.timeout(180)

THREADS = 16


@pytest.fixture(scope="module")
def tcloud(tmp_path_factory):
    with LocalCloud(state_dir=str(tmp_path_factory.mktemp("threads")), delays=0.02, guests=False) as cloud:
        yield cloud


def run_workers(cloud, prefix: str, retries: int = 2):
    driver = get_driver("stratuslab")(
        "default", stratuslab_user_config=cloud.config_path, timeout=10, retries=retries, retry_delay=0.01
    )
    image = driver.list_images()[0]
    barrier = threading.Barrier(THREADS)

    def work(index: int):
        name = "%s-%02d" % (prefix, index)
        barrier.wait()
        node = driver.create_node(name=name, size="t1.micro", image=image)
        volume = driver.create_volume(1, name)
        for _ in range(3):
            assert node.id in {n.id for n in driver.list_nodes()}, "node %s lost" % name
            assert volume.id in {v.id for v in driver.list_volumes()}, "volume %s lost" % name
        node = wait_for(driver, node, NodeState.RUNNING)
        assert driver.attach_volume(node, volume)
        assert driver.ex_get_volume(volume.id).extra["attachments"] == [{"node_id": node.id, "device": "vdz"}]
        assert driver.detach_volume(volume)
        assert driver.destroy_volume(volume)
        assert driver.destroy_node(node)
        return name, node.id, volume.id

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(work, range(THREADS)))
    return driver, results


def check_cloud(cloud, driver, prefix: str, results):
    names = sorted(name for name, _, _ in results)
    assert len(set(names)) == THREADS
    assert len({node_id for _, node_id, _ in results}) == THREADS
    assert len({volume_id for _, _, volume_id in results}) == THREADS
    vms = [vm for vm in list(cloud.pool.vms.values()) if vm.name.startswith(prefix + "-")]
    assert sorted(vm.name for vm in vms) == names  # one VM per name: none duplicated, none lost
    assert {vm.state for vm in vms} == {lifecycle.DONE}  # none left running
    assert {str(vm.id) for vm in vms} == {node_id for _, node_id, _ in results}
    with cloud.store.transaction() as db:
        disks = db.execute("SELECT COUNT(*) FROM pdisk_disks WHERE tag LIKE ?", (prefix + "-%",)).fetchone()[0]
        mounts = db.execute("SELECT COUNT(*) FROM pdisk_mounts").fetchone()[0]
    assert (disks, mounts) == (0, 0)  # no disk or mount leaked
    assert not [n for n in driver.list_nodes() if n.name.startswith(prefix)]


def test_sixteen_threads_share_one_driver(tcloud):
    prefix = "t" + uuid.uuid4().hex[:6]
    driver, results = run_workers(tcloud, prefix)
    check_cloud(tcloud, driver, prefix, results)


def test_sixteen_threads_share_one_driver_while_answers_get_lost(tcloud):
    prefix = "f" + uuid.uuid4().hex[:6]
    for fault in (
        "one.vm.allocate=drop-after:4",
        "one.vmpool.info=http-503:6",
        "one.vm.info=drop-before:4",
        "POST /disks=drop-after:4",
        "GET /disks=http-502:6",
        "POST /disks/*/mounts=drop-after:4",
        "marketplace=drop-before:2",
    ):
        tcloud.faults.add(fault)
    try:
        # Faults are counted for the whole cloud: one call may meet several of them in a row.
        driver, results = run_workers(tcloud, prefix, retries=8)
        assert all(f.remaining == 0 for f in tcloud.faults)  # every fault was met
    finally:
        tcloud.faults.clear()
    check_cloud(tcloud, driver, prefix, results)
