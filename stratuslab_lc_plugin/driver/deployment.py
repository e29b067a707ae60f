"""DeploymentMixin: SSH access to nodes: key pairs, ``deploy_node``, ``ex_deploy_node``.

Key pairs: StratusLab keeps no keys on the server, so Libcloud's key-pair API works on the
driver's local key store (:mod:`~stratuslab_lc_plugin.ssh.keystore`); ``create_node(
ex_keyname=...)`` puts that pair's public key in the VM's context, and ``deploy_node`` with
``ex_keyname`` logs in with its private key when the store holds it.

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
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from libcloud.compute.base import KeyPair, Node, NodeAuthPassword, NodeAuthSSHKey
from libcloud.compute.deployment import Deployment

from stratuslab_lc_plugin.driver import waiting
from stratuslab_lc_plugin.driver.core import DriverCore, LocationArg
from stratuslab_lc_plugin.errors import KeyPairExistsError, NodeDeploymentError, StratusLabError
from stratuslab_lc_plugin.ssh.deploy import DEFAULT_TIMEOUT, deploy_over_ssh
from stratuslab_lc_plugin.ssh.keys import LoadedKey, load_private_key, load_private_keys, private_key_path
from stratuslab_lc_plugin.ssh.keystore import StoredKey

__all__ = ["DeploymentMixin"]


class DeploymentMixin(DriverCore):
    """Key pairs, ``deploy_node`` and ``ex_deploy_node``."""

    # -- key pairs (Libcloud's API, on the local key store) --------------------------------

    def list_key_pairs(self) -> List[KeyPair]:
        """The key pairs of the store, and those of the locations' ``user_public_key_file``."""
        return [self._to_key_pair(key) for key in self._key_store.list()]

    def get_key_pair(self, name: str) -> KeyPair:
        return self._to_key_pair(self._stored_key(name))

    def create_key_pair(self, name: str, ex_key_type: str = "ed25519") -> KeyPair:
        """A new key pair (Ed25519, or ``ex_key_type`` ``rsa`` / ``ecdsa``), kept in the store.

        ``private_key`` holds the private key (OpenSSH format); it is also kept, mode 0600,
        so that ``deploy_node(ex_keyname=name)`` can log in with it.
        """
        try:
            key, private_text = self._key_store.create(name, ex_key_type)
        except FileExistsError as exc:
            raise KeyPairExistsError(str(exc), name=name) from None
        return self._to_key_pair(key, private_text)

    def import_key_pair_from_string(self, name: str, key_material: str) -> KeyPair:
        """Keep the OpenSSH public key line ``key_material`` as the key pair ``name``."""
        try:
            return self._to_key_pair(self._key_store.import_public(name, key_material))
        except FileExistsError as exc:
            raise KeyPairExistsError(str(exc), name=name) from None

    def delete_key_pair(self, key_pair: KeyPair) -> bool:
        """Remove the key pair's files from the store (configured key files are left alone)."""
        name = key_pair.name if isinstance(key_pair, KeyPair) else key_pair
        key = self._stored_key(name)
        if key.read_only:
            raise ValueError("key pair %r is the user_public_key_file %s of the configuration; "
                             "it is not deleted (change the configuration instead)" % (name, key.public_path))
        return self._key_store.delete(name)

    def _to_key_pair(self, key: StoredKey, private_text: Optional[str] = None) -> KeyPair:
        return KeyPair(
            name=key.name, public_key=key.public_key, fingerprint=key.fingerprint, driver=self,
            private_key=private_text,
            extra={"public_key_path": key.public_path, "private_key_path": key.private_path,
                   "source": "configuration" if key.read_only else "store"},
        )

    # -- deployment -------------------------------------------------------------------------

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
        at_exit_func: Optional[Callable[..., object]] = None,
        wait_period: float = 5,
        **create_node_kwargs: object,
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
          no node is created. With ``ex_keyname`` (passed on to ``create_node``) and no
          ``ssh_key``, the key pair's private key from the key store is used. StratusLab VMs take SSH keys only: ``auth`` is a
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
        create: Dict[str, Any] = dict(create_node_kwargs)  # checked by create_node itself
        keyname = create.get("ex_keyname")
        if not ssh_key and keyname:
            ssh_key = self._stored_key(keyname).private_path  # None: only the public half is kept
        keys, key_note = self._deployment_keys(ssh_key, ssh_key_password, create.get("location"))
        if auth is None and ssh_key and not keyname:
            auth = NodeAuthSSHKey("\n".join(key.public_line for key in keys))
        node = self.create_node(auth=auth, **create) if auth else self.create_node(**create)

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
                "%s: node %s: %s" % (location.id, exc.node.id, exc.why), location=location.id, operation="deploy_node"))
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
