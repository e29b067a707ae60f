"""``deploy_node`` for StratusLab: create a VM, wait for it, run Libcloud deployments over SSH.

Why not Libcloud's own ``NodeDriver.deploy_node``: on paramiko >= 4 it fails for every key
given as text (it names the removed ``paramiko.DSSKey``) and for PKCS#8 key files; it needs
SFTP, which some StratusLab images (ttylinux) lack; it ignores the SSH port a VM publishes; it
retries a wrong key until the whole timeout is spent; it reports a failed script as success;
and its errors say little more than "Giving up". This module keeps the public signature and
behaviour of Libcloud's ``deploy_node`` (identical in apache-libcloud 3.4 to 3.9) and fixes
those points without patching Libcloud:

- keys are loaded by :mod:`stratuslab_lc_plugin.sshkeys` and used by
  :class:`DeploymentSSHClient`, a ``ParamikoSSHClient`` subclass, so deployment steps
  (``ScriptDeployment``, ``FileDeployment``, ``SSHKeyDeployment``, ``MultiStepDeployment``)
  run unchanged;
- when the guest has no SFTP, uploads go through the exec channel (``cat > path``);
- each failure raises :class:`NodeDeploymentError` (a Libcloud ``DeploymentError``) whose
  message names the phase: waiting for the node, connecting, authenticating, or a step.
"""

from __future__ import annotations

import atexit
import io
import ipaddress
import logging
import os
import posixpath
import shlex
import socket
import time
from typing import IO, Any, Iterator, List, Optional, Sequence, Tuple, Union

import paramiko
from libcloud.compute.base import Node, NodeAuthPassword, NodeAuthSSHKey
from libcloud.compute.deployment import (
    Deployment,
    FileDeployment,
    MultiStepDeployment,
    ScriptDeployment,
    SSHKeyDeployment,
)
from libcloud.compute.ssh import ParamikoSSHClient, SSHCommandTimeoutError
from libcloud.compute.types import DeploymentError, NodeState

from stratuslab_lc_plugin.errors import NotFoundError, ServiceUnavailableError, StratusLabError
from stratuslab_lc_plugin.sshkeys import LoadedKey, load_private_key, load_private_keys, private_key_path

