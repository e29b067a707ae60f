"""Guests end what they start: no process a guest's command left behind outlives its VM.

Commands that leave processes behind (``cmd &``, daemons that double-fork, ``setsid``)
escape their process group and session. The guest's supervisor (a Linux child subreaper)
keeps them in its tree, and stopping the guest -- the VM's destroy, or the cloud's stop --
kills that tree.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
from libcloud.compute.base import NodeAuthSSHKey
from libcloud.compute.deployment import ScriptDeployment
from libcloud.compute.providers import get_driver

from stratuslab_lc_plugin.emulator import LocalCloud

# tests/ is on sys.path (setup.cfg: [tool:pytest] pythonpath = tests).
from keys import key_factory  # noqa: F401 (pytest fixture)
from test_guests import connect, ed_key, manager, run  # noqa: F401 (pytest fixtures)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="only Linux has child subreapers; elsewhere a guest kills process groups"),
]

BASE = "127.1.248."
# The issue's own example, writing its pid where the test can read it. Without the
# redirection the background shell keeps the channel's stdout open, as it would with sshd.
DETACHED = "setsid sh -c 'echo $$ > %s; exec sleep 299' &"
DAEMON = "(setsid sh -c 'echo $$ > %s; exec sleep 298' &) </dev/null >/dev/null 2>&1"


def alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pid_in(path: str) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with open(path) as handle:
                text = handle.read().strip()
            if text:
                return int(text)
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("no pid written to %s" % path)


def gone(pid: int) -> bool:
    """True once the process has ended (bounded wait: the kill and the reaping take a moment)."""
    deadline = time.monotonic() + 20
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def start_leftovers(client, home: str):
    """Leave a detached shell (holding the channel open) and a double-forked daemon behind."""
    channel = client.get_transport().open_session(timeout=10)
    channel.exec_command(DETACHED % "detached.pid")
    assert run(client, DAEMON % "daemon.pid")[2] == 0
    pids = [pid_in(os.path.join(home, "detached.pid")), pid_in(os.path.join(home, "daemon.pid"))]
    assert all(alive(pid) for pid in pids)
    # They really left the command's session and process group, to nobody's direct care.
    assert all(os.getsid(pid) == pid for pid in pids)
    return channel, pids


def test_stopping_a_guest_ends_what_its_commands_left_behind(manager, ed_key):
    port = manager.vm_running(1, BASE + "1", ed_key.public_line, None)
    with connect(BASE + "1", port, ed_key) as client:
        channel, pids = start_leftovers(client, manager.guest_home(1))
        manager.vm_stopped(1)
        assert all(gone(pid) for pid in pids)
        assert channel.recv_exit_status() == -1  # closed with the guest, without a status


def test_a_command_killed_by_its_client_takes_its_process_group(manager, ed_key):
    port = manager.vm_running(2, BASE + "2", ed_key.public_line, None)
    with connect(BASE + "2", port, ed_key) as client:
        channel = client.get_transport().open_session(timeout=10)
        channel.exec_command("sleep 297 & echo $! > child.pid; wait")
        child = pid_in(os.path.join(manager.guest_home(2), "child.pid"))
        channel.close()
        assert gone(child)
        assert run(client, "echo alive")[0] == "alive\n"


def test_commands_keep_default_signal_handling(manager, ed_key):
    port = manager.vm_running(3, BASE + "3", ed_key.public_line, None)
    with connect(BASE + "3", port, ed_key) as client:
        # Python ignores SIGPIPE and SIGXFSZ in its own processes; commands must not inherit that.
        assert run(client, "grep -E '^Sig(Ign|Blk):' /proc/self/status")[0].split() == [
            "SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]


@pytest.fixture
def own_cloud(tmp_path):
    with LocalCloud(state_dir=str(tmp_path / "cloud"), delays=0.02) as cloud:
        yield cloud


def test_destroy_node_and_the_clouds_stop_end_the_guests_leftovers(own_cloud, key_factory):
    driver = get_driver("stratuslab")("default", stratuslab_user_config=own_cloud.config_path)
    image = next(i for i in driver.list_images() if "ubuntu" in i.name)
    key = key_factory("ed25519")
    leftovers = {}
    for name in ("destroyed", "kept"):
        script = ScriptDeployment(
            "#!/bin/sh\n%s\n%s\n" % (DETACHED.replace(" &", " >/dev/null 2>&1 &") % "detached.pid",
                                     DAEMON % "daemon.pid"))
        node = driver.deploy_node(name=name, size="t1.micro", image=image, deploy=script,
                                  auth=NodeAuthSSHKey(key.public_line), ssh_key=key.private_path,
                                  wait_period=0.1, timeout=60)
        assert script.exit_status == 0, script.stderr
        home = own_cloud.guests.guest_home(int(node.id))
        leftovers[name] = (node, [pid_in(os.path.join(home, f)) for f in ("detached.pid", "daemon.pid")])
    node, pids = leftovers["destroyed"]
    assert all(alive(pid) for pid in pids)
    driver.destroy_node(node)
    assert all(gone(pid) for pid in pids)
    _, kept = leftovers["kept"]
    assert all(alive(pid) for pid in kept)  # another VM's processes are its own business
    own_cloud.stop()
    assert all(gone(pid) for pid in kept)
