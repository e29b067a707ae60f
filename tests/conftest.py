"""Fixtures shared by the driver tests: one local StratusLab cloud per test session.

The cloud listens on real HTTPS (its own CA) on 127.0.0.1; drivers are built from the user
configuration file it writes, through ``get_driver('stratuslab')`` as users build them.
"""

from __future__ import annotations

import os

import pytest

import stratuslab_lc_plugin  # noqa: F401 - registers the driver where .pth files are skipped

#: Seconds per VM lifecycle step in the shared cloud: short, but each state is observable.
LIFECYCLE_DELAY = 0.05


@pytest.fixture(scope="session")
def cloud(tmp_path_factory):
    from stratuslab_lc_plugin.emulator import LocalCloud

    state_dir = tmp_path_factory.mktemp("cloud")
    with LocalCloud(state_dir=str(state_dir), delays=LIFECYCLE_DELAY) as running:
        yield running


@pytest.fixture(scope="session")
def legacy():
    """The StratusLab 14.06 software (Python 2.7, tests/legacy), or a skip saying why not.

    ``STRATUSLAB_REQUIRE_LEGACY=1`` (CI) turns the skip into a failure.
    """
    from legacy import harness

    try:
        return harness.prepare()
    except harness.LegacyUnavailable as exc:
        if os.environ.get("STRATUSLAB_REQUIRE_LEGACY") == "1":
            pytest.fail("14.06 software required but unavailable: %s" % exc)
        pytest.skip("14.06 software unavailable: %s" % exc)


@pytest.fixture
def driver(cloud):
    from libcloud.compute.providers import get_driver

    return get_driver("stratuslab")("default", stratuslab_user_config=cloud.config_path)


@pytest.fixture
def write_config(tmp_path, cloud):
    """Write a configuration (each line stripped) with the given sections; ``{url}``, ``{ca}``, ``{user}``,
    ``{password}``, ``{key}`` are filled from the shared cloud."""

    def write(text: str, name: str = "stratuslab-user.cfg") -> str:
        user, password = next(iter(cloud.users.items()))
        values = {
            "url": cloud.url,
            "ca": cloud.ca_path,
            "user": user,
            "password": password,
            "key": os.path.join(os.path.dirname(cloud.config_path), "id_ed25519.pub"),
        }
        path = tmp_path / name
        path.write_text("\n".join(line.strip() for line in text.splitlines()).format(**values) + "\n")
        path.chmod(0o600)
        return str(path)

    return write


#: A location of the shared cloud, for multi-location configurations.
LOCATION = """
    endpoint = {url}/one-proxy/xmlrpc
    pdisk_endpoint = {url}/pdisk
    marketplace_endpoint = {url}/marketplace
    username = {user}
    password = {password}
    ca_certs_path = {ca}
    user_public_key_file = {key}
"""
