"""A guest's process supervisor: stopping a guest ends every process its commands started.

A command run over a guest's exec channel may leave processes behind (``cmd &``, daemons,
``setsid ...``). Those leave the command's process group and session, so killing the group
misses them, and they outlive the VM. Each guest therefore starts its commands through a
supervisor: a small child process of the cloud (this file, run as a script) that is a Linux
*child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``), so every descendant of its commands
that loses its parent is re-parented to the supervisor instead of init and stays in its
process tree. When the guest stops (its VM leaves RUNNING or is destroyed, the cloud stops,
or the cloud dies: the control socket closes), the supervisor kills its whole tree, reaps
it, and exits. Where child subreapers do not exist (not Linux; untested here), it kills
the process groups of the commands it started, and processes that left them survive.

The supervisor itself runs in a session of its own, so a terminal's Ctrl-C reaches the cloud
(which then stops its guests) rather than the supervisor.

Protocol, over a Unix stream socket inherited as a file descriptor: frames made of a 4-byte
big-endian length and a JSON object. Cloud to supervisor: ``{"run": ID, "argv": [...],
"cwd": DIR, "env": {...}}`` with the command's stdin, stdout and stderr attached
(``SCM_RIGHTS``), and ``{"kill": ID}`` (the command's process group). Supervisor to cloud:
``{"started": ID, "pid": PID}`` or ``{"started": ID, "error": TEXT}``, then ``{"exited": ID,
"code": CODE}`` (``os.waitstatus_to_exitcode``: negative for a signal).

Run as a script, this module imports nothing but the standard library.
"""

from __future__ import annotations

import array
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

__all__ = ["Supervisor", "Command"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
_MAX_FRAME = 1 << 24
_FDS_PER_COMMAND = 3
_PR_SET_CHILD_SUBREAPER = 36
_KILL_ROUNDS = 200
# Every signal a command may catch starts at its default, as sshd starts commands on a
# real VM: Python ignores SIGPIPE and SIGXFSZ, the supervisor ignores the terminal's
# signals and handles others itself, and whatever started the cloud may have left some
# ignored or blocked too.
_RESET_SIGNALS = sorted(set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP})


def _frame(message: dict) -> bytes:
    data = json.dumps(message).encode("utf-8")
    return _HEADER.pack(len(data)) + data