__all__ = [
    "DeploymentMixin",
    "DeploymentSSHClient",
    "NodeDeploymentError",
    "deploy_over_ssh",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300  # Libcloud's SSH_CONNECT_TIMEOUT
TAIL_LINES = 20
TAIL_CHARS = 2000
STALL_TIMEOUT = 60.0  # seconds without progress before a file transfer gives up
KEEPALIVE = 30  # seconds; lets a dead connection be noticed while a long script runs
_FAILED_STATES = (NodeState.TERMINATED, NodeState.ERROR)


class NodeDeploymentError(DeploymentError):
    """A Libcloud :class:`~libcloud.compute.types.DeploymentError` that says what failed.

    ``value`` (and ``str()``) is a readable message. ``phase`` is ``"wait"``, ``"connect"``,
    ``"auth"`` or ``"step"``; ``original_error`` is the underlying exception, if any;
    ``node`` is the node, left running. For a failed script, ``exit_status``, ``stdout`` and
    ``stderr`` hold its full result.
    """

    def __init__(
        self,
        node: Node,
        message: str,
        *,
        phase: str,
        original_exception: Optional[BaseException] = None,
        driver: Any = None,
        host: Optional[str] = None,
        port: Optional[int] = None,
        exit_status: Optional[int] = None,
        stdout: Optional[str] = None,
        stderr: Optional[str] = None,
    ) -> None:
        super().__init__(node=node, original_exception=original_exception, driver=driver)
        self.value = message
        self.message = message
        self.phase = phase
        self.host = host
        self.port = port
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return "<NodeDeploymentError: node=%s, phase=%s, error=%s>" % (
            getattr(self.node, "id", None),
            self.phase,
            self.message,
        )


class DeploymentSSHClient(ParamikoSSHClient):
    """Libcloud's paramiko client, with pre-loaded keys and uploads that work without SFTP.

    ``keys`` are :class:`~stratuslab_lc_plugin.sshkeys.LoadedKey` objects, tried in order.
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
        options = {
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
        for key in self.keys or [None]:
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
        head, tail = posixpath.split(path)
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
                % (path, status, _tail(stderr) or "(no error output)")
            )
        lines = stdout.strip().splitlines()
        if not lines:
            raise OSError("uploading %s over the exec channel: the remote shell did not print its directory" % path)
        return posixpath.join(lines[-1], tail)

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


def _text(data: bytes) -> str:
    return bytes(data).decode("utf-8", "replace")


def _tail(text: Optional[str]) -> str:
    if not text:
        return ""
    lines = text.rstrip("\n").splitlines()[-TAIL_LINES:]
    tail = "\n".join(lines)
    return tail[-TAIL_CHARS:]


# ---------------------------------------------------------------------------------------
# The SSH half of deploy_node (also used directly by tests against a real sshd)
# ---------------------------------------------------------------------------------------


def deploy_over_ssh(
    task: Deployment,
    node: Node,
    hostname: str,
    port: int = 22,
    usernames: Sequence[str] = ("root",),
    keys: Sequence[LoadedKey] = (),
    password: Optional[str] = None,
    ssh_timeout: float = 10,
    timeout: float = DEFAULT_TIMEOUT,
    max_tries: int = 3,
    wait_period: float = 5,
    driver: Any = None,
    key_note: Optional[str] = None,
    deadline: Optional[float] = None,
) -> Node:
    """Connect to ``hostname:port`` and run ``task``; return the node.

    Connection failures (refused, timeout, no banner yet) are retried until ``timeout``
    seconds have passed; an authentication failure is retried ``max_tries`` times per user
    (a booting guest may start sshd a moment before its key is installed), then the next
    user in ``usernames`` is tried. Each step of a ``MultiStepDeployment`` runs in order; a
    step interrupted by a lost connection is retried after reconnecting, up to ``max_tries``
    times; a ``ScriptDeployment`` that exits with a non-zero status stops the deployment.
    ``deadline`` (a ``time.monotonic()`` value) replaces ``now + timeout`` when part of the
    budget was already spent, as ``deploy_node`` does after waiting for the node.
    Raises :class:`NodeDeploymentError`.
    """
    if deadline is None:
        deadline = time.monotonic() + timeout
    session = _Session(node, hostname, port, list(usernames), list(keys), password,
                       ssh_timeout, deadline, timeout, max(1, max_tries),
                       wait_period, driver, key_note)
    return session.deploy(task)


class _Session:
    """State of one deployment: where to connect, with what, and the current client."""

    def __init__(self, node, hostname, port, usernames, keys, password, ssh_timeout, deadline,
                 timeout, max_tries, wait_period, driver, key_note) -> None:
        self.node = node
        self.hostname = hostname
        self.port = int(port)
        self.usernames = usernames
        self.keys = keys
        self.password = password
        self.ssh_timeout = ssh_timeout
        self.deadline = deadline
        self.timeout = timeout
        self.max_tries = max_tries
        self.wait_period = wait_period
        self.driver = driver
        self.key_note = key_note
        self.client: Optional[DeploymentSSHClient] = None

    def deploy(self, task: Deployment) -> Node:
        self.client = self.connect()
        try:
            for step in _steps(task):
                self.node = self.run_step(step) or self.node
            return self.node
        finally:
            self.client.close()

    def error(self, message: str, phase: str, exc: Optional[BaseException] = None, **extra) -> NodeDeploymentError:
        return NodeDeploymentError(
            self.node, "deployment on node %s failed: %s" % (getattr(self.node, "id", "?"), message),
            phase=phase, original_exception=exc, driver=self.driver,
            host=self.hostname, port=self.port, **extra
        )

    def describe_keys(self) -> str:
        if self.keys:
            return ", ".join(key.describe() for key in self.keys)
        if self.password:
            return "a password"
        return self.key_note or "the SSH agent and ~/.ssh keys"

    # -- connecting -------------------------------------------------------------------

    def connect(self) -> DeploymentSSHClient:
        auth_error: Optional[BaseException] = None
        for username in self.usernames:
            tries = 0
            while True:
                client = DeploymentSSHClient(
                    self.hostname, self.port, username, password=self.password, keys=self.keys,
                    timeout=self._attempt_timeout(),
                )
                try:
                    client.connect()
                    return client
                except paramiko.AuthenticationException as exc:
                    client.close()
                    auth_error = exc
                    tries += 1
                    if tries >= self.max_tries or self._remaining() <= 0:
                        break
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    client.close()
                    if self._remaining() <= 0:
                        raise self.error(
                            "could not connect to SSH at %s:%s within %s s: %s"
                            % (self.hostname, self.port, _seconds(self.timeout), _reason(exc)),
                            "connect", exc,
                        ) from exc
                time.sleep(max(0.0, min(self.wait_period, self._remaining())))
        raise self.error(
            "SSH authentication failed at %s:%s for user %s with %s"
            % (self.hostname, self.port, " / ".join(self.usernames), self.describe_keys()),
            "auth", auth_error,
        ) from auth_error

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _attempt_timeout(self) -> float:
        return max(1.0, min(float(self.ssh_timeout or 10), self._remaining()))

    # -- running steps ----------------------------------------------------------------

    def run_step(self, step: Deployment) -> Optional[Node]:
        tries = 0
        while True:
            try:
                node = step.run(self.node, self.client)
                break
            except SSHCommandTimeoutError as exc:
                raise self.error(
                    "%s did not finish within %s s%s" % (_describe_step(step), _seconds(exc.timeout),
                                                         _outputs(exc.stdout, exc.stderr)),
                    "step", exc, stdout=exc.stdout, stderr=exc.stderr,
                ) from exc
            except Exception as exc:
                if self.client.is_active():
                    raise self.error("%s failed: %s" % (_describe_step(step), _reason(exc)), "step", exc) from exc
                tries += 1
                if tries >= self.max_tries:
                    raise self.error(
                        "%s failed: the SSH connection to %s:%s was lost %d times (%s)"
                        % (_describe_step(step), self.hostname, self.port, tries, _reason(exc)),
                        "step", exc,
                    ) from exc
                log.info("SSH connection lost during %s; reconnecting", _describe_step(step))
                self.client.close()
                self.deadline = time.monotonic() + self.timeout  # the first budget may be spent
                self.client = self.connect()
        if isinstance(step, ScriptDeployment) and step.exit_status not in (0, None):
            raise self.error(
                "%s exited with status %s%s" % (_describe_step(step), step.exit_status,
                                                _outputs(step.stdout, step.stderr)),
                "step", None, exit_status=step.exit_status, stdout=step.stdout, stderr=step.stderr,
            )
        return node


def _steps(task: Deployment) -> Iterator[Deployment]:
    # Flatten plain MultiStepDeployments so that a failing script stops the chain (the
    # stock run() would go on with the next steps). A subclass that overrides run() is
    # treated as a single step.
    if isinstance(task, MultiStepDeployment) and type(task).run is MultiStepDeployment.run:
        for step in task.steps:
            yield from _steps(step)
    else:
        yield task


def _describe_step(step: Deployment) -> str:
    if isinstance(step, ScriptDeployment):
        return "script %s" % step.name
    if isinstance(step, FileDeployment):
        return "file upload %s -> %s" % (step.source, step.target)
    if isinstance(step, SSHKeyDeployment):
        return "SSH key installation"
    return "deployment step %s" % type(step).__name__


def _outputs(stdout: Optional[str], stderr: Optional[str]) -> str:
    parts = []
    for name, text in (("stdout", stdout), ("stderr", stderr)):
        tail = _tail(text)
        if tail:
            parts.append("\n%s (end):\n%s" % (name, "\n".join("  " + line for line in tail.splitlines())))
    return "".join(parts) if parts else " (no output)"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError) and exc.errors:
        # Its own message drops the cause ("[Errno None] Unable to connect to port 22").
        return "; ".join(sorted({_reason(error) for error in exc.errors.values()}))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    if isinstance(exc, socket.timeout) and text == "timed out":
        return "connection timed out"
    return text


def _seconds(value: Any) -> str:
    return ("%g" % value) if isinstance(value, (int, float)) else str(value)


# ---------------------------------------------------------------------------------------
# The mixin
# ---------------------------------------------------------------------------------------


class DeploymentMixin:
    """``deploy_node`` for the StratusLab driver (mixed into ``StratusLabNodeDriver``).

    Expects from the driver: ``create_node``, ``list_nodes`` and ``_config`` (a
    :class:`~stratuslab_lc_plugin.config.UserConfig`).
    """

    def deploy_node(
        self,
        deploy: Deployment,
        ssh_username: str = "root",
        ssh_alternate_usernames: Optional[List[str]] = None,
        ssh_port: int = 22,
        ssh_timeout: float = 10,
        ssh_key: Union[str, List[str], None] = None,
        ssh_key_password: Optional[str] = None,
        auth: Union[NodeAuthSSHKey, NodeAuthPassword, None] = None,
        timeout: int = DEFAULT_TIMEOUT,
        max_tries: int = 3,
        ssh_interface: str = "public_ips",
        at_exit_func: Any = None,
        wait_period: float = 5,
        **create_node_kwargs: Any,
    ) -> Node:
        """Create a node, wait until it runs, then run ``deploy`` on it over SSH.

        Same arguments as Libcloud's ``NodeDriver.deploy_node``. StratusLab specifics:

        - ``ssh_key``: private key file path(s) or key text; RSA, ECDSA and Ed25519 keys in
          OpenSSH, PEM or PKCS#8 format, encrypted ones with ``ssh_key_password``. Without
          it, the location's ``user_private_key_file`` is used (else ``$STRATUSLAB_KEY`` or
          ``~/.ssh/id_rsa``, without ``.pub``); if that file does not exist, the SSH agent
          and ``~/.ssh`` keys are tried. When ``ssh_key`` is given and ``auth`` is not, the
          node is created with the public half of ``ssh_key``, so the two always match.
          Keys are read before the node is created: a missing file, a wrong passphrase or
          an unsupported key raises :class:`~stratuslab_lc_plugin.sshkeys.SSHKeyError` and
          no node is created.
        - ``ssh_port``: when left at 22, the port the VM publishes (``node.extra['ssh_port']``)
          is used.
        - ``timeout``: one budget, in seconds, for the node to run with an address and for
          its SSH server to accept a connection. A node that enters an error or terminated
          state fails at once. Scripts may take longer; bound them with
          ``ScriptDeployment(timeout=...)``.
        - Guests without SFTP get scripts and files through the exec channel.
        - A ``ScriptDeployment`` that exits with a non-zero status stops the deployment and
          raises (Libcloud itself would report success); later steps do not run.

        Errors after the node was created raise :class:`NodeDeploymentError`, a Libcloud
        ``DeploymentError``: its message says whether waiting, connecting, authenticating
        or a step failed, and ``error.node`` is the node. **The node is left running** so it
        can be inspected; destroy it with ``error.node.destroy()`` (or
        ``driver.destroy_node(error.node)``) when it is not wanted.
        """
        if ssh_interface not in ("public_ips", "private_ips"):
            raise ValueError("ssh_interface must be 'public_ips' or 'private_ips', not %r" % (ssh_interface,))
        if auth is not None and not isinstance(auth, (NodeAuthSSHKey, NodeAuthPassword)):
            raise NotImplementedError("If providing auth, only NodeAuthSSHKey or NodeAuthPassword is supported")
        timeout = timeout or DEFAULT_TIMEOUT

        keys, key_note = self._deployment_keys(ssh_key, ssh_key_password, create_node_kwargs.get("location"))
        if auth is None and ssh_key:
            auth = NodeAuthSSHKey("\n".join(key.public_line for key in keys))
        node = self.create_node(auth=auth, **create_node_kwargs) if auth else self.create_node(**create_node_kwargs)

        if at_exit_func:
            atexit.register(at_exit_func, driver=self, node=node)
        try:
            node = self._deploy_to(
                node, deploy, keys, key_note,
                password=auth.password if isinstance(auth, NodeAuthPassword) else None,
                usernames=[ssh_username] + list(ssh_alternate_usernames or []),
                ssh_port=ssh_port, ssh_timeout=ssh_timeout, timeout=timeout, max_tries=max_tries,
                ssh_interface=ssh_interface, wait_period=wait_period,
            )
        finally:
            # Libcloud's contract: the handler only runs if the process is interrupted
            # (e.g. Ctrl-C) during the deployment, not after it ends either way.
            if at_exit_func:
                atexit.unregister(at_exit_func)
        return node

    def ex_deploy_node(
        self,
        node: Node,
        deploy: Deployment,
        ssh_username: str = "root",
        ssh_alternate_usernames: Optional[List[str]] = None,
        ssh_port: int = 22,
        ssh_timeout: float = 10,
        ssh_key: Union[str, List[str], None] = None,
        ssh_key_password: Optional[str] = None,
        timeout: int = DEFAULT_TIMEOUT,
        max_tries: int = 3,
        ssh_interface: str = "public_ips",
        wait_period: float = 5,
    ) -> Node:
        """Run ``deploy`` on a node that already exists, as ``deploy_node`` does after creating it.

        Waits until the node runs with an address, then connects over SSH. The arguments
        and errors are those of :meth:`deploy_node`; ``ssh_key`` must match the key the node
        was created with.
        """
        if ssh_interface not in ("public_ips", "private_ips"):
            raise ValueError("ssh_interface must be 'public_ips' or 'private_ips', not %r" % (ssh_interface,))
        keys, key_note = self._deployment_keys(ssh_key, ssh_key_password, node.extra.get("location"))
        return self._deploy_to(
            node, deploy, keys, key_note, password=None,
            usernames=[ssh_username] + list(ssh_alternate_usernames or []),
            ssh_port=ssh_port, ssh_timeout=ssh_timeout, timeout=timeout or DEFAULT_TIMEOUT,
            max_tries=max_tries, ssh_interface=ssh_interface, wait_period=wait_period,
        )

    def _deploy_to(self, node: Node, deploy: Deployment, keys, key_note, *, password, usernames,
                   ssh_port, ssh_timeout, timeout, max_tries, ssh_interface, wait_period) -> Node:
        deadline = time.monotonic() + timeout
        node, address = self._wait_for_address(node, ssh_interface, deadline, timeout, wait_period)
        if ssh_port == 22:
            ssh_port = int(node.extra.get("ssh_port") or 22)
        return deploy_over_ssh(
            deploy, node, address, ssh_port,
            usernames=usernames, keys=keys, password=password or node.extra.get("password"),
            ssh_timeout=ssh_timeout, timeout=timeout, deadline=deadline, max_tries=max_tries,
            wait_period=wait_period, driver=self, key_note=key_note,
        )

    def _deployment_keys(self, ssh_key, password: Optional[str], location) -> Tuple[List[LoadedKey], Optional[str]]:
        """The keys to log in with, and a note for the error message when there are none."""
        if ssh_key:
            return load_private_keys(ssh_key, password), None
        config = getattr(self, "_config", None)
        if config is None:
            return [], None
        location_id = getattr(location, "id", location)
        path = private_key_path(config.location(location_id).private_key_path())
        if not os.path.exists(path):
            # Libcloud's behaviour without a key: let paramiko try the agent and ~/.ssh.
            return [], "the SSH agent and ~/.ssh keys (the default key %s does not exist)" % path
        return [load_private_key(path, password)], None

    def _wait_for_address(self, node: Node, ssh_interface: str, deadline: float, timeout: float,
                          wait_period: float) -> Tuple[Node, str]:
        """Poll the node until it runs with an IPv4 address on ``ssh_interface``.

        Unlike Libcloud's ``wait_until_running``, this stops at once when the node fails or
        disappears, its error names the node's last state, and it asks only the node's own
        location (``ex_get_node``), so another location being down does not matter.
        """
        seen = False
        last_error: Optional[BaseException] = None
        while True:
            try:
                current = self._poll_node(node)
            except ServiceUnavailableError as exc:  # transient: keep waiting
                last_error = exc
            except StratusLabError as exc:  # refused credentials, bad answers: waiting won't help
                raise self._wait_error(node, "reading its state failed: %s" % exc, exc) from None
            else:
                last_error = None
                if current is None and seen:
                    raise self._wait_error(node, "it disappeared (last state: %s)" % node.state)
                if current is not None:
                    seen, node = True, current
                    if node.state == NodeState.RUNNING:
                        addresses = [a for a in getattr(node, ssh_interface) or [] if _is_ipv4(a)]
                        if addresses:
                            return node, addresses[0]
                    elif node.state in _FAILED_STATES:
                        raise self._wait_error(node, "it entered state %s" % node.state)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                detail = "last state: %s" % node.state
                if node.state == NodeState.RUNNING:
                    detail += ", but no IPv4 address in %s" % ssh_interface
                if last_error is not None:
                    detail += "; reading its state failed: %s" % _reason(last_error)
                raise self._wait_error(
                    node, "it was not running with an address within %s s (%s)" % (_seconds(timeout), detail),
                    last_error,
                )
            time.sleep(min(wait_period, remaining))

    def _poll_node(self, node: Node) -> Optional[Node]:
        """The node as the cloud sees it now, or None when it no longer exists."""
        get_node = getattr(self, "ex_get_node", None)
        if get_node is None:
            return next((n for n in self.list_nodes() if n.id == node.id), None)
        try:
            return get_node(node.id, node.extra.get("location"))
        except NotFoundError:
            return None

    def _wait_error(self, node: Node, what: str, exc: Optional[BaseException] = None) -> NodeDeploymentError:
        return NodeDeploymentError(
            node, "deployment on node %s failed while waiting for it to run: %s" % (node.id, what),
            phase="wait", original_exception=exc, driver=self,
        )


def _is_ipv4(address: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address)
    except ValueError:
        return False

