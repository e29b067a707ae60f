"""SSH servers standing in for the guests of the local StratusLab cloud.

A real StratusLab VM runs sshd and its context script writes CONTEXT ``public_key`` into
``/root/.ssh/authorized_keys``; ``deploy_node`` then logs in as ``root`` and runs scripts
over exec and SFTP. To give ``deploy_node`` real SSH to talk to, each VM of the local cloud
that reaches RUNNING gets a small paramiko SSH server on the VM's own loopback address
(127.1.x.y for network ``public``), stopped again when the VM leaves RUNNING.

.. warning::
   A guest is not isolated. Commands sent to it run **on the host, as the user running the
   local cloud**, through ``/bin/sh -c``, with the VM's directory ``STATE_DIR/guests/<vm_id>``
   as home and working directory; absolute paths reach the whole host file system, over exec
   and over SFTP alike. The servers listen on loopback addresses only and accept only the
   ``root`` user with a key from the VM's CONTEXT (or one later added to the guest's
   ``~/.ssh/authorized_keys``, as on a real VM). Do not run the local cloud as a user whose
   files you would not hand to anyone holding those keys.

Port: 22 when the process may bind it, else one port chosen once per :class:`GuestManager`
and shared by all guests (each on its own address); a guest whose address has that port taken
gets a free one. The port is returned by :meth:`GuestManager.vm_running` so the cloud can
publish it (``SSH_PORT`` in the VM template, ``node.extra['ssh_port']`` on the driver side).

A command starts only once paramiko has answered its exec (or shell) request, so the client
always sees that answer before any output, exit status or close (:class:`_GuestTransport`).
A client that simply goes away (connection reset, closed before its banner) is logged at
DEBUG, not as paramiko's ERROR; other SSH errors are logged as they are.

Images whose catalogue entry has ``has_sftp`` false (like ttylinux, whose dropbear had no
SFTP server) get no SFTP subsystem, so the client's exec fallback is exercised.

Commands run under the guest's process supervisor (:mod:`.supervisor`). Stopping a guest
(its VM leaves RUNNING or is destroyed, or the cloud stops) closes its connections and, on
Linux, ends every process its commands started, also those that left their session with
``setsid`` or double-forked away (tests/test_guests_processes.py); elsewhere (untested
here) only the commands' process groups. A client closing a channel ends that command's
process group.

Threads are bounded: one acceptor per guest, at most :data:`MAX_CONNECTIONS` connections per
guest (one paramiko thread each), :data:`MAX_CHANNELS` channels per connection (two threads
per running command) and one thread reading the supervisor of a guest that ran a command.
Joins are bounded.
"""

from __future__ import annotations

import base64
import binascii
import errno
import ipaddress
import logging
import os
import re
import selectors
import socket
import threading
from typing import IO, Callable, Dict, List, Optional, Set

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from paramiko.common import (AUTH_FAILED, AUTH_SUCCESSFUL, MSG_CHANNEL_REQUEST,
                             OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED, OPEN_SUCCEEDED)
from paramiko.sftp import SFTP_FAILURE, SFTP_OK

from .statedir import private_dir, write_private
from .supervisor import Command, Supervisor

__all__ = ["GuestManager", "MAX_CONNECTIONS", "MAX_CHANNELS"]

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 8  # per guest
MAX_CHANNELS = 4  # per connection
POLL_INTERVAL = 0.2  # seconds; how fast an acceptor or a command notices it must stop
JOIN_TIMEOUT = 2.0
CHUNK = 32768
GUEST_USER = "root"
#: The logger of the guests' SSH transports (paramiko logs there, not to paramiko.transport).
SSH_LOG = __name__ + ".ssh"