class _FrameReader:
    """Frames (and the file descriptors sent with them) from a Unix stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._data = b""
        self.fds: List[int] = []  # received, not yet claimed by a frame, in order

    def read(self) -> Optional[List[dict]]:
        """The frames completed by one receive; None at end of stream."""
        fd_space = socket.CMSG_SPACE(_FDS_PER_COMMAND * array.array("i").itemsize)
        data, ancillary, _, _ = self._sock.recvmsg(65536, fd_space)
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                self.fds.extend(fds)
        if not data:
            return None
        self._data += data
        frames = []
        while len(self._data) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._data)
            if length > _MAX_FRAME:
                raise ValueError("frame of %d bytes" % length)
            if len(self._data) < _HEADER.size + length:
                break
            body = self._data[_HEADER.size:_HEADER.size + length]
            self._data = self._data[_HEADER.size + length:]
            frames.append(json.loads(body.decode("utf-8")))
        return frames


# ---------------------------------------------------------------------------------------
# The supervisor process (this file run as a script)
# ---------------------------------------------------------------------------------------

def _become_subreaper() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _close_fds_from(lowest: int, keep: int) -> None:
    """Close every descriptor from ``lowest`` on but ``keep`` (in a forked child)."""
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: every possible number
        os.closerange(lowest, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        return
    for fd in open_fds:
        if fd >= lowest and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor, already closed


def _descendants(root: int) -> List[int]:
    """Live (not zombie) descendants of ``root``, read from /proc."""
    children: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


class _Supervisor:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.reader = _FrameReader(control)
        self.subreaper = _become_subreaper()
        self.commands: Dict[int, int] = {}   # pid -> command id
        self.started: Dict[int, int] = {}    # command id -> pid (its process group)
        self.stopping = False

    def send(self, message: dict) -> None:
        try:
            self.control.sendall(_frame(message))
        except OSError:
            self.stopping = True  # the cloud is gone

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            ident = self.commands.pop(pid, None)
            if ident is not None:
                self.started.pop(ident, None)
                self.send({"exited": ident, "code": os.waitstatus_to_exitcode(status)})

    def spawn(self, ident: int, argv: Sequence[str], cwd: str, env: Dict[str, str],
              fds: Sequence[int]) -> None:
        failure_r, failure_w = os.pipe()  # close-on-exec: empty at exec, a message otherwise
        pid = os.fork()
        if pid == 0:  # the command
            try:
                # A shell's background job ignores SIGINT and SIGQUIT, nohup SIGHUP: without
                # this, commands would inherit that from the cloud.
                for signum in _RESET_SIGNALS:
                    try:
                        signal.signal(signum, signal.SIG_DFL)
                    except (OSError, ValueError):  # reserved by the C library (32, 33)
                        pass
                signal.pthread_sigmask(signal.SIG_SETMASK, ())
                os.setsid()
                for target, fd in enumerate(fds):
                    os.dup2(fd, target)
                _close_fds_from(_FDS_PER_COMMAND, keep=failure_w)
                os.chdir(cwd)
                os.execvpe(argv[0], list(argv), env)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
                os.write(failure_w, ("%s: %s" % (argv[0], exc)).encode("utf-8", "replace"))
            os._exit(127)
        os.close(failure_w)
        for fd in fds:
            os.close(fd)
        with os.fdopen(failure_r, "rb") as failure:
            error = failure.read()
        if error:
            self.send({"started": ident, "error": error.decode("utf-8", "replace")})
            return  # the failed child is reaped like any other
        self.commands[pid] = ident
        self.started[ident] = pid
        self.send({"started": ident, "pid": pid})

    def handle(self, message: dict) -> None:
        if "run" in message:
            fds = self.reader.fds[:_FDS_PER_COMMAND]
            del self.reader.fds[:_FDS_PER_COMMAND]
            if len(fds) != _FDS_PER_COMMAND:
                for fd in fds:
                    os.close(fd)
                self.send({"started": message["run"], "error": "no stdin/stdout/stderr received"})
                return
            self.spawn(message["run"], message["argv"], message["cwd"], message["env"], fds)
        elif "kill" in message:
            pid = self.started.get(message["kill"])
            if pid is not None:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass

    def end_everything(self) -> None:
        for _ in range(_KILL_ROUNDS):
            if self.subreaper:
                victims = _descendants(os.getpid())
            else:
                victims = [-pid for pid in self.started.values()]  # their process groups
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.reap()
            if not self.subreaper:
                self.started.clear()
            time.sleep(0.005)
        self.reap()

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._terminate)
        control = self.control.fileno()
        try:
            while not self.stopping:
                ready, _, _ = select.select([control, wake_r], [], [])
                if wake_r in ready:
                    os.read(wake_r, 4096)
                    self.reap()
                if control in ready:
                    frames = self.reader.read()
                    if frames is None:
                        break
                    for message in frames:
                        self.handle(message)
        finally:  # whatever went wrong, nothing the guest started survives
            self.end_everything()

    def _terminate(self, *_) -> None:
        self.stopping = True


def _main(argv: Sequence[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    control = socket.socket(fileno=int(argv[1]))
    _Supervisor(control).serve()
    return 0


# ---------------------------------------------------------------------------------------
# The cloud's side
# ---------------------------------------------------------------------------------------

class Command:
    """A command started by a :class:`Supervisor`; ``code`` is set once it exited."""

    def __init__(self, supervisor: "Supervisor", ident: int) -> None:
        self._supervisor = supervisor
        self.ident = ident
        self.pid: Optional[int] = None
        self.code: Optional[int] = None
        self.error: Optional[str] = None
        self.started = threading.Event()
        self.done = threading.Event()

    def wait(self, timeout: float) -> Optional[int]:
        """The exit code (negative: killed by that signal); None if still running after
        ``timeout`` seconds, or if it ended without a status (the supervisor died)."""
        self.done.wait(timeout)
        return self.code

    def kill(self) -> None:
        """Kill the command's process group (what it left elsewhere dies with the guest)."""
        if not self.done.is_set():
            self._supervisor.send({"kill": self.ident})


