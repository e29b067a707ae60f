"""The pytest plugin as users meet it: their own test files, run by pytest in a directory of their own.

Each test writes a small user suite (no conftest) into a temporary directory and runs pytest
on it in a child process, so the plugin is loaded through its ``pytest11`` entry point as in a
user's project; the in-process tests cover the context managers used without pytest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from stratuslab_lc_plugin.testing import LeftBehindError, driver_for, local_cloud, nothing_left_behind

pytestmark = pytest.mark.timeout(180)

#: Modules the plugin must not import until a fixture is used.
HEAVY = ("libcloud", "paramiko", "cryptography", "requests", "urllib3", "stevedore", "rich",
         "stratuslab_lc_plugin.emulator")
#: Plugins of this test environment that import heavy modules themselves (requests-mock imports requests).
OTHER_PLUGINS_OFF = ("-p", "no:requests_mock")


def run_pytest(directory, files, *args, timeout=150):
    """Write ``files`` (name -> text) into ``directory`` and run pytest there."""
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "STRATUSLAB_USER_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(directory), *args],
        cwd=str(directory), capture_output=True, text=True, timeout=timeout, env=env,
    )


def outcome(proc):
    """The summary line of a quiet pytest run ("3 passed in 1.2s" -> "3 passed")."""
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return re.sub(r" in [0-9.]+s.*$", "", last)


def test_registered_through_the_pytest11_entry_point():
    eps = metadata.entry_points()
    group = eps.select(group="pytest11") if hasattr(eps, "select") else eps.get("pytest11", [])
    # A set: Python 3.9 lists an entry point once per metadata directory (an egg-info in the cwd too).
    assert {(ep.name, ep.value) for ep in group if ep.name == "stratuslab"} == {
        ("stratuslab", "stratuslab_lc_plugin.testing.pytest_plugin")
    }


def test_importing_the_plugin_imports_nothing_heavy():
    code = textwrap.dedent(
        """
        import json, sys
        import stratuslab_lc_plugin.testing.pytest_plugin
        import stratuslab_lc_plugin.testing
        heavy = %r
        print(json.dumps(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))))
        """ % (HEAVY,)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_a_suite_without_the_fixtures_stays_light_and_unchanged(tmp_path):
    files = {
        "test_plain.py": """
            import sys

            HEAVY = %r

            def test_nothing_heavy_was_imported():
                loaded = [m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]
                assert loaded == []

            def test_arithmetic():
                assert 1 + 1 == 2
            """ % (HEAVY,),
    }
    with_plugin = run_pytest(tmp_path, files, *OTHER_PLUGINS_OFF)
    assert outcome(with_plugin) == "2 passed", with_plugin.stdout + with_plugin.stderr
    without_plugin = run_pytest(tmp_path, files, *OTHER_PLUGINS_OFF, "-p", "no:stratuslab")
    assert outcome(without_plugin) == "2 passed"

    def strip_time(text):
        return re.sub(r" in [0-9.]+s", "", text)

    assert strip_time(with_plugin.stdout) == strip_time(without_plugin.stdout)
    assert with_plugin.stderr == without_plugin.stderr == ""
    # Nothing started, nothing written (pytest's own byte code cache aside).
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["test_plain.py"]


USER_SUITE = """
    import os

    import pytest
    from libcloud.compute.deployment import ScriptDeployment

    DRIVERS = []


    def test_deploy(stratuslab_driver):
        DRIVERS.append(id(stratuslab_driver))
        image = next(i for i in stratuslab_driver.list_images() if "ubuntu" in i.name)
        script = ScriptDeployment("#!/bin/sh\\necho hello from the node\\n")
        node = stratuslab_driver.deploy_node(name="user-node", size="m1.small", image=image, deploy=script,
                                             wait_period=0.2)
        assert script.exit_status == 0 and script.stdout.strip() == "hello from the node"
        stratuslab_driver.destroy_node(node)


    def test_leaves_a_node_and_an_attached_volume(stratuslab_driver):
        DRIVERS.append(id(stratuslab_driver))
        image = next(i for i in stratuslab_driver.list_images() if "ubuntu" in i.name)
        node = stratuslab_driver.create_node(name="left-behind", size="m1.small", image=image)
        stratuslab_driver.wait_until_running([node], wait_period=0.1, timeout=60)
        volume = stratuslab_driver.create_volume(1, "left-behind")
        stratuslab_driver.attach_volume(node, volume)
        stratuslab_driver.create_volume(1, "also-left-behind")


    def test_nothing_was_left_behind(stratuslab_driver):
        DRIVERS.append(id(stratuslab_driver))
        assert stratuslab_driver.list_nodes() == []
        assert stratuslab_driver.list_volumes() == []
        assert len(set(DRIVERS)) == 3  # a new driver for each test


    def test_config_is_in_the_environment(stratuslab_config, stratuslab_cloud):
        assert os.environ["STRATUSLAB_USER_CONFIG"] == stratuslab_config == stratuslab_cloud.config_path
        assert os.path.isfile(stratuslab_config)
        from libcloud.compute.providers import get_driver
        assert [loc.id for loc in get_driver("stratuslab")("default").list_locations()] == ["local"]


    def test_the_environment_is_restored_after():
        assert "STRATUSLAB_USER_CONFIG" not in os.environ


    def test_users_and_faults_are_exposed(stratuslab_cloud, stratuslab_driver):
        from stratuslab_lc_plugin.errors import ServiceUnavailableError
        assert len(stratuslab_cloud.users) == 1
        stratuslab_cloud.faults.add("one.vmpool.info=http-503")
        with pytest.raises(ServiceUnavailableError):
            stratuslab_driver.list_nodes()
        image = stratuslab_driver.list_images()[0]
        stratuslab_driver.create_volume(1, "made-under-a-fault")   # removed despite the fault


    def test_faults_do_not_leak_into_the_next_test(stratuslab_cloud, stratuslab_driver):
        assert list(stratuslab_cloud.faults) == []
        assert stratuslab_driver.list_nodes() == [] and stratuslab_driver.list_volumes() == []


    @pytest.mark.stratuslab_own_cloud(users={"alice": "secret-1"}, faults=["marketplace=http-500:1"])
    def test_own_cloud(stratuslab_cloud, stratuslab_session_cloud, stratuslab_driver):
        assert stratuslab_cloud.url != stratuslab_session_cloud.url
        assert stratuslab_cloud.users == {"alice": "secret-1"}
        assert [f.spec for f in stratuslab_cloud.faults] == ["marketplace=http-500:1"]
        assert stratuslab_driver.list_nodes() == []


    @pytest.mark.stratuslab_own_cloud(faults=["one.vmpool.info=one-error:1"])
    def test_the_fixtures_do_not_spend_a_faults_count(stratuslab_driver):
        from stratuslab_lc_plugin.errors import ServiceError
        with pytest.raises(ServiceError):
            stratuslab_driver.list_nodes()   # the first call of the test gets the fault
        assert stratuslab_driver.list_nodes() == []