class GuestManager:
    """Starts and stops the per-VM SSH servers; implements the cloud's ``GuestHooks`` seam.

    ``catalogue`` (optional) answers ``entry(image_id)`` with an object having ``has_sftp``.
    ``preferred_port`` exists for tests that need the fallback port path.
    """

    def __init__(self, state_dir: str, catalogue=None, *, preferred_port: int = 22) -> None:
        self._root = os.path.join(os.path.abspath(state_dir), "guests")
        private_dir(self._root)
        self._catalogue = catalogue
        self._preferred_port = preferred_port
        self._shared_port: Optional[int] = None
        self._guests: Dict[int, _Guest] = {}
        self._lock = threading.Lock()
        self._host_key = _load_or_create_host_key(os.path.join(self._root, "ssh_host_ed25519_key"))

    @property
    def host_key(self) -> paramiko.PKey:
        """The guests' host key (one per state directory, so it survives restarts)."""
        return self._host_key

    def guest_home(self, vm_id: int) -> str:
        return os.path.join(self._root, str(int(vm_id)))

    def port_of(self, vm_id: int) -> Optional[int]:
        with self._lock:
            guest = self._guests.get(int(vm_id))
            return guest.port if guest else None

    def vm_running(
        self, vm_id: int, ip: str, public_key: Optional[str], image_id: Optional[str]
    ) -> Optional[int]:
        """Start the guest's SSH server on ``ip``; return its port, or None if it has no key.

        Never raises: the caller is the cloud's scheduler. A server that cannot start is
        logged and the VM simply has no SSH (None), like a guest whose sshd failed.
        """
        vm_id = int(vm_id)
        keys = parse_authorized_keys(public_key or "")
        if not keys:
            if public_key:
                log.warning("VM %s: CONTEXT public_key holds no usable SSH key; no SSH server", vm_id)
            self.vm_stopped(vm_id)
            return None
        with self._lock:
            current = self._guests.get(vm_id)
            if current is not None and current.ip == ip:
                current.context_keys = keys
                return current.port
        self.vm_stopped(vm_id)
        try:
            home = self.guest_home(vm_id)
            _prepare_home(home, public_key or "")
            with self._lock:
                sock = self._bind(ip)
                guest = _Guest(vm_id, ip, sock, home, keys, self._host_key, self._has_sftp(image_id))
                self._guests[vm_id] = guest
            guest.start()
            return guest.port
        except Exception:
            log.exception("VM %s: could not start its SSH server on %s", vm_id, ip)
            return None

    def vm_stopped(self, vm_id: int) -> None:
        """Stop the guest's server and close its sessions (VM left RUNNING)."""
        with self._lock:
            guest = self._guests.pop(int(vm_id), None)
        if guest is not None:
            guest.stop()

    def close(self) -> None:
        with self._lock:
            guests = list(self._guests.values())
            self._guests.clear()
        for guest in guests:
            guest.stop()

    def __enter__(self) -> "GuestManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _has_sftp(self, image_id: Optional[str]) -> bool:
        if image_id is None or self._catalogue is None:
            return True
        try:
            entry = self._catalogue.entry(image_id)
        except Exception:
            log.exception("catalogue lookup of image %s failed; assuming SFTP", image_id)
            return True
        return bool(getattr(entry, "has_sftp", True)) if entry is not None else True

    def _bind(self, ip: str) -> socket.socket:
        # Called with the lock held, so the first guest fixes the shared port alone.
        wanted = self._shared_port if self._shared_port is not None else self._preferred_port
        try:
            sock = _listen(ip, wanted)
        except OSError:  # the port is taken on that address
            sock = _listen(ip, 0)
        if self._shared_port is None:
            self._shared_port = sock.getsockname()[1]
        return sock


def parse_authorized_keys(text: str) -> Set[bytes]:
    """The key blobs in ``authorized_keys``-style text (several lines, options allowed)."""
    blobs: Set[bytes] = set()
    for line in text.splitlines():
        fields = line.strip().split()
        if not fields or fields[0].startswith("#"):
            continue
        for index, field in enumerate(fields[:-1]):
            if field.startswith(("ssh-", "ecdsa-sha2-", "sk-")):
                try:
                    blobs.add(base64.b64decode(fields[index + 1], validate=True))
                except (binascii.Error, ValueError):
                    pass
                break
    return blobs


