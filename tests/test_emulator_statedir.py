"""The local cloud touches no user data: its state directory holds only its own files.

A user may point ``--state-dir`` anywhere (``~/.stratuslab`` holds their real
configuration), so the cloud refuses a directory holding files it did not write, removes
only files it wrote and that still hold what it wrote, keeps everything private whatever
the umask (``cloud.db`` holds passwords), and takes passwords from a file or the
environment rather than the command line.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import requests
from libcloud.compute.base import NodeAuthSSHKey
from libcloud.compute.providers import get_driver

from stratuslab_lc_plugin.emulator import LocalCloud
from stratuslab_lc_plugin.emulator.statedir import MARKER

# tests/ is on sys.path (setup.cfg: [tool:pytest] pythonpath = tests).
from keys import key_factory  # noqa: F401 (pytest fixture)
from test_emulator_front import ROOT, _serve, _wait_for_config, pool_call

pytestmark = pytest.mark.timeout(120)

REAL_CONFIG = b"[default]\nselected_section = lal\n\n[lal]\nendpoint = cloud.lal.stratuslab.eu\n" \
              b"username = jane\npassword = her-real-password\n"


def snapshot(directory):
    """Every entry below ``directory`` with its bytes (files) and mode."""
    found = {}
    for top, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(top, name)
            info = os.lstat(path)
            content = open(path, "rb").read() if stat.S_ISREG(info.st_mode) else None
            found[os.path.relpath(path, directory)] = (stat.S_IMODE(info.st_mode), content)
    return found


@pytest.fixture
def stratuslab_home(tmp_path):
    """A user's ~/.stratuslab with their real configuration in it."""
    home = tmp_path / "home"
    config_dir = home / ".stratuslab"
    config_dir.mkdir(parents=True)
    (config_dir / "stratuslab-user.cfg").write_bytes(REAL_CONFIG)
    (config_dir / "stratuslab-user.cfg").chmod(0o600)
    return home


def test_a_directory_with_a_users_configuration_is_refused_and_left_as_it_was(stratuslab_home):
    state_dir = stratuslab_home / ".stratuslab"
    before = snapshot(state_dir)
    with pytest.raises(ValueError, match="stratuslab-user.cfg") as refused:
        LocalCloud(state_dir=str(state_dir), guests=False).start()
    assert "empty or new directory" in str(refused.value)
    assert snapshot(state_dir) == before  # byte for byte, and nothing added


