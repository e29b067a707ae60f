"""DeploymentMixin: ``deploy_node`` for StratusLab, and ``ex_deploy_node`` for a node that exists.

Why not Libcloud's own ``NodeDriver.deploy_node``: on paramiko >= 4 it fails for every key
given as text (it names the removed ``paramiko.DSSKey``) and for PKCS#8 key files; it needs
SFTP, which some StratusLab images (ttylinux) lack; it ignores the SSH port a VM publishes;
it retries a wrong key until the whole timeout is spent; it reports a failed script as
success; and its errors say little more than "Giving up". This mixin keeps the public
signature and behaviour of Libcloud's ``deploy_node`` (identical in apache-libcloud 3.4 to
3.9) and fixes those points without patching Libcloud: the node is created and waited for
here, then :func:`~stratuslab_lc_plugin.ssh.deploy.deploy_over_ssh` runs the steps
(``ScriptDeployment``, ``FileDeployment``, ``SSHKeyDeployment``, ``MultiStepDeployment``)
unchanged over SSH. Every failure after the node exists raises
:class:`~stratuslab_lc_plugin.errors.NodeDeploymentError`.
"""

from __future__ import annotations

import atexit
import os
import time
from typing import Any, Callable, List, Optional, Tuple, Union

from libcloud.compute.base import Node, NodeAuthPassword, NodeAuthSSHKey
from libcloud.compute.deployment import Deployment

from stratuslab_lc_plugin.driver import waiting
from stratuslab_lc_plugin.driver.core import DriverCore, LocationArg
from stratuslab_lc_plugin.errors import NodeDeploymentError, StratusLabError
from stratuslab_lc_plugin.ssh.deploy import DEFAULT_TIMEOUT, deploy_over_ssh
from stratuslab_lc_plugin.ssh.keys import LoadedKey, load_private_key, load_private_keys, private_key_path

__all__ = ["DeploymentMixin"]


class DeploymentMixin(DriverCore):
    """``deploy_node`` and ``ex_deploy_node``."""

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
        timeout: float = DEFAULT_TIMEOUT,
        max_tries: int = 3,
        ssh_interface: str = "public_ips",
        at_exit_func: Optional[Callable[..., Any]] = None,
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
          an unsupported key raises :class:`~stratuslab_lc_plugin.errors.SSHKeyError` and
          no node is created. StratusLab VMs take SSH keys only: ``auth`` is a
          ``NodeAuthSSHKey`` (a ``NodeAuthPassword`` is refused before anything is made).
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
        or a step failed, ``error.value`` is the exception behind it, and ``error.node`` is
        the node. **The node is left running** so it can be inspected; destroy it with
        ``error.node.destroy()`` (or ``driver.destroy_node(error.node)``) when it is not
        wanted.
        """
        _check_interface(ssh_interface)
        if auth is not None and not isinstance(auth, (NodeAuthSSHKey, NodeAuthPassword)):
            raise NotImplementedError("If providing auth, only NodeAuthSSHKey or NodeAuthPassword is supported")
        if isinstance(auth, NodeAuthPassword):
            raise ValueError("StratusLab VMs accept SSH keys only: pass auth=NodeAuthSSHKey(public_key) or ssh_key")
        timeout = timeout or DEFAULT_TIMEOUT
        keys, key_note = self._deployment_keys(ssh_key, ssh_key_password, create_node_kwargs.get("location"))
        if auth is None and ssh_key:
            auth = NodeAuthSSHKey("\n".join(key.public_line for key in keys))
        node = self.create_node(auth=auth, **create_node_kwargs) if auth else self.create_node(**create_node_kwargs)

        if at_exit_func:
            atexit.register(at_exit_func, driver=self, node=node)
        try:
            return self._deploy_to(
                node, deploy, keys, key_note,
                usernames=[ssh_username] + list(ssh_alternate_usernames or []),
                ssh_port=ssh_port, ssh_timeout=ssh_timeout, timeout=timeout, max_tries=max_tries,
                ssh_interface=ssh_interface, wait_period=wait_period,
            )
        finally:
            # Libcloud's contract: the handler only runs if the process is interrupted
            # (e.g. Ctrl-C) during the deployment, not after it ends either way.
            if at_exit_func:
                atexit.unregister(at_exit_func)

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
        timeout: float = DEFAULT_TIMEOUT,
        max_tries: int = 3,
        ssh_interface: str = "public_ips",
        wait_period: float = 5,
        ex_location: LocationArg = None,
    ) -> Node:
        """Run ``deploy`` on a node that already exists, as ``deploy_node`` does after creating it.

        Waits until the node runs with an address, then connects over SSH. The arguments
        and errors are those of :meth:`deploy_node`; ``ssh_key`` must match the key the node
        was created with. ``node`` is updated with what the wait read.
        """
        _check_interface(ssh_interface)
        location, _ = self._locate_node(node, ex_location)
        keys, key_note = self._deployment_keys(ssh_key, ssh_key_password, location.id)
        return self._deploy_to(
            node, deploy, keys, key_note,
            usernames=[ssh_username] + list(ssh_alternate_usernames or []),
            ssh_port=ssh_port, ssh_timeout=ssh_timeout, timeout=timeout or DEFAULT_TIMEOUT,
            max_tries=max_tries, ssh_interface=ssh_interface, wait_period=wait_period, ex_location=ex_location,
        )

    def _deploy_to(self, node: Node, deploy: Deployment, keys: List[LoadedKey], key_note: Optional[str], *,
                   usernames: List[str], ssh_port: int, ssh_timeout: float, timeout: float, max_tries: int,
                   ssh_interface: str, wait_period: float, ex_location: LocationArg = None) -> Node:
        deadline = time.monotonic() + timeout
        location, vm = self._locate_node(node, ex_location)
        try:
            ((node, found),) = self._wait_running([((location.id, vm), node)], ssh_interface, True,
                                                  timeout, wait_period, until=deadline)
        except waiting.NotRunning as exc:
            cause = exc.cause or (TimeoutError(exc.why) if exc.timed_out else StratusLabError(
                "node %s %s" % (exc.node.id, exc.why), location=location.id, operation="deploy_node"))
            raise NodeDeploymentError(
                exc.node, "deployment on node %s failed while waiting for it to run: %s" % (exc.node.id, exc.why),
                phase="wait", original_exception=cause, driver=self,
            ) from None
        if ssh_port == 22:
            ssh_port = int(node.extra.get("ssh_port") or 22)
        return deploy_over_ssh(
            deploy, node, found[0], ssh_port,
            usernames=usernames, keys=keys, password=None,
            ssh_timeout=ssh_timeout, timeout=timeout, deadline=deadline, max_tries=max_tries,
            wait_period=wait_period, driver=self, key_note=key_note,
        )

    def _deployment_keys(self, ssh_key: Union[str, List[str], None], password: Optional[str],
                         location: LocationArg) -> Tuple[List[LoadedKey], Optional[str]]:
        """The keys to log in with, and a note for the error message when there are none."""
        if ssh_key:
            return load_private_keys(ssh_key, password), None
        path = private_key_path(self.location_config(location).private_key_path())
        if not os.path.exists(path):
            # Libcloud's behaviour without a key: let paramiko try the agent and ~/.ssh.
            return [], "the SSH agent and ~/.ssh keys (the default key %s does not exist)" % path
        return [load_private_key(path, password)], None


def _check_interface(ssh_interface: str) -> None:
    if ssh_interface not in ("public_ips", "private_ips"):
        raise ValueError("ssh_interface must be 'public_ips' or 'private_ips', not %r" % (ssh_interface,))