def _listen(ip: str, port: int) -> socket.socket:
    if not ipaddress.IPv4Address(ip).is_loopback:
        # Whoever logs in runs commands on this machine: never beyond it.
        raise ValueError("%s is not a loopback address; a guest listens on loopback only" % ip)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(16)
        sock.settimeout(POLL_INTERVAL)
    except OSError:
        sock.close()
        raise
    return sock


def _load_or_create_host_key(path: str) -> paramiko.PKey:
    if not os.path.exists(path):
        text = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        write_private(path, text)
    return paramiko.Ed25519Key(filename=path)


def _prepare_home(home: str, public_key: str) -> None:
    # Like the StratusLab context script: the CONTEXT key lands in root's authorized_keys.
    ssh_dir = os.path.join(home, ".ssh")
    private_dir(home)
    private_dir(ssh_dir)
    authorized = os.path.join(ssh_dir, "authorized_keys")
    if not os.path.exists(authorized):
        fd = os.open(authorized, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(public_key.strip() + "\n")


class _Guest:
    """One VM's SSH server: an acceptor thread plus the paramiko transports it started."""

    def __init__(self, vm_id, ip, sock, home, context_keys, host_key, has_sftp) -> None:
        self.vm_id = vm_id
        self.ip = ip
        self.port: int = sock.getsockname()[1]
        self.home = home
        self.context_keys: Set[bytes] = context_keys
        self.has_sftp = has_sftp
        self._sock = sock
        self._host_key = host_key
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._transports: List[paramiko.Transport] = []
        self._sessions: Set[_ExecSession] = set()
        self.supervisor = Supervisor("guest-%s" % vm_id)
        self._thread = threading.Thread(
            target=self._accept_loop, name="guest-%s-ssh" % vm_id, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._sock.close()
        except OSError:
            pass
        with self._lock:
            transports = list(self._transports)
            sessions = list(self._sessions)
            self._transports.clear()
        for session in sessions:
            session.kill()
        for transport in transports:
            try:
                transport.close()
            except Exception:
                log.debug("closing a guest transport failed", exc_info=True)
        if self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT)
        for session in sessions:
            session.join(JOIN_TIMEOUT)
        self.supervisor.close(JOIN_TIMEOUT)  # whatever the commands left behind

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def key_allowed(self, key: paramiko.PKey) -> bool:
        blob = key.asbytes()
        if blob in self.context_keys:
            return True
        try:
            with open(os.path.join(self.home, ".ssh", "authorized_keys")) as handle:
                return blob in parse_authorized_keys(handle.read())
        except OSError:
            return False

    def add_session(self, session: "_ExecSession") -> bool:
        with self._lock:
            if self.stopping:
                return False
            self._sessions.add(session)
            return True

    def remove_session(self, session: "_ExecSession") -> None:
        with self._lock:
            self._sessions.discard(session)

    def _accept_loop(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                self._prune()
                continue
            except OSError:
                break  # socket closed by stop()
            self._prune()
            with self._lock:
                if self.stopping or len(self._transports) >= MAX_CONNECTIONS:
                    conn.close()
                    continue
                try:
                    transport = self._start_transport(conn)
                except Exception:
                    log.debug("guest %s: SSH connection setup failed", self.vm_id, exc_info=True)
                    conn.close()
                    continue
                self._transports.append(transport)

    def _start_transport(self, conn: socket.socket) -> paramiko.Transport:
        # SSH exchanges many small packets; with Nagle plus delayed ACKs each command would
        # stall about 40 ms.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = _GuestTransport(conn)
        transport.set_log_channel(SSH_LOG)
        transport.add_server_key(self._host_key)
        if self.has_sftp:
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _GuestSFTP, self.home)
        # An event makes start_server return at once: a slow client must not stall accept().
        transport.start_server(event=threading.Event(), server=_GuestServer(self))
        return transport

    def _prune(self) -> None:
        with self._lock:
            self._transports = [t for t in self._transports if t.is_alive()]


_ChannelHandler = Callable[[paramiko.Channel, paramiko.Message], None]
# paramiko's private dispatch table, which types-paramiko does not declare.
_PARAMIKO_HANDLERS: Dict[int, _ChannelHandler] = (
    paramiko.Transport._channel_handler_table)  # type: ignore[attr-defined]
_PARAMIKO_CHANNEL_REQUEST = _PARAMIKO_HANDLERS[MSG_CHANNEL_REQUEST]


def _answer_then_start(channel: paramiko.Channel, message: paramiko.Message) -> None:
    _PARAMIKO_CHANNEL_REQUEST(channel, message)  # the check callback, then the reply
    server = channel.get_transport().server_object
    if isinstance(server, _GuestServer):
        server.start_answered(channel)


class _GuestTransport(paramiko.Transport):
    """A server transport that starts an exec or shell command only after paramiko has
    sent its reply to the request, so nothing of the command (output, exit status, the
    channel's close) can reach the client before that reply.

    paramiko (3.x to 5.x) dispatches channel messages through the class table
    ``_channel_handler_table``; this subclass wraps its channel-request entry.
    """

    _channel_handler_table = dict(_PARAMIKO_HANDLERS)
    _channel_handler_table[MSG_CHANNEL_REQUEST] = _answer_then_start


class _QuietDisconnects(logging.Filter):
    """Drop paramiko's ERROR records about a client that simply went away (connection
    reset, broken pipe, closed before its banner), with their tracebacks; real errors
    pass. Installed on :data:`SSH_LOG`, the guests' transport logger."""

    _GONE = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}
    _SOCKET = re.compile(r"Socket exception: .* \((\d+)\)")
    _NO_BANNER = re.compile(r"Exception \(server\): Error reading SSH protocol banner"
                            r"(\[Errno (\d+)\].*)?")

    def __init__(self) -> None:
        super().__init__()
        self._traceback = threading.local()  # on: dropping the lines of a dropped exception

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            self._traceback.on = False
            return True
        if getattr(self._traceback, "on", False):
            return False  # the transport thread logs its traceback, then ends
        text = record.getMessage()
        match = self._SOCKET.fullmatch(text)
        if match and int(match.group(1)) in self._GONE:
            log.debug("guest SSH client went away: %s", text)
            return False
        match = self._NO_BANNER.fullmatch(text)
        if match and (match.group(2) is None or int(match.group(2)) in self._GONE):
            log.debug("guest SSH client left before its banner")
            self._traceback.on = True
            return False
        return True


