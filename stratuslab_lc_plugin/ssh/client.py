"""The SSH client that runs Libcloud deployment steps on a StratusLab VM.

Libcloud's ``ParamikoSSHClient`` is what ``ScriptDeployment``, ``FileDeployment``,
``SSHKeyDeployment`` and ``MultiStepDeployment`` talk to; :class:`DeploymentSSHClient`
subclasses it so those steps run unchanged, and changes what does not work for StratusLab:
keys come pre-loaded (:mod:`.keys`, which reads what paramiko >= 4 no longer can), uploads
work without SFTP (ttylinux images have none) through the exec channel, Libcloud's SFTP
helpers that mix up relative paths are replaced, and a command's output that arrives after
its exit status is still read. It knows nothing of the driver.
"""

from __future__ import annotations

import io
import logging
import posixpath
import shlex
import socket
import time
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple, Union

import paramiko
from libcloud.compute.ssh import ParamikoSSHClient, SSHCommandTimeoutError

from stratuslab_lc_plugin.ssh.keys import LoadedKey

__all__ = ["DeploymentSSHClient", "STALL_TIMEOUT", "KEEPALIVE", "tail"]

log = logging.getLogger(__name__)

STALL_TIMEOUT = 60.0  # seconds without progress before a file transfer gives up
KEEPALIVE = 30  # seconds; lets a dead connection be noticed while a long script runs
TAIL_LINES = 20
TAIL_CHARS = 2000


