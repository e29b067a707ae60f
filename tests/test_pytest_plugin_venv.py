"""The pytest plugin as a new user gets it: a fresh venv, ``pip install <the wheel> pytest``, a test file.

pip resolves and installs every requirement from the configured index (nothing is borrowed
from the running environment), so this also proves the requirements complete. First a
suite that does not use the fixtures runs with pytest alone, then again once the wheel is
installed: the output must be the same. Then a user's test file, with no conftest, creates
a node, deploys a script to it over SSH and destroys it through ``stratuslab_driver``.
"""

from __future__ import annotations

import re
import textwrap
import venv
from pathlib import Path

import pytest

import venvkit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PLAIN_SUITE = """
    import sys

    HEAVY = ("libcloud", "paramiko", "cryptography", "requests", "stevedore", "rich",
             "stratuslab_lc_plugin.emulator")


    def test_nothing_heavy_is_imported_for_a_suite_without_the_fixtures():
        assert [m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in HEAVY)] == []


    def test_arithmetic():
        assert 6 * 7 == 42
"""

USER_SUITE = """
    from libcloud.compute.deployment import ScriptDeployment


    def test_create_deploy_destroy(stratuslab_driver):
        image = next(i for i in stratuslab_driver.list_images() if "ubuntu" in i.name)
        script = ScriptDeployment("#!/bin/sh\\necho deployed on $(uname -s)\\n")
        node = stratuslab_driver.deploy_node(name="my-test-node", size="m1.small", image=image, deploy=script)
        assert node.state == "running"
        assert script.exit_status == 0 and script.stdout.startswith("deployed on ")
        assert stratuslab_driver.destroy_node(node)
        assert node.id not in [n.id for n in stratuslab_driver.list_nodes()]


    def test_left_behind_on_purpose(stratuslab_driver):
        image = stratuslab_driver.list_images()[0]
        stratuslab_driver.create_node(name="forgotten", size="m1.small", image=image)


    def test_nothing_was_left_behind(stratuslab_driver):
        assert stratuslab_driver.list_nodes() == []
"""


def run_suite(env: venvkit.Venv, directory: Path, files: dict, cache: Path):
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return env.run(["-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=directory, check=False,
                   env={"XDG_CACHE_HOME": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}, timeout=600)


def without_duration(text: str) -> str:
    return re.sub(r" in [0-9.]+s", "", text)


def test_fresh_venv_with_only_the_wheel_and_pytest(tmp_path):
    deps = venvkit.dependency_view(tmp_path / "deps")
    builder = venvkit.make_venv(tmp_path / "builder", deps)
    wheel = venvkit.build_wheel(venvkit.copy_project(tmp_path / "project"), tmp_path / "dist", builder)

    root = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=True, symlinks=True, clear=True).create(root)
    env = venvkit.Venv(root)
    cache = tmp_path / "cache"   # stevedore's entry-point cache goes here, not into the home directory

    env.pip("install", "pytest", timeout=600)
    before = run_suite(env, tmp_path / "plain-before", {"test_plain.py": PLAIN_SUITE}, cache)
    assert before.returncode == 0, before.stdout + before.stderr

    env.pip("install", str(wheel), timeout=600)
    check = env.pip("check")
    assert check.stdout.strip() == "No broken requirements found."
    after = run_suite(env, tmp_path / "plain-after", {"test_plain.py": PLAIN_SUITE}, cache)
    assert after.returncode == 0, after.stdout + after.stderr
    assert without_duration(after.stdout) == without_duration(before.stdout)
    assert after.stderr == before.stderr == ""

    proc = run_suite(env, tmp_path / "users-project", {"test_my_cloud_code.py": USER_SUITE}, cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert without_duration(proc.stdout.strip().splitlines()[-1]) == "3 passed"
    assert sorted(p.name for p in (tmp_path / "users-project").iterdir()) == ["test_my_cloud_code.py"]