logging.getLogger(SSH_LOG).addFilter(_QuietDisconnects())


class _GuestServer(paramiko.ServerInterface):
    """Authentication and channel policy of a guest: root, public key, sessions only."""

    def __init__(self, guest: _Guest) -> None:
        self._guest = guest
        self._busy: List[paramiko.Channel] = []  # channels running a command or SFTP
        self._pending: Dict[int, _ExecSession] = {}  # accepted, waiting for paramiko's reply
        self._lock = threading.Lock()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == GUEST_USER and self._guest.key_allowed(key):
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind != "session":
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        return OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode("utf-8", "replace") if isinstance(command, bytes) else command
        return self._start(channel, ["/bin/sh", "-c", text])

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        return self._start(channel, ["/bin/sh"])  # no pty: a plain shell reading stdin

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        # paramiko runs each subsystem (SFTP) in a thread of its own: count it.
        return self._reserve(channel) and super().check_channel_subsystem_request(channel, name)

    def _reserve(self, channel: paramiko.Channel) -> bool:
        # Threads follow channels that do work, so bounding those bounds the threads.
        with self._lock:
            self._busy = [c for c in self._busy if not c.closed]
            if len(self._busy) >= MAX_CHANNELS or self._guest.stopping:
                return False
            self._busy.append(channel)
            return True

    def _start(self, channel: paramiko.Channel, argv: List[str]) -> bool:
        # Accept only: paramiko answers the request after this returns, and a command
        # started now could exit and close the channel before that answer (the client
        # then fails with "Channel closed."). _GuestTransport starts it once answered.
        if not self._reserve(channel):
            return False
        with self._lock:
            self._pending[channel.get_id()] = _ExecSession(self._guest, channel, argv)
        return True

    def start_answered(self, channel: paramiko.Channel) -> None:
        """Start the command accepted on ``channel``, if any: its request is answered."""
        with self._lock:
            session = self._pending.pop(channel.get_id(), None)
        if session is None:
            return
        if self._guest.add_session(session):
            session.start()
        else:  # the guest is stopping
            channel.close()


