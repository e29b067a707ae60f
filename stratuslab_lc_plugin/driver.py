"""The StratusLab compute driver: Libcloud's ``NodeDriver`` plus three mixins.

Each mixin holds one concern and lives in its own module:
:class:`~stratuslab_lc_plugin.compute.ComputeMixin` (locations, sizes, images, nodes),
:class:`~stratuslab_lc_plugin.volume.VolumeMixin` (persistent disks) and
:class:`~stratuslab_lc_plugin.deployment.DeploymentMixin` (``deploy_node`` over SSH).
This module holds what they share: the user configuration and the per-location services.
The ``libcloud.compute.drivers`` entry point names :class:`StratusLabNodeDriver`.
"""

from __future__ import annotations

import threading
from typing import IO, Optional, Union

from libcloud.compute.base import NodeDriver, NodeLocation

from stratuslab_lc_plugin.compute import ComputeMixin
from stratuslab_lc_plugin.config import LocationConfig, UserConfig, load_user_config
from stratuslab_lc_plugin.deployment import DeploymentMixin
from stratuslab_lc_plugin.services import LocationServices, ServicePool
from stratuslab_lc_plugin.services.common import RetryPolicy
from stratuslab_lc_plugin.volume import VolumeMixin

__all__ = ["StratusLabNodeDriver"]


class StratusLabNodeDriver(DeploymentMixin, VolumeMixin, ComputeMixin, NodeDriver):
    """Libcloud driver for StratusLab clouds (OpenNebula 3.2, Marketplace, pdisk).

    ``get_driver('stratuslab')(key)`` where ``key`` names the default location (a section
    of the user configuration file); ``'default'`` means the file's own choice
    (``selected_section``, else ``[default]``).

    :param stratuslab_user_config: path or file-like object of the user configuration
        (default ``$STRATUSLAB_USER_CONFIG``, else ``~/.stratuslab/stratuslab-user.cfg``).
    :param stratuslab_default_location: the default location, overriding ``key``.
    :param timeout: seconds a call may take, retries included (default 30).
    :param retries: extra attempts for idempotent calls after a transient failure (default 2).
    :param backoff: first pause between attempts, in seconds, doubled each time (default 0.2).

    The ``secret``, ``secure``, ``host`` and ``port`` arguments of Libcloud drivers are
    accepted and ignored: everything comes from the configuration file.
    """

    name = "StratusLab"
    website = "http://stratuslab.eu/"
    type = "stratuslab"
    # A class attribute: assigning in __init__ would mutate NodeDriver's shared dict.
    features = {"create_node": ["ssh_key"]}

    def __init__(
        self,
        key: Optional[str] = "default",
        secret: Optional[str] = None,
        secure: bool = True,
        host: Optional[str] = None,
        port: Optional[int] = None,
        stratuslab_user_config: Union[str, IO[str], None] = None,
        stratuslab_default_location: Optional[str] = None,
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.2,
        **kwargs,
    ) -> None:
        if timeout is None or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds, not %r" % (timeout,))
        self._config: UserConfig = load_user_config(
            stratuslab_user_config, stratuslab_default_location or key or "default"
        )
        self._pool = ServicePool(timeout=float(timeout), retry=RetryPolicy(retries, backoff))
        self._lock = threading.Lock()
        super().__init__(key=key or "default", secret=secret, secure=secure, host=host, port=port, **kwargs)

    @property
    def config(self) -> UserConfig:
        """The user configuration this driver was made from."""
        return self._config

    def _location_config(self, location: Union[NodeLocation, LocationConfig, str, None]) -> LocationConfig:
        if isinstance(location, LocationConfig):
            return location
        location_id = location.id if isinstance(location, NodeLocation) else location
        return self._config.location(location_id)

    def _services(self, location: Union[NodeLocation, LocationConfig, str, None] = None) -> LocationServices:
        return self._pool.get(self._location_config(location))