def test_cloud_serve_refuses_it_too(stratuslab_home):
    state_dir = stratuslab_home / ".stratuslab"
    before = snapshot(state_dir)
    env = dict(os.environ, HOME=str(stratuslab_home),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "stratuslab_lc_plugin.emulator",
                           "--state-dir", str(state_dir)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "stratuslab-user.cfg" in done.stderr
    assert "her-real-password" not in done.stdout + done.stderr
    assert snapshot(state_dir) == before


def test_foreign_entries_in_a_used_directory_are_refused(tmp_path):
    state_dir = tmp_path / "state"
    with LocalCloud(state_dir=str(state_dir), guests=False):
        pass
    (state_dir / "notes.txt").write_text("mine\n")
    (state_dir / "results").mkdir()
    before = snapshot(state_dir)
    with pytest.raises(ValueError, match="notes.txt, results"):
        LocalCloud(state_dir=str(state_dir), guests=False).start()
    assert snapshot(state_dir) == before


def test_a_file_it_wrote_then_changed_by_someone_is_kept_and_refused(tmp_path):
    state_dir = tmp_path / "state"
    with LocalCloud(state_dir=str(state_dir), guests=False) as cloud:
        with open(cloud.config_path, "ab") as handle:
            handle.write(b"# my own notes, now\n")
        edited = open(cloud.config_path, "rb").read()
    assert open(state_dir / "stratuslab-user.cfg", "rb").read() == edited  # not removed
    with pytest.raises(ValueError, match="stratuslab-user.cfg changed since"):
        LocalCloud(state_dir=str(state_dir), guests=False).start()
    assert open(state_dir / "stratuslab-user.cfg", "rb").read() == edited


def test_a_link_in_place_of_its_database_is_refused(tmp_path):
    state_dir = tmp_path / "state"
    with LocalCloud(state_dir=str(state_dir), guests=False):
        pass
    precious = tmp_path / "precious.db"
    precious.write_bytes(b"not the cloud's")
    os.unlink(state_dir / "cloud.db")
    os.symlink(precious, state_dir / "cloud.db")
    with pytest.raises(ValueError, match="cloud.db"):
        LocalCloud(state_dir=str(state_dir), guests=False).start()
    assert precious.read_bytes() == b"not the cloud's"


def test_a_crashed_clouds_announcement_is_its_own_and_replaced(tmp_path):
    state_dir = str(tmp_path / "state")
    config = os.path.join(state_dir, "stratuslab-user.cfg")
    process = _serve(state_dir)
    _wait_for_config(process, config)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    stale = open(config, "rb").read()
    with LocalCloud(state_dir=state_dir, guests=False) as cloud:
        assert open(cloud.config_path, "rb").read() != stale  # a new port, a new file
        assert os.path.exists(cloud.ca_path)


def test_one_directory_serves_one_cloud_at_a_time(tmp_path):
    with LocalCloud(state_dir=str(tmp_path / "state"), guests=False):
        with pytest.raises(ValueError, match="in use by another local cloud"):
            LocalCloud(state_dir=str(tmp_path / "state"), guests=False).start()


def test_a_file_in_place_of_the_directory_is_refused(tmp_path):
    (tmp_path / "state").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        LocalCloud(state_dir=str(tmp_path / "state"), guests=False).start()


def test_everything_is_private_whatever_the_umask_and_the_directory_mode(tmp_path, key_factory):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state_dir.chmod(0o755)
    previous = os.umask(0o022)
    try:
        with LocalCloud(state_dir=str(state_dir), delays=0.02) as cloud:
            driver = get_driver("stratuslab")("default", stratuslab_user_config=cloud.config_path)
            image = next(i for i in driver.list_images() if "ubuntu" in i.name)
            node = driver.create_node(name="private", size="t1.micro", image=image,
                                      auth=NodeAuthSSHKey(key_factory("ed25519").public_line))
            driver.list_volumes()
            driver.ex_get_node(node.id)
            ssh = os.path.join(cloud.guests.guest_home(int(node.id)), ".ssh", "authorized_keys")
            deadline = time.monotonic() + 30
            while not os.path.exists(ssh) and time.monotonic() < deadline:
                time.sleep(0.05)
            cloud.client_cert("alice")
            files = snapshot(state_dir)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o755  # the user's directory, as given
    assert files["cloud.db"][0] == 0o600
    assert os.path.relpath(ssh, state_dir) in files
    wrong = {path: oct(mode) for path, (mode, content) in files.items()
             if mode != (0o600 if content is not None else 0o700)}
    assert wrong == {}
    assert {"cloud.db", MARKER, "tls", "guests", "ca.pem", "stratuslab-user.cfg", "id_ed25519"} <= set(files)


def serve_users(tmp_path, content: str, mode: int = 0o600):
    """``cloud serve --user-file`` with a file of that content and mode."""
    users = tmp_path / "users"
    users.write_text(content)
    users.chmod(mode)
    state_dir = str(tmp_path / "state")
    return state_dir, _serve(state_dir, "--user-file", str(users))


def test_users_from_a_file_or_the_environment_not_the_command_line(tmp_path):
    state_dir, process = serve_users(tmp_path, "# the cloud's users\nalice:pa:ss word%\n\nbob:b0b\n")
    try:
        parser = _wait_for_config(process, os.path.join(state_dir, "stratuslab-user.cfg"))
        with open("/proc/%d/cmdline" % process.pid, "rb") as handle:
            assert b"b0b" not in handle.read()
        url = parser.get("local", "endpoint").replace("/one-proxy/", "/one-proxy/pswd/")
        ca = parser.get("local", "ca_certs_path")
        for user, password, status in (("alice", "pa:ss word%", 200), ("bob", "b0b", 200),
                                       ("bob", "wrong", 401)):
            answer = requests.post(url, data=pool_call(), auth=(user, password), verify=ca, timeout=10)
            assert answer.status_code == status
    finally:
        process.terminate()
        process.communicate(timeout=30)
    env_dir = str(tmp_path / "env-state")
    env = dict(os.environ, STRATUSLAB_LC_USERS="carol:from-the-environment\n")
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    process = subprocess.Popen([sys.executable, "-m", "stratuslab_lc_plugin.emulator", "--state-dir", env_dir],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        parser = _wait_for_config(process, os.path.join(env_dir, "stratuslab-user.cfg"))
        assert (parser.get("local", "username"), parser.get("local", "password")) == (
            "carol", "from-the-environment")
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.mark.parametrize("content, expected", [
    ("alice:pw-1\nnocolon\n", "line 2: expected NAME:PASSWORD"),
    ("alice:\n", "line 1: user 'alice' has an empty password"),
    ("alice:pw-1\nalice:pw-2\n", "line 2: user 'alice' is given twice"),
    ("# nobody\n\n", "holds no NAME:PASSWORD line"),
])
def test_bad_user_files_are_refused_with_the_line(tmp_path, content, expected):
    _, process = serve_users(tmp_path, content)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2 and expected in err
    assert "pw-" not in err
    assert not os.path.exists(tmp_path / "state")


def test_a_user_file_others_can_read_gets_a_warning(tmp_path):
    state_dir, process = serve_users(tmp_path, "alice:secret\n", 0o644)
    try:
        _wait_for_config(process, os.path.join(state_dir, "stratuslab-user.cfg"))
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "readable by group or others" in err and "secret" not in err
