"""Nothing of a guest's command reaches the client before the answer to its exec request.

paramiko sends the SUCCESS reply to an exec or shell request only after the server's check
callback has returned. A guest that started the command inside that callback let a fast
command (``true``, ``exit 7``, the deployment's ``mkdir ... && pwd``) send its exit status
and close the channel first now and then, on a busy machine; the client's ``exec_command``
then failed with ``SSHException("Channel closed.")``. The tests below make that ordering
certain instead of rare: the check callback sleeps after accepting, holding the reply back.
"""

from __future__ import annotations

import socket
import threading
import time

import paramiko
import pytest
from libcloud.compute.deployment import ScriptDeployment

from stratuslab_lc_plugin.emulator import guests as guests_module

# tests/ is on sys.path (setup.cfg: [tool:pytest] pythonpath = tests).
from keys import key_factory  # noqa: F401 (pytest fixture)
from test_guests import connect, ed_key, manager  # noqa: F401 (pytest fixtures)

pytestmark = pytest.mark.timeout(120)

HOLD = 0.5  # seconds the reply is held back; any fast command ends well within it
BASE = "127.1.249."


@pytest.fixture
def held_reply(monkeypatch):
    """Every guest accepts an exec request, then waits before paramiko may answer it."""
    accept = guests_module._GuestServer.check_channel_exec_request

    def accept_then_hold(self, channel, command):
        accepted = accept(self, channel, command)
        time.sleep(HOLD)
        return accepted

    monkeypatch.setattr(guests_module._GuestServer, "check_channel_exec_request", accept_then_hold)


class _EagerServer(paramiko.ServerInterface):
    """A server that starts the command inside the check callback, as the guests did."""

    def check_auth_none(self, username):
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username):
        return "none"

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command):
        def run_true():
            channel.send_exit_status(0)
            channel.close()

        threading.Thread(target=run_true, daemon=True).start()
        time.sleep(HOLD)
        return True


def test_the_held_reply_breaks_a_server_that_starts_commands_in_the_callback(manager):
    # The harness itself: with the reply held back, starting in the callback always loses.
    server_sock, client_sock = socket.socketpair()
    server = paramiko.Transport(server_sock)
    server.add_server_key(manager.host_key)
    server.start_server(event=threading.Event(), server=_EagerServer())
    client = paramiko.Transport(client_sock)
    try:
        client.start_client(timeout=10)
        client.auth_none("root")
        channel = client.open_session(timeout=10)
        with pytest.raises(paramiko.SSHException, match="Channel closed"):
            channel.exec_command("true")
    finally:
        client.close()
        server.close()


def test_fast_commands_get_their_reply_first(manager, ed_key, held_reply):
    port = manager.vm_running(1, BASE + "1", ed_key.public_line, None)
    with connect(BASE + "1", port, ed_key) as client:
        transport = client.get_transport()
        for command, out, status in (("true", b"", 0), ("exit 7", b"", 7),
                                     ("echo fast", b"fast\n", 0)):
            channel = transport.open_session(timeout=10)
            channel.settimeout(20)
            channel.exec_command(command)  # "Channel closed." when the command went first
            assert channel.makefile("rb").read() == out
            assert channel.recv_exit_status() == status
        assert transport.is_active()


def test_deploy_node_with_a_fast_script_and_held_replies(driver, key_factory, held_reply):
    image = next(i for i in driver.list_images() if "ubuntu" in i.name)
    key = key_factory("ed25519")
    script = ScriptDeployment("true")
    node = None
    try:
        node = driver.deploy_node(name="held-reply", size="t1.micro", image=image, deploy=script,
                                  ssh_key=key.private_path, wait_period=0.1, timeout=90)
        assert script.exit_status == 0
    finally:
        nodes = [node] if node is not None else [n for n in driver.list_nodes() if n.name == "held-reply"]
        for leftover in nodes:
            driver.destroy_node(leftover)
