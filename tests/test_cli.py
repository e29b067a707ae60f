"""The stratuslab-lc command line and stratus-copy-config, against the local cloud."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from stratuslab_lc_plugin.cli import copy_config_main, main
from stratuslab_lc_plugin.config import load_user_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def run(cloud, capsys):
    """``run(*argv)`` -> (exit status, stdout, stderr) with the shared cloud's configuration."""

    def invoke(*argv, config=True):
        args = list(argv) + (["--config", cloud.config_path] if config else [])
        status = main(args)
        out, err = capsys.readouterr()
        return status, out, err

    return invoke


def as_json(out):
    return json.loads(out)


def test_listings_as_json(run):
    status, out, _ = run("locations", "--json")
    assert status == 0 and as_json(out) == [
        {"id": "local", "name": "Local StratusLab cloud", "country": "ZZ", "default": True}
    ]
    status, out, _ = run("sizes", "--json")
    assert status == 0 and {row["id"] for row in as_json(out)} >= {"t1.micro", "m1.small", "c1.xlarge"}
    status, out, _ = run("images", "--json")
    assert status == 0 and all(len(row["id"]) == 27 for row in as_json(out))
    status, out, _ = run("volumes", "--json")
    assert status == 0 and isinstance(as_json(out), list)


def test_tables_for_people(run):
    status, out, _ = run("sizes")
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split()[:2] == ["id", "cpu"]
    assert any(line.split()[0] == "m1.small" for line in rows)


def test_node_and_volume_commands(run):
    status, out, _ = run("images", "--json")
    image = next(row["id"] for row in as_json(out) if "ubuntu" in row["name"])
    status, out, err = run("node", "create", "--name", "from-cli", "--image", image, "--wait", "--json")
    assert status == 0, err
    node = as_json(out)[0]
    assert node["state"] == "running" and node["public_ips"]

    status, out, _ = run("nodes", "--json")
    assert node["id"] in {row["id"] for row in as_json(out)}

    status, out, err = run("volume", "create", "--size", "2", "--name", "cli-volume", "--json")
    assert status == 0, err
    volume = as_json(out)[0]["id"]
    assert run("volume", "attach", volume, node["id"])[0] == 0
    status, out, _ = run("volumes", "--json")
    assert [row["attached_to"] for row in as_json(out) if row["id"] == volume] == [["%s:vdz" % node["id"]]]
    assert run("volume", "detach", volume)[0] == 0
    assert run("volume", "destroy", volume)[0] == 0

    for action in ("reboot", "destroy"):
        status, out, err = run("node", action, node["id"])
        assert status == 0, err
    status, out, _ = run("nodes", "--json")
    assert node["id"] not in {row["id"] for row in as_json(out)}


def test_deploy_runs_a_script(run, tmp_path):
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from the script\n")
    status, out, _ = run("images", "--json")
    image = next(row["id"] for row in as_json(out) if "ubuntu" in row["name"])
    status, out, err = run("deploy", "--name", "cli-deploy", "--image", image, "--script", str(script), "--json")
    assert status == 0, err
    result = as_json(out)
    assert result["exit_status"] == 0 and result["stdout"].strip() == "hello from the script"
    assert run("node", "destroy", result["id"])[0] == 0


def test_remote_failure_exits_1_with_one_line(run):
    status, out, err = run("node", "destroy", "999999")
    assert status == 1 and out == ""
    assert err.startswith("stratuslab-lc: error: local: one.vm.info failed") and err.count("\n") == 1


def test_usage_and_configuration_errors_exit_2(run, tmp_path):
    status, _, err = run("nodes", "--config", str(tmp_path / "missing.cfg"), config=False)
    assert status == 2 and "missing.cfg" in err and "Traceback" not in err
    status, _, err = run("nodes", "--location", "nowhere")
    assert status == 2 and "nowhere" in err
    status, _, err = run("volume", "create", "--size", "0", "--name", "x")
    assert status == 2 and "between 1 and 1024" in err
    with pytest.raises(SystemExit) as caught:
        main(["node", "create"])
    assert caught.value.code == 2


def test_config_from_environment(cloud, capsys, monkeypatch):
    monkeypatch.setenv("STRATUSLAB_USER_CONFIG", cloud.config_path)
    assert main(["locations", "--json"]) == 0
    assert as_json(capsys.readouterr().out)[0]["id"] == "local"


def test_drivers_lists_our_entry_point(capsys):
    assert main(["drivers", "--json"]) == 0
    rows = as_json(capsys.readouterr().out)
    ours = [row for row in rows if row["name"] == "stratuslab" and row["type"] == "compute"]
    assert ours and ours[0]["target"] == "stratuslab_lc_plugin.driver:StratusLabNodeDriver"


def test_copy_config_writes_a_private_file_once(tmp_path, capsys):
    target = tmp_path / "home" / ".stratuslab" / "stratuslab-user.cfg"
    assert copy_config_main(["--output", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert load_user_config(str(target)).default_location == "sl-cloud"
    assert copy_config_main(["--output", str(target)]) == 2
    assert "--force" in capsys.readouterr().err
    assert copy_config_main(["--output", str(target), "--force"]) == 0


def test_copy_config_defaults_to_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    completed = subprocess.run(
        [sys.executable, "-c", "from stratuslab_lc_plugin.cli import copy_config_main; raise SystemExit(copy_config_main([]))"],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / ".stratuslab" / "stratuslab-user.cfg").is_file()


def test_demo_runs_and_leaves_nothing_behind(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    completed = subprocess.run(
        [sys.executable, "-m", "stratuslab_lc_plugin.cli", "demo"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "destroy_node" in completed.stdout and "FAILED" not in completed.stdout
    assert list(scratch.iterdir()) == []