class _ExecSession:
    """One command of a guest: ``/bin/sh -c`` started by the guest's supervisor, with
    stdin fed from the channel and stdout/stderr streamed to it."""

    def __init__(self, guest: _Guest, channel: paramiko.Channel, argv: List[str]) -> None:
        self._guest = guest
        self._channel = channel
        self._argv = argv
        self._command: Optional[Command] = None
        self._killed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="guest-%s-exec" % guest.vm_id, daemon=True)
        self._stdin_thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def kill(self) -> None:
        self._killed.set()
        command = self._command
        if command is not None:
            command.kill()  # its process group; the rest goes with the guest's supervisor
        try:
            self._channel.close()
        except Exception:
            pass

    def _environment(self) -> Dict[str, str]:
        # Not the cloud's own environment: it may hold credentials and has nothing to do
        # with a guest. PATH is kept so that commands are found.
        return {
            "HOME": self._guest.home,
            "USER": GUEST_USER,
            "LOGNAME": GUEST_USER,
            "SHELL": "/bin/sh",
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
            "LANG": "C.UTF-8",
        }

    def _run(self) -> None:
        try:
            status = self._execute()
            if status is not None and not self._channel.closed:
                self._channel.send_exit_status(status)
        except Exception:
            log.debug("guest %s: command session failed", self._guest.vm_id, exc_info=True)
        finally:
            try:
                self._channel.close()
            except Exception:
                pass
            if self._stdin_thread is not None:
                self._stdin_thread.join(JOIN_TIMEOUT)
            self._guest.remove_session(self)

    def _execute(self) -> Optional[int]:
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        try:
            self._command = self._guest.supervisor.run(
                self._argv, self._guest.home, self._environment(), (stdin_r, stdout_w, stderr_w))
        except OSError as exc:
            for fd in (stdin_w, stdout_r, stderr_r):
                os.close(fd)
            self._channel.sendall_stderr(("sh: %s\n" % exc).encode())
            return 127
        finally:
            for fd in (stdin_r, stdout_w, stderr_w):
                os.close(fd)
        if self._killed.is_set():  # stop() raced with the start
            self.kill()
        self._stdin_thread = threading.Thread(
            target=self._feed_stdin, args=(stdin_w,), name="guest-%s-stdin" % self._guest.vm_id, daemon=True
        )
        self._stdin_thread.start()
        self._pump_output(stdout_r, stderr_r)
        code = self._wait(self._command)
        if code is None or self._killed.is_set():
            return None
        return code if code >= 0 else 128 - code  # a signal, shell style

    def _wait(self, command: Command) -> Optional[int]:
        while True:
            code = command.wait(POLL_INTERVAL)
            if command.done.is_set():
                return code
            if self._killed.is_set() or self._channel.closed:
                self.kill()
                return command.wait(JOIN_TIMEOUT)

    def _pump_output(self, stdout: int, stderr: int) -> None:
        selector = selectors.DefaultSelector()
        selector.register(stdout, selectors.EVENT_READ, self._channel.sendall)
        selector.register(stderr, selectors.EVENT_READ, self._channel.sendall_stderr)
        try:
            while selector.get_map():
                if self._killed.is_set() or self._channel.closed:
                    self.kill()
                    return
                for key, _ in selector.select(POLL_INTERVAL):
                    data = os.read(key.fd, CHUNK)
                    if not data:
                        selector.unregister(key.fileobj)
                        continue
                    try:
                        key.data(data)
                    except (OSError, EOFError):  # client gone
                        self.kill()
                        return
        finally:
            selector.close()
            os.close(stdout)
            os.close(stderr)

    def _feed_stdin(self, stdin: int) -> None:
        # Blocking copy in its own thread: recv() returns b"" on EOF or when the channel is
        # closed, and a write to a pipe nobody reads fails, so this always ends.
        try:
            while True:
                data = self._channel.recv(CHUNK)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    view = view[os.write(stdin, view):]
        except (OSError, ValueError, EOFError):
            pass
        finally:
            os.close(stdin)


