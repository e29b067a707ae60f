"""The local cloud's SSH guests on their own: real SSH connections to loopback addresses."""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time

import paramiko
import pytest

from stratuslab_lc_plugin.emulator import guests as guests_module
from stratuslab_lc_plugin.emulator.guests import GuestManager, parse_authorized_keys
from stratuslab_lc_plugin.ssh.keys import load_private_key

# tests/ is on sys.path (setup.cfg: [tool:pytest] pythonpath = tests).
from keys import key_factory  # noqa: F401 (pytest fixture)

pytestmark = pytest.mark.timeout(60)

BASE = "127.1.251."  # addresses of the public network range, apart from other tests


class Catalogue:
    def entry(self, image_id):
        class Entry:
            has_sftp = image_id != "ttylinux"

        return Entry() if image_id != "unknown" else None


@pytest.fixture
def manager(tmp_path):
    with GuestManager(str(tmp_path), Catalogue()) as guests:
        yield guests


@pytest.fixture
def ed_key(key_factory):
    return key_factory("ed25519")


def connect(ip, port, key, user="root", **options) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(ip, port, user, pkey=load_private_key(key.private_path).pkey if key else None,
                   allow_agent=False, look_for_keys=False, timeout=10, **options)
    return client


def run(client, command, stdin=None):
    chan = client.get_transport().open_session(timeout=10)
    chan.settimeout(20)
    chan.exec_command(command)
    if stdin is not None:
        chan.sendall(stdin)
    chan.shutdown_write()
    out = chan.makefile("rb").read()
    err = chan.makefile_stderr("rb").read()
    return out.decode(), err.decode(), chan.recv_exit_status()


def guest_threads():
    return [t for t in threading.enumerate() if t.name.startswith("guest-") and t.is_alive()]


def test_exec_runs_a_real_shell_in_the_guest_home(manager, ed_key, monkeypatch):
    monkeypatch.setenv("CLOUD_SECRET_FOR_TEST", "must-not-leak")
    port = manager.vm_running(1, BASE + "1", ed_key.public_line, "centos")
    with connect(BASE + "1", port, ed_key) as client:
        out, err, status = run(client, 'pwd; echo "$HOME"; echo to-err >&2; echo "[$CLOUD_SECRET_FOR_TEST]"; exit 7')
        home = manager.guest_home(1)
        assert out.splitlines() == [home, home, "[]"]
        assert err == "to-err\n"
        assert status == 7
        assert run(client, "true")[2] == 0
        assert run(client, "kill -9 $$")[2] == 128 + 9
        assert run(client, "cat; echo done", stdin=b"from stdin\n")[0] == "from stdin\ndone\n"
        big = os.urandom(300000).hex()  # larger than any window or pipe buffer
        assert run(client, "cat", stdin=big.encode())[0] == big


def test_sftp_paths_are_relative_to_home_and_absolute_paths_work(manager, ed_key, tmp_path):
    port = manager.vm_running(2, BASE + "2", ed_key.public_line, None)
    outside = tmp_path / "outside.txt"
    with connect(BASE + "2", port, ed_key) as client, client.open_sftp() as sftp:
        assert sftp.normalize(".") == manager.guest_home(2)
        sftp.mkdir("dir")
        with sftp.open("dir/file.txt", "w") as handle:
            handle.write("hello")
        sftp.chmod("dir/file.txt", 0o751)
        with sftp.open("dir/file.txt", "a") as handle:
            handle.write(" world")
        assert sorted(sftp.listdir(".")) == [".ssh", "dir"]
        with sftp.open(str(outside), "w") as handle:
            handle.write("outside")
        with sftp.open("dir/file.txt") as handle:
            assert handle.read() == b"hello world"
        sftp.rename("dir/file.txt", "dir/moved.txt")
        assert sftp.stat("dir/moved.txt").st_mode & 0o777 == 0o751
        with pytest.raises(IOError):
            sftp.stat("dir/file.txt")
        sftp.remove("dir/moved.txt")
        sftp.rmdir("dir")
    assert outside.read_text() == "outside"