"""


def test_a_users_suite_creates_deploys_and_leaves_nothing_behind(tmp_path):
    proc = run_pytest(tmp_path, {"test_user.py": USER_SUITE})
    assert outcome(proc) == "9 passed", proc.stdout + proc.stderr


def test_one_cloud_per_test_on_request(tmp_path):
    files = {
        "test_per_test.py": """
            URLS = []

            def test_one(stratuslab_cloud):
                URLS.append(stratuslab_cloud.url)

            def test_two(stratuslab_cloud, stratuslab_driver):
                URLS.append(stratuslab_cloud.url)
                assert stratuslab_driver.list_nodes() == []
                assert len(set(URLS)) == 2
            """,
    }
    proc = run_pytest(tmp_path, files, "--stratuslab-cloud-per-test")
    assert outcome(proc) == "2 passed", proc.stdout + proc.stderr
    proc = run_pytest(tmp_path, files)  # the shared cloud: one URL
    assert outcome(proc) == "1 failed, 1 passed" and "assert 1 == 2" in proc.stdout


DELAY_SUITE = """
    import json, os

    def test_lifecycle_delays(stratuslab_cloud, stratuslab_driver):
        expected = json.loads(os.environ["EXPECTED_DELAYS"])
        assert {step: stratuslab_cloud.lifecycle.delays[step] for step in expected} == expected
        if expected.get("pending") == 600:
            image = next(i for i in stratuslab_driver.list_images() if "ubuntu" in i.name)
            node = stratuslab_driver.create_node(name="slow", size="m1.small", image=image)
            # Ten minutes per pending step: the node cannot have left it yet.
            assert stratuslab_driver.ex_get_node(node.id).extra["state_label"] == "Pending"
