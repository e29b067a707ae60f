"""The StratusLab compute driver: :class:`StratusLabNodeDriver`, the three mixins composed.

Where each part lives:

- :mod:`.core`: :class:`~.core.DriverCore`, the declared base of the mixins (configuration,
  locations, services, which VM or disk an object stands for, fan-out, ``close()``);
- :mod:`.compute`, :mod:`.volume`, :mod:`.deployment`: the mixins, public methods only;
- :mod:`.release1406`: the 14.06 driver's own names, for scripts written for it;
- :mod:`.convert`: service records into Libcloud's Node, NodeImage, NodeSize, StorageVolume;
- :mod:`.arguments`: checks of what callers pass, before anything is sent;
- :mod:`.waiting`: waiting for nodes to run, for ``wait_until_running`` and ``deploy_node``.

The ``libcloud.compute.drivers`` entry point names
``stratuslab_lc_plugin.driver:StratusLabNodeDriver``.
"""

from __future__ import annotations

from stratuslab_lc_plugin.driver.compute import ComputeMixin
from stratuslab_lc_plugin.driver.convert import StratusLabNode, StratusLabNodeSize
from stratuslab_lc_plugin.driver.core import NodeList
from stratuslab_lc_plugin.driver.deployment import DeploymentMixin
from stratuslab_lc_plugin.driver.release1406 import Release1406Mixin
from stratuslab_lc_plugin.driver.volume import VolumeMixin

__all__ = ["StratusLabNodeDriver", "StratusLabNode", "StratusLabNodeSize", "NodeList"]


class StratusLabNodeDriver(Release1406Mixin, DeploymentMixin, VolumeMixin, ComputeMixin):
    """Libcloud driver for StratusLab clouds (OpenNebula 3.2, Marketplace, pdisk).

    ``get_driver('stratuslab')(key)`` where ``key`` names the default location (a section
    of the user configuration file); ``'default'`` means the file's own choice
    (``selected_section``, else ``[default]``). See
    :class:`~stratuslab_lc_plugin.driver.core.DriverCore` for the other arguments.
    """