class _GuestSFTP(paramiko.SFTPServerInterface):
    """SFTP over the host file system, paths resolved like the guest's shell: relative to home."""

    def __init__(self, server, home: str, *args, **kwargs) -> None:
        super().__init__(server, *args, **kwargs)
        self._home = home

    def _path(self, path: str) -> str:
        return os.path.normpath(os.path.join(self._home, path or "."))

    def canonicalize(self, path: str) -> str:
        return self._path(path)

    def list_folder(self, path: str):
        path = self._path(path)
        try:
            result = []
            for name in os.listdir(path):
                attr = paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(path, name)))
                attr.filename = name
                result.append(attr)
            return result
        except OSError as exc:
            return _sftp_error(exc)

    def stat(self, path: str):
        return _attributes(os.stat, self._path(path))

    def lstat(self, path: str):
        return _attributes(os.lstat, self._path(path))

    def open(self, path: str, flags: int, attr):
        path = self._path(path)
        mode = getattr(attr, "st_mode", None)
        try:
            fd = os.open(path, flags, mode if mode is not None else 0o666)
        except OSError as exc:
            return _sftp_error(exc)
        if (flags & os.O_CREAT) and attr is not None:
            attr._flags &= ~attr.FLAG_PERMISSIONS  # mode was applied by open (minus umask)
            paramiko.SFTPServer.set_file_attr(path, attr)
        if flags & os.O_WRONLY:
            fmode = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            fmode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            fmode = "rb"
        return _GuestFile(flags, path, os.fdopen(fd, fmode))

    def remove(self, path: str) -> int:
        return _call(os.remove, self._path(path))

    def rename(self, oldpath: str, newpath: str) -> int:
        return _call(os.rename, self._path(oldpath), self._path(newpath))

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return _call(os.replace, self._path(oldpath), self._path(newpath))

    def mkdir(self, path: str, attr) -> int:
        path = self._path(path)
        mode = getattr(attr, "st_mode", None)
        return _call(os.mkdir, path, mode if mode is not None else 0o777)

    def rmdir(self, path: str) -> int:
        return _call(os.rmdir, self._path(path))

    def chattr(self, path: str, attr) -> int:
        return _call(paramiko.SFTPServer.set_file_attr, self._path(path), attr)

    def symlink(self, target_path: str, path: str) -> int:
        return _call(os.symlink, target_path, self._path(path))

    def readlink(self, path: str):
        try:
            return os.readlink(self._path(path))
        except OSError as exc:
            return _sftp_error(exc)


class _GuestFile(paramiko.SFTPHandle):
    """An open file; paramiko's SFTPHandle reads, writes and closes ``readfile`` and
    ``writefile``, which a subclass provides."""

    def __init__(self, flags: int, path: str, file: IO[bytes]) -> None:
        super().__init__(flags)
        self.filename = path
        self.readfile = self.writefile = file

    def stat(self):
        return _attributes(os.fstat, self.readfile.fileno())

    def chattr(self, attr) -> int:
        return _call(paramiko.SFTPServer.set_file_attr, self.filename, attr)


def _attributes(stat_function, target):
    try:
        return paramiko.SFTPAttributes.from_stat(stat_function(target))
    except OSError as exc:
        return _sftp_error(exc)


def _call(function, *args) -> int:
    try:
        function(*args)
    except OSError as exc:
        return _sftp_error(exc)
    return SFTP_OK


def _sftp_error(exc: OSError) -> int:
    """The SFTP status for a failed file operation (an OSError may carry no errno)."""
    if exc.errno is None:
        return SFTP_FAILURE
    return paramiko.SFTPServer.convert_errno(exc.errno)