def test_image_without_sftp_refuses_the_subsystem_but_runs_commands(manager, ed_key):
    port = manager.vm_running(3, BASE + "3", ed_key.public_line, "ttylinux")
    with connect(BASE + "3", port, ed_key) as client:
        with pytest.raises(paramiko.SSHException):
            client.open_sftp()
        assert run(client, "echo still here")[0] == "still here\n"


def test_unknown_image_gets_sftp(manager, ed_key):
    port = manager.vm_running(4, BASE + "4", ed_key.public_line, "unknown")
    with connect(BASE + "4", port, ed_key) as client:
        client.open_sftp().close()


def test_only_root_with_a_context_key_gets_in(manager, key_factory):
    rsa = key_factory("rsa")
    ecdsa = key_factory("ecdsa")
    stranger = key_factory("ed25519", name="stranger")
    context = "# keys\n%s\n\n%s\n" % (rsa.public_line, ecdsa.public_line)
    port = manager.vm_running(5, BASE + "5", context, None)
    for key in (rsa, ecdsa):
        with connect(BASE + "5", port, key) as client:
            assert run(client, "echo ok")[0] == "ok\n"
    with pytest.raises(paramiko.AuthenticationException):
        connect(BASE + "5", port, stranger)
    with pytest.raises(paramiko.AuthenticationException):
        connect(BASE + "5", port, rsa, user="admin")
    with pytest.raises(paramiko.AuthenticationException):
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(BASE + "5", port, "root", password="root", allow_agent=False, look_for_keys=False)


def test_a_key_added_to_authorized_keys_is_accepted_like_on_a_real_guest(manager, ed_key, key_factory):
    added = key_factory("ecdsa", "pkcs8")
    port = manager.vm_running(6, BASE + "6", ed_key.public_line, None)
    with pytest.raises(paramiko.AuthenticationException):
        connect(BASE + "6", port, added)
    with connect(BASE + "6", port, ed_key) as client:
        run(client, "cat >> .ssh/authorized_keys", stdin=(added.public_line + "\n").encode())
    with connect(BASE + "6", port, added) as client:
        assert run(client, "echo in")[0] == "in\n"


def test_no_key_means_no_server(manager):
    assert manager.vm_running(7, BASE + "7", None, None) is None
    assert manager.vm_running(7, BASE + "7", "not a key", None) is None
    assert manager.port_of(7) is None