class DeploymentSSHClient(ParamikoSSHClient):
    """Libcloud's paramiko client, with pre-loaded keys and uploads that work without SFTP.

    ``keys`` are :class:`~stratuslab_lc_plugin.ssh.keys.LoadedKey` objects, tried in order.
    With no keys and no password, the SSH agent and ``~/.ssh`` keys are tried, as Libcloud
    does. ``run`` also reads output that arrives after the exit status, and sends EOF on
    stdin so that a script reading it does not wait forever.
    """

    def __init__(
        self,
        hostname: str,
        port: int = 22,
        username: str = "root",
        password: Optional[str] = None,
        keys: Sequence[LoadedKey] = (),
        timeout: Optional[float] = None,
    ) -> None:
        super().__init__(hostname=hostname, port=port, username=username, password=password,
                         timeout=timeout, keep_alive=KEEPALIVE)
        self.keys = list(keys)
        self.used_key: Optional[LoadedKey] = None
        self.sftp_available: Optional[bool] = None

    # -- connection -------------------------------------------------------------------

    def connect(self) -> bool:
        options: Dict[str, Any] = {
            "hostname": self.hostname,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "allow_agent": not (self.keys or self.password),
            "look_for_keys": not (self.keys or self.password),
        }
        if self.timeout:
            options.update(timeout=self.timeout, banner_timeout=self.timeout, auth_timeout=self.timeout)
        last_error: Optional[paramiko.AuthenticationException] = None
        candidates: List[Optional[LoadedKey]] = list(self.keys) or [None]
        for key in candidates:
            for disabled in self._algorithm_variants(key):
                sock = self._open_socket()
                try:
                    self.client.connect(pkey=key.pkey if key else None, disabled_algorithms=disabled,
                                        sock=sock, **options)
                except paramiko.AuthenticationException as exc:
                    last_error = exc
                    self.client.close()
                    continue
                except paramiko.SSHException as exc:
                    self.client.close()
                    if "authentication methods" in str(exc):
                        # Nothing to offer (no key, no agent): an authentication failure,
                        # not a server that is still starting.
                        last_error = paramiko.AuthenticationException(str(exc))
                        continue
                    if disabled is None:
                        raise
                    continue  # the legacy retry itself failed: the first refusal stands
                except BaseException:
                    sock.close()
                    raise
                self.used_key = key
                self.sftp_client = None
                self.sftp_available = None
                return True
        raise last_error or paramiko.AuthenticationException("authentication failed")

    def _open_socket(self) -> socket.socket:
        sock = socket.create_connection((self.hostname, self.port), timeout=self.timeout or None)
        # Commands are a string of small packets; Nagle plus delayed ACKs would add ~40 ms
        # to each of them.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    @staticmethod
    def _algorithm_variants(key: Optional[LoadedKey]) -> List[Optional[dict]]:
        # Old sshd (OpenSSH < 7.2, e.g. CentOS 6 images) rejects the rsa-sha2 signatures that
        # paramiko >= 2.9 sends; retry such a key with plain ssh-rsa, as Libcloud does, but
        # only where paramiko still offers ssh-rsa (SHA-1): paramiko 4 dropped it.
        legacy = "ssh-rsa" in getattr(paramiko.Transport, "_preferred_pubkeys", ())
        if legacy and key is not None and key.key_type == "ssh-rsa":
            return [None, {"pubkeys": ["rsa-sha2-256", "rsa-sha2-512"]}]
        return [None]

    def is_active(self) -> bool:
        transport = self.client.get_transport() if self.client else None
        return bool(transport is not None and transport.is_active())

    def close(self) -> bool:
        super().close()
        self.sftp_client = None
        return True

    # -- file transfer ----------------------------------------------------------------

    # Libcloud's own put/putfo reuse one SFTP session whose directory moves with each
    # upload, and putfo joins relative paths twice ("a/f" lands in "a/a/f"); these do not.

    def put(self, path: str, contents: Union[str, bytes, None] = None, chmod: Optional[int] = None, mode: str = "w") -> str:
        data = contents.encode("utf-8") if isinstance(contents, str) else (contents or b"")
        return self._upload(path, io.BytesIO(data), chmod, append="a" in mode)

    def putfo(self, path: str, fo: Optional[IO] = None, chmod: Optional[int] = None) -> str:
        return self._upload(path, fo or io.BytesIO(), chmod, append=False)

    def delete(self, path: str) -> bool:
        if self._use_sftp():
            sftp = self._get_sftp_client()
            sftp.chdir(None)
            sftp.unlink(path)
            return True
        _, stderr, status = self._exec("rm -f %s" % _shell_path(path))
        if status != 0:
            raise OSError("removing %s failed with status %s: %s" % (path, status, stderr.strip()))
        return True

    def _upload(self, path: str, fo: IO, chmod: Optional[int], append: bool) -> str:
        """Write ``fo`` to ``path`` (relative to the login directory); return its absolute path."""
        if self._use_sftp():
            return self._sftp_upload(path, fo, chmod, append)
        return self._exec_upload(path, fo, chmod, append)

    def _sftp_upload(self, path: str, fo: IO, chmod: Optional[int], append: bool) -> str:
        sftp = self._get_sftp_client()
        sftp.chdir(None)  # relative paths from the login directory again
        head = posixpath.dirname(path)
        current = "/" if head.startswith("/") else ""
        for part in head.split("/"):
            if part:
                current = posixpath.join(current, part) if current else part
                try:
                    sftp.mkdir(current)
                except OSError:
                    pass  # exists: SFTP has no portable EEXIST to tell it apart
        with sftp.open(path, "ab" if append else "wb") as remote:
            remote.set_pipelined(True)
            while True:
                chunk = fo.read(32768)
                if not chunk:
                    break
                remote.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
        if chmod is not None:
            sftp.chmod(path, chmod)
        return sftp.normalize(path)

    def _use_sftp(self) -> bool:
        if self.sftp_available is None:
            try:
                self._get_sftp_client().get_channel().settimeout(STALL_TIMEOUT)
                self.sftp_available = True
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not self.is_active():
                    raise
                log.debug("no SFTP on %s:%s (%s); using the exec channel", self.hostname, self.port, exc)
                self.sftp_client = None
                self.sftp_available = False
        return self.sftp_available

    def _exec_upload(self, path: str, fo: IO, chmod: Optional[int], append: bool) -> str:
        # Same result as the SFTP put: parent directories created, the file's absolute path
        # returned (ScriptDeployment builds its command from it). Relative paths are relative
        # to the login directory, where an exec channel starts.
        head, filename = posixpath.split(path)
        directory = _shell_path(head or ".")
        target = _shell_path(path)
        command = "mkdir -p %s && cat %s %s" % (directory, ">>" if append else ">", target)
        if chmod is not None:
            command += " && chmod %o %s" % (chmod, target)
        command += " && cd %s && pwd" % directory
        stdout, stderr, status = self._exec(command, stdin=fo)
        if status != 0:
            raise OSError(
                "uploading %s over the exec channel failed with status %s: %s"
                % (path, status, tail(stderr) or "(no error output)")
            )
        lines = stdout.strip().splitlines()
        if not lines:
            raise OSError("uploading %s over the exec channel: the remote shell did not print its directory" % path)
        return posixpath.join(lines[-1], filename)

    # -- commands ---------------------------------------------------------------------

    def run(self, cmd: str, timeout: Optional[float] = None) -> Tuple[str, str, int]:
        return self._exec(cmd, timeout=timeout)

    def _exec(self, cmd: str, stdin: Optional[IO] = None, timeout: Optional[float] = None) -> Tuple[str, str, int]:
        transport = self._get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("SSH session not active")
        started = time.monotonic()
        chan = transport.open_session(timeout=self.timeout or None)
        try:
            chan.exec_command(cmd)
            if stdin is not None:
                self._send_stdin(chan, stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                while chan.recv_ready():
                    out += chan.recv(self.CHUNK_SIZE)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(self.CHUNK_SIZE)
                drained = not (chan.recv_ready() or chan.recv_stderr_ready())
                if drained and (chan.closed or (chan.eof_received and chan.exit_status_ready())):
                    break
                if timeout and time.monotonic() - started > timeout:
                    raise SSHCommandTimeoutError(
                        cmd=cmd, timeout=timeout, stdout=_text(out), stderr=_text(err)
                    )
                # Not select() on the channel: that gives it an os.pipe which paramiko's
                # transport thread may still write to while the channel closes it, and the
                # write then lands on whatever socket has reused the descriptor. Output is
                # polled instead; the exit status ends the wait at once.
                chan.status_event.wait(0.5 if chan.eof_received else 0.02)
            return _text(out), _text(err), chan.recv_exit_status()
        finally:
            chan.close()

    @staticmethod
    def _send_stdin(chan: paramiko.Channel, stdin: IO) -> None:
        chan.settimeout(STALL_TIMEOUT)
        try:
            while True:
                chunk = stdin.read(32768)
                if not chunk:
                    break
                chan.sendall(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
        except (OSError, EOFError):
            pass  # the command ended early; its status and stderr tell why
        finally:
            chan.settimeout(None)


def _shell_path(path: str) -> str:
    # A relative path starting with "-" would be read as an option by mkdir/cat/rm.
    if path.startswith("-"):
        path = "./" + path
    return shlex.quote(path)


def _text(data: Union[bytes, bytearray]) -> str:
    return bytes(data).decode("utf-8", "replace")


def tail(text: Optional[str]) -> str:
    """The last lines of a command's output, for messages."""
    if not text:
        return ""
    lines = text.rstrip("\n").splitlines()[-TAIL_LINES:]
    tail = "\n".join(lines)
    return tail[-TAIL_CHARS:]