class _Link(NamedTuple):
    """One supervisor process and the cloud's end of its control socket."""

    process: subprocess.Popen[bytes]
    sock: socket.socket
    reader: threading.Thread  # reads the supervisor's frames


class Supervisor:
    """The cloud's handle on one guest's supervisor process, started at the first command.

    ``close()`` ends every process the guest's commands started and waits (bounded) for it.
    """

    def __init__(self, name: str, start_timeout: float = 10.0) -> None:
        self.name = name
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._link: Optional[_Link] = None  # the latest supervisor started
        self._commands: Dict[int, Command] = {}
        self._next_id = 0
        self._closed = False

    def run(self, argv: Sequence[str], cwd: str, env: Dict[str, str],
            fds: Tuple[int, int, int]) -> Command:
        """Start ``argv`` with ``fds`` as its stdin, stdout and stderr (the caller keeps,
        and closes, its own copies). Raises OSError when it cannot start."""
        with self._lock:
            if self._closed:
                raise OSError("the guest is stopping")
            link = self._link
            if link is None or link.process.poll() is not None:
                link = self._start()
            self._next_id += 1
            command = Command(self, self._next_id)
            self._commands[command.ident] = command
        message = {"run": command.ident, "argv": list(argv), "cwd": cwd, "env": env}
        fd_data = array.array("i", fds).tobytes()
        try:
            with self._send_lock:
                link.sock.sendmsg([_frame(message)],
                                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd_data)])
        except OSError as exc:
            self._forget(command)
            raise OSError("the guest's process supervisor is gone: %s" % exc) from None
        if not command.started.wait(self._start_timeout):
            command.kill()
            raise OSError("the command did not start within %g s" % self._start_timeout)
        if command.error is not None:
            raise OSError(command.error)
        return command

    def send(self, message: dict) -> None:
        link = self._link
        if link is None:
            return
        try:
            with self._send_lock:
                link.sock.sendall(_frame(message))
        except OSError:
            pass

    def close(self, timeout: float = 2.0) -> None:
        """End every process of the guest: the supervisor kills its tree when its control
        socket closes. A supervisor that does not exit in time is killed itself."""
        with self._lock:
            self._closed = True
            link = self._link
        if link is None:
            return
        process, sock, reader = link
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s: the process supervisor did not end in %g s; killing it, and "
                        "what it did not end goes to init", self.name, timeout)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass
            process.wait(timeout)
        if reader is not threading.current_thread():
            reader.join(timeout)
        sock.close()

    # -- internals -----------------------------------------------------------------------

    def _start(self) -> _Link:
        """Called with the lock held."""
        if self._link is not None:
            self._link.sock.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True, close_fds=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader = threading.Thread(target=self._read, args=(ours,),
                                  name="%s-supervisor" % self.name, daemon=True)
        self._link = _Link(process, ours, reader)
        reader.start()
        return self._link

    def _forget(self, command: Command) -> None:
        with self._lock:
            self._commands.pop(command.ident, None)
        command.started.set()
        command.done.set()

    def _read(self, sock: socket.socket) -> None:
        reader = _FrameReader(sock)
        try:
            while True:
                frames = reader.read()
                if frames is None:
                    break
                for message in frames:
                    self._dispatch(message)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                orphans = list(self._commands.values())
                self._commands.clear()
            for command in orphans:  # no status will come any more
                command.started.set()
                command.done.set()

    def _dispatch(self, message: dict) -> None:
        ident = message.get("started", message.get("exited"))
        if ident is None:
            return
        with self._lock:
            command = self._commands.get(ident)
        if command is None:
            return
        if "started" in message:
            command.pid = message.get("pid")
            command.error = message.get("error")
            command.started.set()
            if command.error is not None:
                self._forget(command)
        else:
            command.code = message["code"]
            self._forget(command)


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