def test_stop_closes_sessions_kills_commands_and_frees_the_address(manager, ed_key):
    port = manager.vm_running(8, BASE + "8", ed_key.public_line, None)
    client = connect(BASE + "8", port, ed_key)
    chan = client.get_transport().open_session(timeout=10)
    chan.exec_command("echo $$ > pid; exec sleep 60")
    pid_file = os.path.join(manager.guest_home(8), "pid")
    deadline = time.monotonic() + 10
    while not (os.path.exists(pid_file) and open(pid_file).read().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(open(pid_file).read())
    manager.vm_stopped(8)
    assert chan.recv_exit_status() == -1  # closed without a status: returns once the channel dies
    # The client's transport thread notices the server's close on its own schedule.
    deadline = time.monotonic() + 10
    while client.get_transport().is_active() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.get_transport().is_active()
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # SIGKILL is immediate, reaping by the session thread may lag
            os.kill(pid, 0)
            time.sleep(0.05)
    with pytest.raises(OSError):
        socket.create_connection((BASE + "8", port), timeout=5).close()
    assert not [t for t in guest_threads() if t.name.startswith("guest-8-")]
    client.close()


def test_running_again_keeps_the_server_and_close_stops_all(tmp_path, ed_key):
    manager = GuestManager(str(tmp_path))
    first = manager.vm_running(9, BASE + "9", ed_key.public_line, None)
    assert manager.vm_running(9, BASE + "9", ed_key.public_line, None) == first
    manager.vm_running(10, BASE + "10", ed_key.public_line, None)
    assert len(guest_threads()) >= 2
    manager.close()
    assert guest_threads() == []
    manager.vm_stopped(9)  # unknown VM: nothing to do


def test_busy_port_falls_back_to_one_shared_port(tmp_path, ed_key):
    blocker = socket.socket()
    blocker.bind((BASE + "20", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    manager = GuestManager(str(tmp_path), preferred_port=taken)
    try:
        shared = manager.vm_running(20, BASE + "20", ed_key.public_line, None)
        assert shared != taken
        assert manager.vm_running(21, BASE + "21", ed_key.public_line, None) == shared
        other = socket.socket()
        other.bind((BASE + "22", shared))
        other.listen(1)
        try:
            alone = manager.vm_running(22, BASE + "22", ed_key.public_line, None)
            assert alone not in (None, shared)
            with connect(BASE + "22", alone, ed_key) as client:
                assert run(client, "echo 22")[0] == "22\n"
        finally:
            other.close()
        with connect(BASE + "21", shared, ed_key) as client:
            assert run(client, "echo 21")[0] == "21\n"
    finally:
        manager.close()
        blocker.close()


def test_host_key_is_ed25519_and_kept_per_state_dir(tmp_path, ed_key):
    with GuestManager(str(tmp_path)) as manager:
        first = manager.host_key
        port = manager.vm_running(30, BASE + "30", ed_key.public_line, None)
        with connect(BASE + "30", port, ed_key) as client:
            seen = client.get_transport().get_remote_server_key()
    assert first.get_name() == "ssh-ed25519"
    assert seen.asbytes() == first.asbytes()
    assert os.stat(tmp_path / "guests" / "ssh_host_ed25519_key").st_mode & 0o077 == 0
    with GuestManager(str(tmp_path)) as again:
        assert again.host_key.asbytes() == first.asbytes()


def test_commands_per_connection_are_bounded(manager, ed_key):
    port = manager.vm_running(31, BASE + "31", ed_key.public_line, None)
    with connect(BASE + "31", port, ed_key) as client:
        transport = client.get_transport()
        waiting = []
        for _ in range(guests_module.MAX_CHANNELS):
            chan = transport.open_session(timeout=10)
            chan.exec_command("cat")  # runs until stdin closes
            waiting.append(chan)
        with pytest.raises(paramiko.SSHException):
            transport.open_session(timeout=10).exec_command("true")
        waiting[0].shutdown_write()
        assert waiting[0].recv_exit_status() == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the server notices the closed channel
            try:
                assert run(client, "echo again")[0] == "again\n"
                break
            except paramiko.SSHException:
                time.sleep(0.05)
        else:
            pytest.fail("a freed channel slot was not reused")
        for chan in waiting[1:]:
            chan.close()


def test_parse_authorized_keys_reads_lines_with_options_and_comments(key_factory):
    rsa, ed = key_factory("rsa"), key_factory("ed25519")
    text = 'from="127.0.0.1",no-pty %s\n# comment\n  %s  \ngarbage\nssh-rsa !!!notbase64\n' % (
        rsa.public_line, ed.public_line)
    blobs = parse_authorized_keys(text)
    assert blobs == {load_private_key(k.private_path).pkey.asbytes() for k in (rsa, ed)}


def test_clients_going_away_are_quiet_while_real_errors_are_logged(manager, ed_key, caplog):
    port = manager.vm_running(40, BASE + "40", ed_key.public_line, None)
    caplog.set_level(logging.DEBUG, logger=guests_module.__name__)

    def ssh_errors():
        return [r.getMessage() for r in caplog.records
                if r.name.startswith(guests_module.SSH_LOG) and r.levelno >= logging.ERROR]

    def wait_for_the_server(predicate):
        deadline = time.monotonic() + 10
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.05)

    # A client that resets its connection (it died, or closed with unread data).
    client = connect(BASE + "40", port, ed_key)
    raw = client.get_transport().sock
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    client.close()
    # A client that connects and leaves before saying anything (a port probe).
    socket.create_connection((BASE + "40", port), timeout=5).close()
    wait_for_the_server(lambda: sum("went away" in r.getMessage() or "before its banner" in r.getMessage()
                                    for r in caplog.records) >= 2)
    assert ssh_errors() == []
    # A peer speaking another protocol version is a real error, and it is still logged.
    with socket.create_connection((BASE + "40", port), timeout=5) as old:
        old.sendall(b"SSH-1.5-old-client\r\n")
        wait_for_the_server(ssh_errors)
    assert any("Incompatible version" in text for text in ssh_errors())
    assert run(connect(BASE + "40", port, ed_key), "echo still serving")[0] == "still serving\n"