"""


@pytest.mark.parametrize("option,ini,expected", [
    (None, None, {"pending": 0.05, "boot": 0.05, "epilog": 0.05}),
    ("0.01", None, {"pending": 0.01, "boot": 0.01, "save": 0.01}),
    ("pending=600,default=0", None, {"pending": 600, "boot": 0, "shutdown": 0}),
    (None, "pending=600", {"pending": 600, "boot": 0.3}),  # unnamed steps: the cloud's own default
    ("boot=2", "pending=600", {"pending": 0.3, "boot": 2}),  # the option wins over the ini value
])
def test_delays_from_the_option_or_the_ini_file(tmp_path, monkeypatch, option, ini, expected):
    monkeypatch.setenv("EXPECTED_DELAYS", json.dumps(expected))
    files = {"test_delay.py": DELAY_SUITE}
    if ini is not None:
        files["pytest.ini"] = "[pytest]\nstratuslab_delay = %s\n" % ini
    proc = run_pytest(tmp_path, files, *(["--stratuslab-delay", option] if option else []))
    assert outcome(proc) == "1 passed", proc.stdout + proc.stderr


@pytest.mark.parametrize("value,message", [
    ("fast", "--stratuslab-delay: 'fast': 'fast' is not a number of seconds"),
    ("-1", "--stratuslab-delay: '-1': seconds must be >= 0"),
    ("boot=1,boot=2", "--stratuslab-delay: step 'boot' is given twice"),
    ("bot=1", "--stratuslab-delay: unknown delay step(s): bot"),
])
def test_a_bad_delay_is_a_usage_error_naming_the_option(tmp_path, value, message):
    proc = run_pytest(tmp_path, {"test_x.py": "def test_x():\n    pass\n"}, "--stratuslab-delay", value)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's exit status for usage errors
    assert message in proc.stderr


def test_bad_marker_options_fail_that_test_with_a_clear_message(tmp_path):
    files = {
        "test_marker.py": """
            import pytest

            @pytest.mark.stratuslab_own_cloud(faults=["nonsense"])
            def test_bad(stratuslab_cloud):
                pass

            @pytest.mark.stratuslab_own_cloud(0.1)
            def test_positional(stratuslab_cloud):
                pass

            def test_good(stratuslab_driver):
                assert stratuslab_driver.list_nodes() == []
            """,
    }
    proc = run_pytest(tmp_path, files)
    assert outcome(proc) == "1 passed, 2 errors", proc.stdout + proc.stderr
    assert "cannot start the local StratusLab cloud of @pytest.mark.stratuslab_own_cloud{'faults': ['nonsense']}: " \
           "fault 'nonsense' is not TARGET=KIND[:COUNT]" in proc.stdout
    assert "@pytest.mark.stratuslab_own_cloud takes keyword arguments only" in proc.stdout


# -- without pytest: the context managers ---------------------------------------------------


def test_local_cloud_sets_and_restores_the_environment(monkeypatch):
    from libcloud.compute.providers import get_driver

    monkeypatch.setenv("STRATUSLAB_USER_CONFIG", "/before")
    monkeypatch.delenv("STRATUSLAB_KEYPAIRS_DIR", raising=False)
    with local_cloud(delays=0.01) as cloud:
        assert os.environ["STRATUSLAB_USER_CONFIG"] == cloud.config_path
        driver = get_driver("stratuslab")("default")
        assert [loc.id for loc in driver.list_locations()] == ["local"]
        # Key pairs made by code under test go to a temporary store, not to ~/.stratuslab.
        pair = driver.create_key_pair("under-test")
        assert pair.extra["private_key_path"].startswith(cloud.keypairs_dir + os.sep)
        assert driver_for(cloud).get_key_pair("under-test").public_key == pair.public_key
        state_dir, keypairs = cloud.state_dir, cloud.keypairs_dir
    assert os.environ["STRATUSLAB_USER_CONFIG"] == "/before" and "STRATUSLAB_KEYPAIRS_DIR" not in os.environ
    assert not os.path.exists(state_dir) and not os.path.exists(keypairs)  # temporary: removed
    monkeypatch.delenv("STRATUSLAB_USER_CONFIG")
    with local_cloud(set_env=False):
        assert "STRATUSLAB_USER_CONFIG" not in os.environ


def test_nothing_left_behind_keeps_what_existed_and_reports_what_it_cannot_remove():
    with local_cloud(delays=0.01, set_env=False) as cloud:
        driver = driver_for(cloud)
        kept = driver.create_volume(1, "made-before")
        with nothing_left_behind(driver):
            driver.create_volume(1, "made-during")
        assert [v.id for v in driver.list_volumes()] == [kept.id]

        # A fault the clean-up is not told about stops it: the error names what is left.
        with pytest.raises(LeftBehindError) as caught:
            with nothing_left_behind(driver):
                made = driver.create_volume(1, "undeletable")
                cloud.faults.add("DELETE /disks/*=http-500")
        assert "destroy volume %s" % made.id in str(caught.value)
        # Told about the cloud, it sets the faults aside while cleaning and puts them back.
        with nothing_left_behind(driver, cloud=cloud):
            pass
        assert [f.spec for f in cloud.faults] == ["DELETE /disks/*=http-500"]
        cloud.faults.clear()
        with nothing_left_behind(driver, cloud=cloud):
            driver.destroy_volume(made)   # what the block removed itself is no problem
        assert [v.id for v in driver.list_volumes()] == [kept.id]


# -- README ---------------------------------------------------------------------------------


def readme_examples():
    """The code blocks of README's "Testing your own code" section, in order."""
    readme = (Path(__file__).resolve().parents[1] / "README.rst").read_text(encoding="utf-8")
    section = readme.split("\nTesting your own code\n", 1)[1].split("\n=====", 1)[0]
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", section)
    return [textwrap.dedent(block) for block in blocks]


def test_the_readme_examples_run_as_written(tmp_path):
    example, marker, context = readme_examples()
    proc = run_pytest(tmp_path, {"test_readme.py": "import pytest\n\n" + example + "\n\n" + marker})
    assert outcome(proc) == "2 passed", proc.stdout + proc.stderr
    code = "from libcloud.compute.providers import get_driver\n" + context.replace("...", "driver.list_nodes()")
    exec(compile(code, "README.rst", "exec"), {})
