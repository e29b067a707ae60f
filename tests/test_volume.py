"""VolumeMixin against the local cloud's pdisk service over real HTTPS."""

from __future__ import annotations

import pytest
from libcloud.compute.base import StorageVolume
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState, StorageVolumeState

from stratuslab_lc_plugin.errors import InUseError, InvalidStateError, NotFoundError
from tests.conftest import LOCATION
from tests.test_compute import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def node(driver):
    image = driver.list_images()[0]
    node = wait_for(driver, driver.create_node(name="with-volume", size="t1.micro", image=image), NodeState.RUNNING)
    yield node
    driver.destroy_node(node)


@pytest.fixture
def volume(driver):
    volume = driver.create_volume(3, "data")
    yield volume
    try:
        driver.destroy_volume(driver.ex_get_volume(volume.id))
    except (NotFoundError, InUseError):
        pass


def test_volume_lifecycle_with_a_second_driver_detaching(driver, node, volume, cloud):
    assert isinstance(volume, StorageVolume)
    assert (volume.size, volume.name, volume.state) == (3, "data", StorageVolumeState.AVAILABLE)
    assert volume.extra["location"] == "local"
    assert volume.extra["visibility"] == "PRIVATE"
    assert volume.id in {v.id for v in driver.list_volumes()}

    assert driver.attach_volume(node, volume) is True
    assert volume.extra["device"] == "vdz"

    other = get_driver("stratuslab")("default", stratuslab_user_config=cloud.config_path)
    seen = other.ex_get_volume(volume.id)
    assert seen.state == StorageVolumeState.INUSE
    assert seen.extra["attachments"] == [{"node_id": node.id, "device": "vdz"}]
    listed = {v.id: v for v in other.list_volumes()}
    assert listed[volume.id].state == StorageVolumeState.INUSE

    assert other.detach_volume(seen) is True
    assert driver.ex_get_volume(volume.id).state == StorageVolumeState.AVAILABLE
    assert other.destroy_volume(seen) is True
    assert volume.id not in {v.id for v in driver.list_volumes()}


def test_destroying_a_volume_in_use_names_the_vm(driver, node, volume):
    driver.attach_volume(node, volume)
    with pytest.raises(InUseError, match="attached to VM %s \\(vdz\\)" % node.id):
        driver.destroy_volume(volume)
    assert driver.ex_get_volume(volume.id).state == StorageVolumeState.INUSE
    driver.detach_volume(volume)


def test_attaching_twice_and_detaching_unattached(driver, node, volume):
    driver.attach_volume(node, volume)
    with pytest.raises(InvalidStateError, match="already attached to node %s as vdz" % node.id):
        driver.attach_volume(node, volume)
    driver.detach_volume(volume)
    with pytest.raises(InvalidStateError, match="is not attached"):
        driver.detach_volume(volume)


def test_volume_of_another_location_is_refused(write_config, driver, node, volume):
    path = write_config("[default]\nselected_section = local\n[local]" + LOCATION + "[other]" + LOCATION)
    multi = get_driver("stratuslab")("default", stratuslab_user_config=path)
    foreign = multi.ex_get_volume(volume.id, "other")
    with pytest.raises(ValueError, match="in location other but node %s is in local" % node.id):
        multi.attach_volume(multi.ex_get_node(node.id, "local"), foreign)
    assert multi.ex_get_volume(volume.id, "local").state == StorageVolumeState.AVAILABLE


@pytest.mark.parametrize("size", [0, 1025, -1, 1.5, "2", True])
def test_bad_sizes_are_refused_before_any_request(driver, size, monkeypatch):
    monkeypatch.setattr(type(driver), "_services", lambda *a, **k: pytest.fail("a request was made"))
    with pytest.raises(ValueError, match="size"):
        driver.create_volume(size, "bad")


def test_unknown_volume(driver):
    with pytest.raises(NotFoundError, match="does not exist"):
        driver.ex_get_volume("00000000-0000-4000-8000-000000000000")
    with pytest.raises(ValueError, match="not a StratusLab volume id"):
        driver.ex_get_volume("nope")


def test_boot_from_a_volume_and_attach_at_boot(driver, volume):
    data = driver.create_volume(1, "at-boot")
    try:
        node = driver.create_node(
            name="from-volume", size="t1.micro", image=volume, ex_persistent_volumes=[data]
        )
        try:
            sources = [d["source"] for d in node.extra["disks"]]
            assert sources[0].startswith("pdisk:") and sources[0].endswith("/" + volume.id)
            assert sources[2].endswith("/" + data.id)
            assert [d["target"] for d in node.extra["disks"]] == ["hda", "hdb", "hdc"]
        finally:
            driver.destroy_node(node)
    finally:
        driver.destroy_volume(data)


def test_public_visibility(driver):
    volume = driver.create_volume(1, "shared", ex_visibility="public")
    try:
        assert volume.extra["visibility"] == "PUBLIC"
    finally:
        driver.destroy_volume(volume)


def test_sizes_stored_in_bytes_are_read_as_gib():
    from stratuslab_lc_plugin.services.pdisk import DiskRecord

    disk = "9c5a2c03-8243-4a1b-a248-0f0d22d948c2"
    assert DiskRecord.from_json({"uuid": disk, "size": "1000"}).size == 1000
    assert DiskRecord.from_json({"uuid": disk, "size": str(3 * 2**30)}).size == 3
    assert DiskRecord.from_json({"uuid": disk, "size": str(3 * 2**30 + 1)}).size == 4
