"""The SSH half of ``deploy_node``: connect to a running VM and run the deployment steps.

:func:`deploy_over_ssh` is given an address, a port and keys, and returns or raises
:class:`~stratuslab_lc_plugin.errors.NodeDeploymentError` naming what failed: connecting,
authenticating or a step. It knows nothing of the driver (the tests also run it against a
real sshd); waiting for the VM to run is the deployment mixin's part.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Iterator, Optional, Sequence

import paramiko
from libcloud.compute.base import Node
from libcloud.compute.deployment import (
    Deployment,
    FileDeployment,
    MultiStepDeployment,
    ScriptDeployment,
    SSHKeyDeployment,
)
from libcloud.compute.ssh import SSHCommandTimeoutError

from stratuslab_lc_plugin.errors import NodeDeploymentError, ScriptFailedError
from stratuslab_lc_plugin.ssh.client import DeploymentSSHClient, tail
from stratuslab_lc_plugin.ssh.keys import LoadedKey

__all__ = ["deploy_over_ssh", "DEFAULT_TIMEOUT", "describe_reason", "seconds"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300  # Libcloud's SSH_CONNECT_TIMEOUT


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

    client: DeploymentSSHClient  # set by deploy(), before any step runs

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

    def deploy(self, task: Deployment) -> Node:
        self.client = self.connect()
        try:
            for step in _steps(task):
                self.node = self.run_step(step) or self.node
            return self.node
        finally:
            self.client.close()

    def error(self, message: str, phase: str, exc: BaseException, **extra: Any) -> NodeDeploymentError:
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
                            % (self.hostname, self.port, seconds(self.timeout), describe_reason(exc)),
                            "connect", exc,
                        ) from exc
                time.sleep(max(0.0, min(self.wait_period, self._remaining())))
        what = "SSH authentication failed at %s:%s for user %s with %s" % (
            self.hostname, self.port, " / ".join(self.usernames), self.describe_keys())
        refused = auth_error or paramiko.AuthenticationException(what)
        raise self.error(what, "auth", refused) from auth_error

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
                    "%s did not finish within %s s%s" % (_describe_step(step), seconds(exc.timeout),
                                                         _outputs(exc.stdout, exc.stderr)),
                    "step", exc, stdout=exc.stdout, stderr=exc.stderr,
                ) from exc
            except Exception as exc:
                if self.client.is_active():
                    raise self.error("%s failed: %s" % (_describe_step(step), describe_reason(exc)), "step", exc) from exc
                tries += 1
                if tries >= self.max_tries:
                    raise self.error(
                        "%s failed: the SSH connection to %s:%s was lost %d times (%s)"
                        % (_describe_step(step), self.hostname, self.port, tries, describe_reason(exc)),
                        "step", exc,
                    ) from exc
                log.info("SSH connection lost during %s; reconnecting", _describe_step(step))
                self.client.close()
                self.deadline = time.monotonic() + self.timeout  # the first budget may be spent
                self.client = self.connect()
        if isinstance(step, ScriptDeployment) and step.exit_status not in (0, None):
            what = "%s exited with status %s%s" % (_describe_step(step), step.exit_status,
                                                   _outputs(step.stdout, step.stderr))
            failure = ScriptFailedError(what, exit_status=step.exit_status, stdout=step.stdout, stderr=step.stderr)
            raise self.error(what, "step", failure, exit_status=step.exit_status,
                             stdout=step.stdout, stderr=step.stderr)
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
        end = tail(text)
        if end:
            parts.append("\n%s (end):\n%s" % (name, "\n".join("  " + line for line in end.splitlines())))
    return "".join(parts) if parts else " (no output)"


def describe_reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError) and exc.errors:
        # Its own message drops the cause ("[Errno None] Unable to connect to port 22").
        return "; ".join(sorted({describe_reason(error) for error in exc.errors.values()}))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    if isinstance(exc, socket.timeout) and text == "timed out":
        return "connection timed out"
    return text


def seconds(value: Any) -> str:
    return ("%g" % value) if isinstance(value, (int, float)) else str(value)

